"""`make gpu-check` (scripts/gpu_check.py) in its CPU mode, so that every CI run goes through the
script a GPU machine will run: the same steps, tiny, and the same reports and summary table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.py"
REPORTS = ["gpu-check.log", "matrix.log", "model.jsonl", "train.json", "translate.json"]
REPORTS += ["distributed.json", "summary.md"]


def gpu_check(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """The script as `make gpu-check` runs it, its reports into tmp_path/out."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "GPU_CHECK_"))}
    base.pop("OUT", None)
    env = base | {"GPU_CHECK_OUT": str(tmp_path / "out")} | env
    return subprocess.run(
        [sys.executable, str(SCRIPT)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def table_rows(summary: str) -> dict[str, list[list[str]]]:
    """The summary table's rows by step (a step's later rows leave the step cell empty)."""
    rows: dict[str, list[list[str]]] = {}
    step = ""
    for line in summary.splitlines():
        if not line.startswith("| ") or line.startswith(("| step ", "|---")):
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        step = cells[0] or step
        rows.setdefault(step, []).append(cells)
    return rows


@pytest.mark.slow
def test_the_gpu_check_runs_every_step_on_the_cpu(tmp_path):
    done = gpu_check(tmp_path, GPU_CHECK_DEVICE="cpu")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == sorted(REPORTS)  # a device run's 8 at most

    def rows(name: str) -> list[dict]:
        return json.loads((out / f"{name}.json").read_text(encoding="utf-8"))["rows"]

    train = rows("train")
    combos = {(r["arch"], r["precision"]) for r in train}
    assert combos == {(a, p) for a in ("rnnenc", "rnnsearch", "luong") for p in ("fp32", "bf16")}
    assert all(r["device"] == "cpu" and r["tokens_per_s"] > 0 for r in train)
    translate = rows("translate")
    assert {(r["beam"], r["mode"] == "one at a time") for r in translate} == {
        (b, one) for b in (1, 5) for one in (True, False)
    }
    assert all(r["sentences_per_s"] > 0 for r in translate)
    assert [r["launch"] for r in rows("distributed")] == ["plain", "torchrun"]
    events = [json.loads(line) for line in (out / "model.jsonl").read_text().splitlines()]
    assert {"train", "valid"} <= {e["event"] for e in events}
    assert "passed" in (out / "matrix.log").read_text(encoding="utf-8")

    summary = (out / "summary.md").read_text(encoding="utf-8")
    table = table_rows(summary)
    steps = ["cuda", "matrix", "data", "model", "quality", "bench-train", "bench-translate"]
    assert list(table) == [*steps, "bench-distributed"]
    assert all(table[s][0][1] == "ok" for s in steps[1:]), summary
    assert table["cuda"][0][1] == "cpu"
    assert " passed" in table["matrix"][0][6]
    assert len(table["bench-train"]) == 3  # an architecture a row, fp32 and bf16 side by side
    for row in table["bench-train"]:
        assert row[5].startswith("fp32 ") and row[6].startswith("bf16 ") and "x" in row[7]
    assert [r[3].split(",")[0] for r in table["bench-translate"]] == ["beam 1", "beam 5"]
    assert all(r[7].endswith("x") for r in table["bench-translate"] + table["bench-distributed"])
    assert done.stdout.rstrip().endswith(summary.rstrip())  # the summary is printed last
    log = (out / "gpu-check.log").read_text(encoding="utf-8")
    assert "$ python -m nmt bench train" in log and log.rstrip().endswith(summary.rstrip())


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here: the check would run")
def test_without_cuda_it_says_so_and_stops(tmp_path):
    done = gpu_check(tmp_path, GPU_CHECK_STEPS="matrix")
    assert done.returncode == 2
    assert "no CUDA here" in done.stdout and "GPU_CHECK_DEVICE=cpu" in done.stdout
    summary = (tmp_path / "out" / "summary.md").read_text(encoding="utf-8")
    assert table_rows(summary)["cuda"][0][1] == "no CUDA"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["gpu-check.log", "summary.md"]


def test_the_summary_of_a_gpu_run_names_the_card(tmp_path, monkeypatch):
    """The GPU path's summary, built on the CPU: its first row (the `cuda` step, status ok) names
    the card. The first run on an H200 crashed here: that step had no row of its own."""
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    from gpu_check_machine import Machine
    from gpu_check_runner import Config, Runner, Step
    from gpu_check_summary import Summary

    config = Config("cuda", tmp_path, 480.0, tmp_path, True, tmp_path)
    runner = Runner(config, start=0.0)
    machine = Machine(runner)
    machine.info |= {"torch": "2.11.0", "cuda_build": "13.0"}
    machine.info["gpus"] = [{"name": "NVIDIA H200", "gib": 139.8, "capability": "9.0"}]
    runner.steps.append(Step("cuda", "cuda: torch 2.11.0", 0, status="ok"))
    runner.steps.append(Step("later", "later: a step with no rows of its own", 0, status="ok"))
    rows = table_rows(Summary(runner, machine).text())
    assert "NVIDIA H200 (139.8 GiB, compute 9.0)" in rows["cuda"][0]
    assert rows["later"][0][1] == "ok"
