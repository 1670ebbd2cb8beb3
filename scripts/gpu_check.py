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

import shutil
import signal
import sys
import time
from typing import Any

from gpu_check_machine import Machine
from gpu_check_plan import NEEDS, Plan
from gpu_check_runner import Config, Runner
from gpu_check_summary import OUT_FILES, Summary


class Check:
    """The whole check: the machine, then the plan's steps in turn, and the summary always."""

    def __init__(self) -> None:
        start = time.monotonic()
        self.config = Config.from_env()
        self.runner = Runner(self.config, start)
        self.machine = Machine(self.runner)

    def main(self) -> int:
        config, runner = self.config, self.runner
        config.out.mkdir(parents=True, exist_ok=True)
        for name in OUT_FILES:  # this run's reports only
            (config.out / name).unlink(missing_ok=True)
        runner.log = (config.out / "gpu-check.log").open("w", encoding="utf-8")
        runner.say(
            f"== nmt gpu-check ({config.device}): reports in {config.out}, work in {config.work}"
        )
        try:
            if not (self.machine.packages() and self.machine.cuda()):
                return 2
            return self.run_steps()
        except KeyboardInterrupt:  # SIGTERM or Ctrl-C: the summary still comes
            runner.notes.append("stopped by a signal before the end")
            return 1
        finally:
            text = Summary(runner, self.machine).text()
            (config.out / "summary.md").write_text(text, encoding="utf-8")
            runner.say("\n" + text.rstrip())
            runner.log.close()
            if not config.keep_work:
                shutil.rmtree(config.work, ignore_errors=True)

    def run_steps(self) -> int:
        """Run the plan's steps; one that did not pass skips those that need it, and makes 1."""
        work, out = self.config.work, self.config.out
        steps = Plan(self.config, self.machine).steps()
        code = 0
        for step in steps:
            self.runner.run_step(step)
            if step.name == "model" and (work / "model/metrics.jsonl").exists():
                shutil.copy(work / "model/metrics.jsonl", out / "model.jsonl")
            if step.status == "ok":
                continue
            code = 1
            for later in steps:
                if NEEDS.get(later.name) == step.name and later.status == "not run":
                    later.status, later.note = "skipped", f"{step.name} did not pass"
        return code


def interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, interrupt)
    sys.exit(Check().main())
