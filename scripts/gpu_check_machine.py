"""What the machine offers the gpu-check: the packages nmt needs (installed from carried wheels
when missing, since a lent GPU machine has no network) and the CUDA device asked for."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterable
from typing import Any

from gpu_check_runner import ROOT, Runner, Step

# Imported before anything runs. nmt's own needs (one missing: exit 2), the tests', the
# server's (missing: the matrix's serve tests are left out), and two that only some tests use.
NEEDED = ["torch", "numpy", "sentencepiece", "sacrebleu", "typer", "yaml", "tqdm", "matplotlib"]
TESTING = ["pytest", "hypothesis"]
SERVE = ["fastapi", "uvicorn", "pydantic", "prometheus_client", "httpx"]
OPTIONAL = {
    "datasets": "only --format hf and tests/test_corpus.py use it",
    "selenium": "the page's browser test, which needs chromium too, skips itself",
}

PROBE = r"""
import importlib, json, os, platform, sys
found = {}
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
        found[name] = None
    except Exception as exc:  # a wheel can be there and still fail to import
        found[name] = (type(exc).__name__ + ": " + str(exc)).splitlines()[0]
info = {"modules": found, "python": platform.python_version(), "cpus": os.cpu_count()}
if found.get("torch") is None:
    import torch
    cuda = torch.cuda.is_available()
    info.update(torch=torch.__version__, cuda_build=torch.version.cuda, cuda=cuda, gpus=[])
    for i in range(torch.cuda.device_count() if cuda else 0):
        p = torch.cuda.get_device_properties(i)
        info["gpus"].append({"name": p.name, "gib": round(p.total_memory / 2**30, 1),
                             "capability": f"{p.major}.{p.minor}"})
    info["bf16"] = cuda and torch.cuda.is_bf16_supported()
print(json.dumps(info))
"""


class Machine:
    """The probe's findings (`info`): importable modules, versions, GPUs, as the children see
    them, since they run with the runner's PYTHONPATH and not this script's."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.config = runner.config
        self.info: dict[str, Any] = {"modules": {}}

    def missing(self, names: Iterable[str] | None = None) -> list[str]:
        mods = self.info["modules"]
        return [m for m in (names or mods) if mods.get(m)]

    def probe(self) -> None:
        mods = [*NEEDED, *TESTING, *SERVE, *OPTIONAL]
        cmd = [sys.executable, "-c", PROBE, *mods]
        try:
            done = subprocess.run(
                cmd, cwd=ROOT, env=self.runner.env, capture_output=True, text=True, timeout=180
            )
        except subprocess.TimeoutExpired:
            done = subprocess.CompletedProcess(cmd, 1, "", "the import probe took over 180 s")
        try:
            self.info = json.loads(done.stdout.strip().splitlines()[-1])
        except (json.JSONDecodeError, IndexError):
            self.runner.say(done.stdout + done.stderr)
            self.info = {"modules": dict.fromkeys(mods, "the import probe failed")}

    def packages(self) -> bool:
        """Whether nmt can run here; the wheels in .whl/ installed first if a package is missing."""
        self.probe()
        self.install_wheels()
        say, notes = self.runner.say, self.runner.notes
        for name in self.missing():
            say(f"not importable: {name} ({self.info['modules'][name]})")
        if self.missing(NEEDED):
            needed = ", ".join(self.missing(NEEDED))
            notes.append(f"cannot run: nmt needs {needed}")
            say(
                f"\nnmt needs {needed}, which {sys.executable} cannot import. With no "
                "network, fill .whl/ where pip works (bash scripts/gpu_wheels.sh) and "
                "carry it."
            )
            return False
        if self.missing(SERVE):
            notes.append(
                f"no {', '.join(self.missing(SERVE))}: the matrix's serve case skips itself "
                "(carry .whl/ from scripts/gpu_wheels.sh to run it)"
            )
        if self.missing(TESTING):
            notes.append(f"no {', '.join(self.missing(TESTING))} for the matrix")
        for name in self.missing(OPTIONAL):
            notes.append(f"no {name} ({OPTIONAL[name]})")
        return True

    def install_wheels(self) -> None:
        """Install the carried wheels into the work folder when a package is missing, then probe
        again; the machine's own site-packages are left as they are."""
        wheels_dir = self.config.wheels
        wheels = sorted(wheels_dir.glob("*.whl")) if wheels_dir.is_dir() else []
        if not (set(self.missing()) - {"selenium"} and wheels):  # selenium is never carried
            return
        site = self.config.work / "site"
        names = ", ".join(w.name.split("-")[0] for w in wheels)
        self.runner.say(
            f"not importable: {', '.join(self.missing())}; installing {names} from "
            f"{wheels_dir.name}/ into {site}"
        )
        cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps"]
        cmd += ["--no-compile", "--no-cache-dir", "--upgrade", "--target", str(site)]
        if self.runner.run(cmd + [str(w) for w in wheels], 300) == 0:
            self.runner.add_path(str(site))
            self.runner.notes.append(f"installed from {wheels_dir.name}/: {names}")
        self.probe()

    def cuda(self) -> bool:
        """Whether the device asked for is there; the answer is the summary's first row."""
        info, step = self.info, Step("cuda", f"cuda: torch {self.info['torch']}", 0)
        say = self.runner.say
        self.runner.steps.append(step)
        build = info["cuda_build"]
        step.title += f" ({'CUDA ' + build if build else 'a CPU-only build'})"
        if self.config.cpu:
            step.status, step.note = "cpu", "GPU_CHECK_DEVICE=cpu: every step on the CPU, tiny"
            say(step.note)
            return True
        if shutil.which("nvidia-smi"):
            query = ["--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]
            self.runner.run(["nvidia-smi", *query], 30)
        if not info["cuda"]:
            step.status, step.note = "no CUDA", "torch sees no GPU here: nothing was checked"
            say(
                f"\nno CUDA here: {step.what} sees no GPU, so there is nothing to check. "
                "GPU_CHECK_DEVICE=cpu runs the same steps, tiny, on the CPU."
            )
            return False
        step.status = "ok"
        step.note = f"{gpu_names(info)}; bf16 {'yes' if info['bf16'] else 'no'}"
        say(f"{step.what}: {step.note}")
        return True


def gpu_names(info: dict[str, Any]) -> str:
    return "; ".join(
        f"{g['name']} ({g['gib']} GiB, compute {g['capability']})" for g in info.get("gpus") or []
    )
