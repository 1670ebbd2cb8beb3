"""The gpu-check's plan: which steps run (GPU_CHECK_STEPS and what they need), their commands,
and their sizes: full on a GPU, tiny on the CPU, the same steps either way."""

from __future__ import annotations

import os
import shlex
import sys

from gpu_check_machine import Machine
from gpu_check_runner import ROOT, Config, Step, quoted

STEPS = ["matrix", "model", "bench-train", "bench-translate", "bench-distributed"]
# What a step needs: a step whose need did not pass is skipped.
NEEDS = {
    "model": "data",
    "quality": "model",
    "bench-train": "data",
    "bench-translate": "model",
    "bench-distributed": "data",
}


def sets(*pairs: str) -> list[str]:
    return [arg for pair in pairs for arg in ("--set", pair)]


def nmt(*args: str) -> list[str]:
    return [sys.executable, "-m", "nmt", *args]


class Plan:
    """Builds the steps; the matrix's is decided here when pytest or a test path is missing."""

    def __init__(self, config: Config, machine: Machine) -> None:
        self.config = config
        self.machine = machine
        self.cpu = config.cpu
        self.device = config.device
        self.out = config.out
        self.at = config.at

    def steps(self) -> list[Step]:
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
        if self.machine.missing(["pytest"]):
            step.status, step.note = "skipped", "pytest cannot be imported here"
        elif absent:
            step.status, step.note = "missing", f"no {', '.join(absent)}"
        return step

    def data(self) -> Step:
        cmd = nmt("preprocess", "--config", "configs/sample.yaml", "--out", self.at("data"))
        if not self.cpu:
            return Step("data", "data: data/ (configs/sample.yaml)", 90, [cmd])
        subset = self.config.work / "subset"  # a few lines of each split, a small vocabulary
        subset.mkdir(parents=True, exist_ok=True)
        for split, n in (("train", 2000), ("dev", 100), ("test", 100)):
            lines = (ROOT / "data" / f"{split}.tsv").read_text(encoding="utf-8").splitlines()
            path = subset / f"{split}.tsv"
            path.write_text("\n".join(lines[: n + 1]) + "\n", encoding="utf-8")
            cmd += sets(f"data.{split}={path}")
        cmd += sets("data.vocab_size=1000")
        return Step("data", "data: the first 2,000/100/100 pairs of data/", 60, [cmd])

    def vocab(self) -> list[str]:
        return sets(f"data.vocab_size={1000 if self.cpu else 4000}")

    def tiny(self, batch: int) -> list[str]:
        """A tiny model on one thread: beside a busy process, 2 threads of a model this small
        (bench distributed sets OMP_NUM_THREADS to the cores) ran 58x slower on 2 cores."""
        sizes = ("model.emb_size=32", "model.hidden_size=48", f"train.batch_tokens={batch}")
        return sets(*sizes, "train.threads=1")

    def model(self) -> list[Step]:
        dev = ["--device", self.device]
        cmd = nmt("train", "configs/sample.yaml", "--data", self.at("data"))
        cmd += ["--out", self.at("model"), *dev]
        if self.cpu:
            cmd += self.vocab() + self.tiny(1000)
            cmd += sets("train.max_steps=30", "train.valid_every=30", "train.log_every=10")
            title = "model: 32x48 (configs/sample.yaml)"
        else:
            title = "model: make demo's, rnnsearch 128x256 (configs/sample.yaml)"
        hyp = self.at("test.hyp.txt")
        translate = nmt("translate", self.at("model/best.pt"), "-i", self.at("data/test.es.txt"))
        evaluate = nmt("evaluate", hyp, self.at("data/test.en.txt"), "--metrics", "bleu,chrf")
        return [
            Step("model", title, 60 if self.cpu else 150, [cmd]),
            Step(
                "quality",
                "quality: the model on the test split, beam 5",
                60,
                [translate + ["-o", hyp, *dev], evaluate + ["--json"]],
                capture=self.config.work / "quality.json",
            ),
        ]

    def bench_train(self) -> Step:
        sizes, steps, warmup = ("32x48", 3, 1) if self.cpu else ("256x512,512x1024", 30, 5)
        cmd = nmt("bench", "train", "--data", self.at("data"), "--archs")
        cmd += ["rnnenc,rnnsearch,luong", "--sizes", sizes, "--precisions", "fp32,bf16"]
        cmd += ["--steps", str(steps), "--warmup", str(warmup), "--device", self.device]
        cmd += ["--out", str(self.out), *self.vocab()]
        cmd += sets("train.batch_tokens=500", "train.threads=1") if self.cpu else []
        title = f"bench train: 3 archs x {sizes} x fp32, bf16; {steps} timed updates"
        return Step("bench-train", title, 150 if self.cpu else 240, [cmd])

    def bench_translate(self) -> Step:
        lines = 10 if self.cpu else 500
        cmd = nmt("bench", "translate", self.at("model/best.pt"), "-i")
        cmd += [self.at("data/test.es.txt"), "--lines", str(lines), "--beams", "1,5"]
        cmd += ["--device", self.device, "--out", str(self.out)]
        title = f"bench translate: {lines} test lines, batched and one at a time"
        return Step("bench-translate", title, 60 if self.cpu else 150, [cmd])

    def bench_distributed(self) -> Step:
        steps = 4 if self.cpu else 200
        cmd = nmt("bench", "distributed", "--data", self.at("data"), "--config")
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
