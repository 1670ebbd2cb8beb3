"""`make gpu-check`: what a GPU machine shows about nmt, in one command.

    python3 scripts/gpu_check.py                         # on a GPU machine (make gpu-check)
    GPU_CHECK_DEVICE=cpu python3 scripts/gpu_check.py    # the same steps, tiny, on the CPU

In order: the packages nmt needs (missing ones installed from carried wheels in .whl/, where
there are some); CUDA (none: a plain message and exit 2, unless GPU_CHECK_DEVICE=cpu); the
device test matrix (pytest tests/test_devices.py); the shipped sample data/ preprocessed, the
`make demo` model trained on the device and its test BLEU; `nmt bench train`, `nmt bench
translate` (with that model) and `nmt bench distributed --processes 1`. The reports go to
GPU_CHECK_OUT (else $OUT, else runs/gpu-check), with one summary table, printed last:

    gpu-check.log     everything printed, with the commands
    matrix.log        the device matrix's pytest output
    model.jsonl       the demo model's metrics.jsonl (training speed, validation)
    train.json, translate.json, distributed.json     the three benchmarks' reports
    summary.md        the key figures side by side

Seven files in one folder: a device run brings back at most 8 files, 2 folders down.

Sizes on a GPU (one H100/H200: 5 to 7 minutes expected, estimated from process start-ups and
kernel launches, not yet timed on one; never past the 480 s budget): data/ whole (10,000 pairs,
vocabulary 4,000); the demo model as `make demo` trains it (configs/sample.yaml: rnnsearch
128x256, 400 updates of 2,000 tokens, about a minute; its CPU test BLEU is 9.02); the test
split at beam 5; bench train: rnnenc, rnnsearch, luong x 256x512, 512x1024 x fp32, bf16 (12
fresh processes of about 10 s each: start-up, 5 untimed and 30 timed updates of 3,000 tokens,
the 1 s matrix-product ceiling); bench translate: 500 test lines, beams 1 and 5, batched and
one at a time; bench distributed: rnnsearch 256x512, 200 updates of 3,000 tokens, plain and
under torchrun with 1 process. On the CPU (GPU_CHECK_DEVICE=cpu, about a minute on 2 cores):
2,000/100/100 pairs with a vocabulary of 1,000, 32x48 models, 30 training updates, bench train at
one size with 3 timed updates, 10 lines to translate, 4 distributed updates, and of the
matrix one case, -k rnnenc-fp32-cpu (its training, resume, CPU-load and beam checks; `make test`
runs the whole CPU half): the same steps and reports.

Each step runs under a time cap and all under one budget (GPU_CHECK_BUDGET_S: 480 s on a GPU,
300 on the CPU): a step that would run past it is stopped or skipped, and the summary says so,
so that a run always ends with its summary. Exit 0: every step passed; 1: a step failed, timed
out or was skipped; 2: it cannot run here (no CUDA, or a package nmt needs is missing).

Settings (environment): GPU_CHECK_DEVICE (cuda, cuda:N or cpu), GPU_CHECK_OUT, GPU_CHECK_STEPS
(some of matrix,model,bench-train,bench-translate,bench-distributed; all by default; the steps
they need come with them), GPU_CHECK_TESTS (the matrix's pytest paths), GPU_CHECK_PYTEST_ARGS
("-q" on a GPU, "-q -k rnnenc-fp32-cpu" on the CPU), GPU_CHECK_BUDGET_S, GPU_CHECK_WORK (data and
models: a temporary folder, removed at the end, by default), GPU_CHECK_WHEELS (.whl).

On the lent GPU machine (no network; its python3 has a CUDA torch): fill .whl/ here first with
`bash scripts/gpu_wheels.sh` (the server's packages and datasets, which it lacks), then

    run(command="python3 scripts/gpu_check.py", carry=[".whl"], timeout_s=540)

nmt runs from the working tree (PYTHONPATH); the wheels are installed only when a package is
missing (pip --no-index --no-deps --target, into the work folder); what still cannot be imported
is skipped with a line saying so (without fastapi, uvicorn or pydantic, the matrix's serve case
skips itself). The run's 480 s at most, with the machine's start (1 to 2 minutes), leave 4 to 5
of a session's 15 device minutes: if a step failed, rerun it at once, while the machine is warm
(GPU_CHECK_STEPS=bench-train GPU_CHECK_BUDGET_S=180 python3 scripts/gpu_check.py, timeout_s=240);
else give the machine back.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
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
STEPS = ["matrix", "model", "bench-train", "bench-translate", "bench-distributed"]
# What a step needs: a step whose need did not pass is skipped.
NEEDS = {
    "model": "data",
    "quality": "model",
    "bench-train": "data",
    "bench-translate": "model",
    "bench-distributed": "data",
}
# Imported before anything runs. nmt's own needs (one missing: exit 2), the tests', the
# server's (missing: the matrix's serve tests are left out), and two that only some tests use.
NEEDED = ["torch", "numpy", "sentencepiece", "sacrebleu", "typer", "yaml", "tqdm", "matplotlib"]
TESTING = ["pytest", "hypothesis"]
SERVE = ["fastapi", "uvicorn", "pydantic", "prometheus_client", "httpx"]
OPTIONAL = {
    "datasets": "only --format hf and tests/test_corpus.py use it",
    "selenium": "the page's browser test, which needs chromium too, skips itself",
}
CPU_DEMO = "9.02 / 25.57"  # `make demo` on the 2-core CPU (README): the same config's scores
OUT_FILES = ["gpu-check.log", "matrix.log", "model.jsonl", "train.json", "translate.json"]
OUT_FILES += ["distributed.json", "summary.md"]

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


def sets(*pairs: str) -> list[str]:
    return [arg for pair in pairs for arg in ("--set", pair)]


class Check:
    def __init__(self) -> None:
        self.start = time.monotonic()
        self.device = os.environ.get("GPU_CHECK_DEVICE") or "cuda"
        self.cpu = self.device == "cpu"
        if not (self.cpu or self.device.split(":")[0] == "cuda"):
            raise SystemExit(f"GPU_CHECK_DEVICE={self.device}: use cuda, cuda:N or cpu")
        out = Path(os.environ.get("GPU_CHECK_OUT") or os.environ.get("OUT") or "runs/gpu-check")
        self.out = out if out.is_absolute() else ROOT / out
        self.budget = float(os.environ.get("GPU_CHECK_BUDGET_S") or (300 if self.cpu else 480))
        self.keep_work = bool(os.environ.get("GPU_CHECK_WORK"))
        work = os.environ.get("GPU_CHECK_WORK") or tempfile.mkdtemp(prefix="nmt-gpu-check-")
        self.work = Path(work).resolve()
        self.wheels = ROOT / os.environ.get("GPU_CHECK_WHEELS", ".whl")
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
        self.add_path(str(ROOT))
        self.info: dict[str, Any] = {"modules": {}}
        self.notes: list[str] = []
        self.steps: list[Step] = []
        self.log: Any = None

    def say(self, text: str = "") -> None:
        print(text, flush=True)
        if self.log:
            self.log.write(text + "\n")
            self.log.flush()

    def left(self) -> float:
        return self.budget - (time.monotonic() - self.start)

    def add_path(self, path: str) -> None:
        """Put `path` on the children's PYTHONPATH, after the repository."""
        paths = [p for p in self.env.get("PYTHONPATH", "").split(os.pathsep) if p]
        paths = [p for p in paths if p not in (path, str(ROOT))]
        first = [str(ROOT)] + ([path] if path != str(ROOT) else [])
        self.env["PYTHONPATH"] = os.pathsep.join(first + paths)

    def missing(self, names: Any = None) -> list[str]:
        mods = self.info["modules"]
        return [m for m in (names or mods) if mods.get(m)]

    # -- running -------------------------------------------------------------------------------

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
        self.steps.append(step)
        self.say(f"\n== {step.title}")
        if step.status != "not run":  # decided before it ran
            self.say(f"   {step.status}: {step.note}")
            return
        started, step.status = time.monotonic(), "ok"
        for cmd in step.commands:
            timeout = min(step.cap, self.left() - reserve)
            if timeout < 10:
                step.status, step.note = "out of time", f"the {self.budget:.0f} s budget was spent"
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

    def nmt(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "nmt", *args]

    # -- before the steps ----------------------------------------------------------------------

    def probe(self) -> None:
        mods = [*NEEDED, *TESTING, *SERVE, *OPTIONAL]
        cmd = [sys.executable, "-c", PROBE, *mods]
        try:
            done = subprocess.run(
                cmd, cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=180
            )
        except subprocess.TimeoutExpired:
            done = subprocess.CompletedProcess(cmd, 1, "", "the import probe took over 180 s")
        try:
            self.info = json.loads(done.stdout.strip().splitlines()[-1])
        except (json.JSONDecodeError, IndexError):
            self.say(done.stdout + done.stderr)
            self.info = {"modules": dict.fromkeys(mods, "the import probe failed")}

    def packages(self) -> bool:
        """Whether nmt can run here; the wheels in .whl/ installed first if a package is missing."""
        self.probe()
        wheels = sorted(self.wheels.glob("*.whl")) if self.wheels.is_dir() else []
        if set(self.missing()) - {"selenium"} and wheels:  # selenium is never carried
            site = self.work / "site"
            names = ", ".join(w.name.split("-")[0] for w in wheels)
            self.say(
                f"not importable: {', '.join(self.missing())}; installing {names} from "
                f"{self.wheels.name}/ into {site}"
            )
            cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps"]
            cmd += ["--no-compile", "--no-cache-dir", "--upgrade", "--target", str(site)]
            if self.run(cmd + [str(w) for w in wheels], 300) == 0:
                self.add_path(str(site))
                self.notes.append(f"installed from {self.wheels.name}/: {names}")
            self.probe()
        for name in self.missing():
            self.say(f"not importable: {name} ({self.info['modules'][name]})")
        if self.missing(NEEDED):
            needed = ", ".join(self.missing(NEEDED))
            self.notes.append(f"cannot run: nmt needs {needed}")
            self.say(
                f"\nnmt needs {needed}, which {sys.executable} cannot import. With no "
                "network, fill .whl/ where pip works (bash scripts/gpu_wheels.sh) and "
                "carry it."
            )
            return False
        if self.missing(SERVE):
            self.notes.append(
                f"no {', '.join(self.missing(SERVE))}: the matrix's serve case skips itself "
                "(carry .whl/ from scripts/gpu_wheels.sh to run it)"
            )
        if self.missing(TESTING):
            self.notes.append(f"no {', '.join(self.missing(TESTING))} for the matrix")
        for name in self.missing(OPTIONAL):
            self.notes.append(f"no {name} ({OPTIONAL[name]})")
        return True

    def cuda(self) -> bool:
        """Whether the device asked for is there; the answer is the summary's first row."""
        info, step = self.info, Step("cuda", f"cuda: torch {self.info['torch']}", 0)
        self.steps.append(step)
        build = info["cuda_build"]
        step.title += f" ({'CUDA ' + build if build else 'a CPU-only build'})"
        if self.cpu:
            step.status, step.note = "cpu", "GPU_CHECK_DEVICE=cpu: every step on the CPU, tiny"
            self.say(step.note)
            return True
        if shutil.which("nvidia-smi"):
            query = ["--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]
            self.run(["nvidia-smi", *query], 30)
        if not info["cuda"]:
            step.status, step.note = "no CUDA", "torch sees no GPU here: nothing was checked"
            self.say(
                f"\nno CUDA here: {step.what} sees no GPU, so there is nothing to check. "
                "GPU_CHECK_DEVICE=cpu runs the same steps, tiny, on the CPU."
            )
            return False
        step.status = "ok"
        step.note = f"{gpu_names(info)}; bf16 {'yes' if info['bf16'] else 'no'}"
        self.say(f"{step.what}: {step.note}")
        return True

    # -- the steps -------------------------------------------------------------------------------

    def plan(self) -> list[Step]:
        raw = os.environ.get("GPU_CHECK_STEPS") or ",".join(STEPS)
        wanted = {s.strip() for s in raw.split(",") if s.strip()}
        if wanted - set(STEPS):
            raise SystemExit(f"GPU_CHECK_STEPS: unknown {sorted(wanted - set(STEPS))}; of {STEPS}")
        steps = [self.matrix()] if "matrix" in wanted else []
        if wanted - {"matrix"}:
            steps.append(self.data())
        if wanted & {"model", "bench-translate"}:
            steps += self.model()
        if "bench-train" in wanted:
            steps.append(self.bench_train())
        if "bench-translate" in wanted:
            steps.append(self.bench_translate())
        if "bench-distributed" in wanted:
            steps.append(self.bench_distributed())
        return steps

    def matrix(self) -> Step:
        tests = shlex.split(os.environ.get("GPU_CHECK_TESTS") or "tests/test_devices.py")
        default = "-q -k rnnenc-fp32-cpu" if self.cpu else "-q"
        args = shlex.split(os.environ.get("GPU_CHECK_PYTEST_ARGS") or default)
        cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *tests, *args]
        title = f"device matrix: pytest {quoted(tests + args)}"
        cap = 120 if self.cpu else 180
        step = Step("matrix", title, cap, [cmd], also_log=self.out / "matrix.log")
        absent = [t for t in tests if t[0] != "-" and not (ROOT / t.split("::")[0]).exists()]
        if self.missing(["pytest"]):
            step.status, step.note = "skipped", "pytest cannot be imported here"
        elif absent:
            step.status, step.note = "missing", f"no {', '.join(absent)}"
        return step

    def data(self) -> Step:
        cmd = self.nmt("preprocess", "--config", "configs/sample.yaml", "--out", self.at("data"))
        if not self.cpu:
            return Step("data", "data: data/ (configs/sample.yaml)", 90, [cmd])
        subset = self.work / "subset"  # a few lines of each split, a small vocabulary
        subset.mkdir(parents=True, exist_ok=True)
        for split, n in (("train", 2000), ("dev", 100), ("test", 100)):
            lines = (ROOT / "data" / f"{split}.tsv").read_text(encoding="utf-8").splitlines()
            path = subset / f"{split}.tsv"
            path.write_text("\n".join(lines[: n + 1]) + "\n", encoding="utf-8")
            cmd += sets(f"data.{split}={path}")
        cmd += sets("data.vocab_size=1000")
        return Step("data", "data: the first 2,000/100/100 pairs of data/", 60, [cmd])

    def at(self, name: str) -> str:
        return str(self.work / name)

    def vocab(self) -> list[str]:
        return sets(f"data.vocab_size={1000 if self.cpu else 4000}")

    def tiny(self, batch: int) -> list[str]:
        """A tiny model on one thread: beside a busy process, 2 threads of a model this small
        (bench distributed sets OMP_NUM_THREADS to the cores) ran 58x slower on 2 cores."""
        sizes = ("model.emb_size=32", "model.hidden_size=48", f"train.batch_tokens={batch}")
        return sets(*sizes, "train.threads=1")

    def model(self) -> list[Step]:
        dev = ["--device", self.device]
        cmd = self.nmt("train", "configs/sample.yaml", "--data", self.at("data"))
        cmd += ["--out", self.at("model"), *dev]
        if self.cpu:
            cmd += self.vocab() + self.tiny(1000)
            cmd += sets("train.max_steps=30", "train.valid_every=30", "train.log_every=10")
            title = "model: 32x48 (configs/sample.yaml)"
        else:
            title = "model: make demo's, rnnsearch 128x256 (configs/sample.yaml)"
        hyp = self.at("test.hyp.txt")
        translate = self.nmt(
            "translate", self.at("model/best.pt"), "-i", self.at("data/test.es.txt")
        )
        evaluate = self.nmt("evaluate", hyp, self.at("data/test.en.txt"), "--metrics", "bleu,chrf")
        return [
            Step("model", title, 60 if self.cpu else 150, [cmd]),
            Step(
                "quality",
                "quality: the model on the test split, beam 5",
                60,
                [translate + ["-o", hyp, *dev], evaluate + ["--json"]],
                capture=self.work / "quality.json",
            ),
        ]

    def bench_train(self) -> Step:
        sizes, steps, warmup = ("32x48", 3, 1) if self.cpu else ("256x512,512x1024", 30, 5)
        cmd = self.nmt("bench", "train", "--data", self.at("data"), "--archs")
        cmd += ["rnnenc,rnnsearch,luong", "--sizes", sizes, "--precisions", "fp32,bf16"]
        cmd += ["--steps", str(steps), "--warmup", str(warmup), "--device", self.device]
        cmd += ["--out", str(self.out), *self.vocab()]
        cmd += sets("train.batch_tokens=500", "train.threads=1") if self.cpu else []
        title = f"bench train: 3 archs x {sizes} x fp32, bf16; {steps} timed updates"
        return Step("bench-train", title, 150 if self.cpu else 240, [cmd])

    def bench_translate(self) -> Step:
        lines = 10 if self.cpu else 500
        cmd = self.nmt("bench", "translate", self.at("model/best.pt"), "-i")
        cmd += [self.at("data/test.es.txt"), "--lines", str(lines), "--beams", "1,5"]
        cmd += ["--device", self.device, "--out", str(self.out)]
        title = f"bench translate: {lines} test lines, batched and one at a time"
        return Step("bench-translate", title, 60 if self.cpu else 150, [cmd])

    def bench_distributed(self) -> Step:
        steps = 4 if self.cpu else 200
        cmd = self.nmt("bench", "distributed", "--data", self.at("data"), "--config")
        cmd += ["configs/sample.yaml", "--processes", "1", "--steps", str(steps)]
        cmd += ["--device", self.device, "--out", str(self.out), *self.vocab()]
        if self.cpu:
            cmd += self.tiny(500)
            size = "32x48"
        else:
            size = "256x512"
            cmd += sets("model.emb_size=256", "model.hidden_size=512", "train.batch_tokens=3000")
        title = f"bench distributed: rnnsearch {size}, {steps} updates"
        return Step("bench-distributed", title, 90 if self.cpu else 150, [cmd])

    # -- the summary -----------------------------------------------------------------------------

    def summary(self) -> str:
        info, total = self.info, time.monotonic() - self.start
        sizes = "tiny sizes (GPU_CHECK_DEVICE=cpu)" if self.cpu else "full sizes"
        lines = [
            f"# GPU check: {gpu_names(info) or 'no GPU'} ({self.device}), "
            + time.strftime("%Y-%m-%d %H:%M"),
            "",
            f"torch {info.get('torch', '?')} (CUDA {info.get('cuda_build') or 'none'}), Python "
            f"{info.get('python', '?')}, {info.get('cpus', '?')} CPUs; {sizes}; {total:.0f} s "
            f"of a {self.budget:.0f} s budget.",
            *(f"- {note}" for note in self.notes),
            "",
            "| step | status | s | configuration | measure | baseline | value | ratio |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for step in self.steps:
            rows = []
            if step.status == "ok":
                with contextlib.suppress(OSError, ValueError, LookupError, TypeError):
                    rows = getattr(self, "rows_" + step.name.replace("-", "_"))(step)
            if not rows:
                detail = step.note or ("" if step.status == "ok" else step.tail)
                rows = [[step.what, "", "", detail[:200], ""]]
            for i, row in enumerate(rows):
                first = [step.name, step.status, f"{step.seconds:.0f}"] if i == 0 else ["", "", ""]
                cells = [str(c).replace("|", "/") for c in first + row]
                lines.append("| " + " | ".join(cells) + " |")
        here = [name for name in OUT_FILES if (self.out / name).exists() or name == "summary.md"]
        lines += ["", f"Reports in this folder: {', '.join(here)}."]
        return "\n".join(lines) + "\n"

    def report(self, name: str) -> list[dict[str, Any]]:
        return json.loads((self.out / f"{name}.json").read_text(encoding="utf-8"))["rows"]

    def rows_matrix(self, step: Step) -> list[list[str]]:
        return [[step.what, "tests", "", step.tail.strip("= "), ""]]

    def rows_data(self, step: Step) -> list[list[str]]:
        manifest = json.loads((self.work / "data/manifest.json").read_text(encoding="utf-8"))
        splits, vocab = manifest["splits"], manifest["tokenizers"][manifest["tgt"]]["vocab_size"]
        pairs = " / ".join(f"{s['pairs']:,}" for s in splits.values())
        tokens = sum(splits["train"]["tokens"].values())
        value = f"{pairs}; {tokens:,} tokens; vocabulary {vocab:,}"
        return [[step.what, "pairs (train / dev / test); training tokens", "", value, ""]]

    def rows_model(self, step: Step) -> list[list[str]]:
        text = (self.out / "model.jsonl").read_text(encoding="utf-8")
        events = [json.loads(line) for line in text.splitlines()]
        train = [e for e in events if e["event"] == "train"]
        valid = [e for e in events if e["event"] == "valid"]
        speeds = [e["tokens_per_s"] for e in train[1:] or train]  # the first window warms up
        last = train[-1]
        where = "GPU" if "gpu_peak_mib" in last else "RSS"
        value = (
            f"{sum(speeds) / len(speeds):,.0f}; {last.get('gpu_peak_mib', last['peak_rss_mib']):,}"
        )
        value += f"; {valid[-1]['bleu']:.2f}"
        measure = f"tokens/s; peak {where} MiB; dev BLEU (greedy)"
        return [[f"{step.what}, {last['step']} updates", measure, "", value, ""]]

    def rows_quality(self, step: Step) -> list[list[str]]:
        scores = json.loads((self.work / "quality.json").read_text(encoding="utf-8"))
        score = {s["name"]: s["score"] for s in scores}
        base = "" if self.cpu else f"CPU, make demo: {CPU_DEMO}"
        value = f"{score['bleu']:.2f} / {score['chrf']:.2f}"
        return [[step.what, "test BLEU / chrF", base, value, ""]]

    def rows_bench_train(self, step: Step) -> list[list[str]]:
        def cell(r: dict | None) -> str:
            if not r:
                return ""
            util = f"{r['utilisation_pct']}%; {r['peak_mem_mib']:,}"
            return f"{r['precision']} {r['tokens_per_s']:,} ({util})"

        rows, out = self.report("train"), []
        for key in dict.fromkeys((r["arch"], r["emb"], r["hidden"]) for r in rows):
            mine = {r["precision"]: r for r in rows if (r["arch"], r["emb"], r["hidden"]) == key}
            fp32, bf16 = mine.get("fp32"), mine.get("bf16")
            ratio = (
                f"bf16 {bf16['tokens_per_s'] / fp32['tokens_per_s']:.2f}x" if fp32 and bf16 else ""
            )
            measure = "tokens/s (utilisation; peak MiB)"
            out.append([f"{key[0]} {key[1]}x{key[2]}", measure, cell(fp32), cell(bf16), ratio])
        return out

    def rows_bench_translate(self, step: Step) -> list[list[str]]:
        rows, out = self.report("translate"), []
        for beam in dict.fromkeys(r["beam"] for r in rows):
            mine = [r for r in rows if r["beam"] == beam]
            one = next(r for r in mine if r["mode"] == "one at a time")
            best = max((r for r in mine if r is not one), key=lambda r: r["sentences_per_s"])
            ratio = f"{best['sentences_per_s'] / one['sentences_per_s']:.1f}x"
            out.append(
                [
                    f"beam {beam}, {best['precision']}",
                    "sentences/s",
                    f"one at a time {one['sentences_per_s']}",
                    f"{best['mode']}: {best['sentences_per_s']}",
                    ratio,
                ]
            )
        return out

    def rows_bench_distributed(self, step: Step) -> list[list[str]]:
        rows = self.report("distributed")
        plain = next(r for r in rows if r["launch"] == "plain")
        return [
            [
                step.what,
                "tokens/s",
                f"plain {plain['tokens_per_s']:,}",
                f"torchrun, {r['processes']} process: {r['tokens_per_s']:,}",
                f"{r['vs_plain']:.3f}x",
            ]
            for r in rows
            if r["launch"] != "plain"
        ]

    # -- the whole check -------------------------------------------------------------------------

    def main(self) -> int:
        self.out.mkdir(parents=True, exist_ok=True)
        for name in OUT_FILES:  # this run's reports only
            (self.out / name).unlink(missing_ok=True)
        self.log = (self.out / "gpu-check.log").open("w", encoding="utf-8")
        self.say(f"== nmt gpu-check ({self.device}): reports in {self.out}, work in {self.work}")
        code = 0
        try:
            if not (self.packages() and self.cuda()):
                return 2
            steps = self.plan()
            for step in steps:
                self.run_step(step)
                if step.name == "model" and (self.work / "model/metrics.jsonl").exists():
                    shutil.copy(self.work / "model/metrics.jsonl", self.out / "model.jsonl")
                if step.status == "ok":
                    continue
                code = 1
                for later in steps:
                    if NEEDS.get(later.name) == step.name and later.status == "not run":
                        later.status, later.note = "skipped", f"{step.name} did not pass"
            return code
        except KeyboardInterrupt:  # SIGTERM or Ctrl-C: the summary still comes
            self.notes.append("stopped by a signal before the end")
            return 1
        finally:
            text = self.summary()
            (self.out / "summary.md").write_text(text, encoding="utf-8")
            self.say("\n" + text.rstrip())
            self.log.close()
            if not self.keep_work:
                shutil.rmtree(self.work, ignore_errors=True)


def gpu_names(info: dict[str, Any]) -> str:
    return "; ".join(
        f"{g['name']} ({g['gib']} GiB, compute {g['capability']})" for g in info.get("gpus") or []
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


def interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, interrupt)
    sys.exit(Check().main())
