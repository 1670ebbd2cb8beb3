"""The gpu-check's settings and its runner: the log, the time budget, commands and steps run
under a cap, each in a process group of its own so that a stopped step leaves nothing behind."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Config:
    """The settings read once from the environment, so that every part sees the same ones."""

    device: str
    out: Path
    budget: float
    work: Path
    keep_work: bool
    wheels: Path

    @property
    def cpu(self) -> bool:
        return self.device == "cpu"

    @classmethod
    def from_env(cls) -> Config:
        device = os.environ.get("GPU_CHECK_DEVICE") or "cuda"
        cpu = device == "cpu"
        if not (cpu or device.split(":")[0] == "cuda"):
            raise SystemExit(f"GPU_CHECK_DEVICE={device}: use cuda, cuda:N or cpu")
        out = Path(os.environ.get("GPU_CHECK_OUT") or os.environ.get("OUT") or "runs/gpu-check")
        work = os.environ.get("GPU_CHECK_WORK") or tempfile.mkdtemp(prefix="nmt-gpu-check-")
        return cls(
            device=device,
            out=out if out.is_absolute() else ROOT / out,
            budget=float(os.environ.get("GPU_CHECK_BUDGET_S") or (300 if cpu else 480)),
            work=Path(work).resolve(),
            keep_work=bool(os.environ.get("GPU_CHECK_WORK")),
            wheels=ROOT / os.environ.get("GPU_CHECK_WHEELS", ".whl"),
        )

    def at(self, name: str) -> str:
        """A path in the work folder, as a command's argument."""
        return str(self.work / name)


@dataclass
class Step:
    name: str
    title: str  # "what: the configuration"
    cap: float  # seconds
    commands: list[list[str]] = field(default_factory=list)
    capture: Path | None = None  # the last command's stdout goes here instead of the log
    also_log: Path | None = None  # the output is copied here too
    status: str = "not run"
    note: str = ""
    seconds: float = 0.0
    tail: str = ""  # the last line it printed

    @property
    def what(self) -> str:
        return self.title.split(": ", 1)[-1]


def quoted(cmd: list[str]) -> str:
    return " ".join(shlex.quote(c) for c in cmd).replace(sys.executable, "python")


class Runner:
    """Prints to the screen and the log, and runs commands and steps within the budget."""

    def __init__(self, config: Config, start: float) -> None:
        self.config = config
        self.start = start
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
        self.add_path(str(ROOT))
        self.notes: list[str] = []  # the summary's lines under its heading
        self.steps: list[Step] = []  # the summary's rows, in the order they ran
        self.log: Any = None

    def say(self, text: str = "") -> None:
        print(text, flush=True)
        if self.log:
            self.log.write(text + "\n")
            self.log.flush()

    def left(self) -> float:
        return self.config.budget - (time.monotonic() - self.start)

    def add_path(self, path: str) -> None:
        """Put `path` on the children's PYTHONPATH, after the repository."""
        paths = [p for p in self.env.get("PYTHONPATH", "").split(os.pathsep) if p]
        paths = [p for p in paths if p not in (path, str(ROOT))]
        first = [str(ROOT)] + ([path] if path != str(ROOT) else [])
        self.env["PYTHONPATH"] = os.pathsep.join(first + paths)

    def run(self, cmd: list[str], timeout: float, step: Step | None = None) -> int | None:
        """Run `cmd` in the repository, its output in the log (and the step's own log); None
        when it ran past `timeout`. It runs in a process group of its own, stopped as a whole."""
        self.say(f"$ {quoted(cmd)}")
        capture = step.capture if step and cmd is step.commands[-1] else None
        out = capture.open("w", encoding="utf-8") if capture else None
        also = step.also_log.open("a", encoding="utf-8") if step and step.also_log else None
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=self.env,
            stdout=out or subprocess.PIPE,
            stderr=subprocess.PIPE if out else subprocess.STDOUT,
            text=True,
            errors="replace",
            start_new_session=True,
        )

        def pump() -> None:
            for line in proc.stderr if out else proc.stdout:
                line = line.rstrip("\n")
                self.say(line)
                if also:
                    also.write(line + "\n")
                if step and line.strip():
                    step.tail = line.strip()

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        code: int | None = None
        try:
            code = proc.wait(timeout=max(timeout, 1))
        except subprocess.TimeoutExpired:
            pass
        finally:
            if proc.poll() is None:  # past its time, or this script was stopped
                stop_group(proc)
            reader.join(timeout=5)
            for f in (out, also):
                if f:
                    f.close()
        return code

    def run_step(self, step: Step, reserve: float = 5) -> None:
        """Run the step's commands in turn, each capped by the step's cap and the budget left."""
        self.steps.append(step)
        self.say(f"\n== {step.title}")
        if step.status != "not run":  # decided before it ran
            self.say(f"   {step.status}: {step.note}")
            return
        started, step.status = time.monotonic(), "ok"
        for cmd in step.commands:
            timeout = min(step.cap, self.left() - reserve)
            if timeout < 10:
                budget = self.config.budget
                step.status, step.note = "out of time", f"the {budget:.0f} s budget was spent"
                self.say(f"   {step.status}: {step.note} (GPU_CHECK_BUDGET_S)")
                break
            code = self.run(cmd, timeout, step)
            if code is None:
                step.status = f"timed out ({timeout:.0f} s)"
            elif code == 5 and step.name == "matrix":
                step.status = "no tests (exit 5)"
            elif code != 0:
                step.status = f"failed (exit {code})"
            if step.status != "ok":
                break
        step.seconds = time.monotonic() - started
        self.say(
            f"   {step.status} in {step.seconds:.1f} s ({self.left():.0f} s of the budget left)"
        )


def stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM to the process group, SIGKILL if it is still there 15 s later."""
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, None)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue
