"""Data-parallel training under torchrun: two CPU processes with gloo, on the toy task."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from nmt.bench.distributed import bench_distributed
from nmt.config import Config, apply_overrides
from nmt.data.batching import TokenBatchSampler
from nmt.distributed import Dist, setup, torchrun_command
from nmt.errors import NmtError
from nmt.model.checkpoint import load_checkpoint
from nmt.train import train
from tests.conftest import SMALL

pytestmark = pytest.mark.slow

FAST = [*SMALL, "model.dropout=0", "train.log_every=1"]
RUN_FILES = ["best.pt", "config.yaml", "dev.hyp.txt", "last.pt", "metrics.jsonl"]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def _train_command(toy_dir, run, sets, nproc=2):
    args = ["train", "--data", str(toy_dir), "--out", str(run), *(f"--set={s}" for s in sets)]
    return torchrun_command(nproc, args)


def _torchrun(toy_dir, run, sets):
    """`nmt train` on 2 processes under torchrun, to completion."""
    out = subprocess.run(
        _train_command(toy_dir, run, sets), capture_output=True, text=True, env=ENV, timeout=300
    )
    assert out.returncode == 0, out.stderr
    return out


def _records(run, event):
    lines = (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [r for r in map(json.loads, lines) if r["event"] == event]


def _quiet(_):
    pass


def test_two_processes_equal_one_process_with_the_same_global_batch(toy_dir, tmp_path):
    """2 ranks x 1 batch per update against 1 process x 2 accumulated batches: the same sum of
    the same per-pair losses, so the losses agree to float rounding (the tolerance, 1e-4
    relative after 20 updates; measured difference: about 1e-7)."""
    sets = [*FAST, "train.max_steps=20", "train.valid_every=10", "train.keep_last=1"]
    out = _torchrun(toy_dir, tmp_path / "ddp", sets)
    assert out.stdout.count("model rnnsearch:") == 1  # rank 0 alone logs
    assert "2 processes" in out.stdout
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same kernels as the workers (OMP_NUM_THREADS=1)
    try:
        single, _ = train(
            apply_overrides(Config(), [*sets, "train.accum_steps=2"]),
            toy_dir,
            tmp_path / "one",
            progress_bar=False,
            log=_quiet,
        )
    finally:
        torch.set_num_threads(threads)
    ddp, one = tmp_path / "ddp", tmp_path / "one"
    assert sorted(p.name for p in ddp.iterdir()) == sorted([*RUN_FILES, "step-20.pt"])
    train_ddp, train_one = _records(ddp, "train"), _records(one, "train")
    assert [r["step"] for r in train_ddp] == list(range(1, 21))  # each logged once
    for a, b in zip(train_ddp, train_one):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
    assert train_ddp[-1]["loss"] < train_ddp[0]["loss"] - 0.3  # it trains
    assert [r["step"] for r in _records(ddp, "valid")] == [10, 20]
    weights = load_checkpoint(ddp / "last.pt")["model"]
    for name, value in single.model.state_dict().items():
        torch.testing.assert_close(weights[name], value, rtol=1e-3, atol=1e-4)


def _start(command, ready):
    """Start a training command in its own process group; return once `ready()` holds."""
    proc = subprocess.Popen(
        command, stderr=subprocess.PIPE, text=True, env=ENV, start_new_session=True
    )
    deadline = time.monotonic() + 120
    while not ready():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.1)
    return proc


def _children(pid):
    return [int(c) for c in open(f"/proc/{pid}/task/{pid}/children").read().split()]


def test_a_killed_run_resumes_to_completion_on_any_number_of_processes(toy_dir, tmp_path):
    run = tmp_path / "run"
    sets = [*FAST, "train.max_steps=100000", "train.valid_every=5", "train.patience=0"]
    args = ["train", "--data", str(toy_dir), "--out", str(run), *(f"--set={s}" for s in sets)]
    # Killed outright (SIGKILL to torchrun and both workers): resume from the last validation.
    last = run / "last.pt"
    proc = _start([sys.executable, "-m", "nmt", *args, "--distributed", "2"], last.exists)
    workers = _children(proc.pid)  # torchrun starts each in a session of its own
    assert len(workers) == 2
    for pid in [proc.pid, *workers]:
        os.kill(pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    saved = load_checkpoint(run / "last.pt")["train"]["progress"]["step"]
    assert saved % 5 == 0 and saved >= 5
    # Resumed on 2 processes, then stopped by Ctrl-C: every rank finishes its update and rank 0
    # saves exactly there.
    resume = ["--resume", "--set", f"train.max_steps={saved + 100000}"]
    written = last.stat().st_mtime_ns
    proc = _start(
        _train_command(toy_dir, run, []) + resume, lambda: last.stat().st_mtime_ns != written
    )
    os.kill(proc.pid, signal.SIGINT)  # Ctrl-C: the terminal signals torchrun, which forwards it
    _, stderr = proc.communicate(timeout=120)
    assert "stopped by SIGINT" in stderr and stderr.count("stopped by SIGINT") == 1, stderr
    stopped = load_checkpoint(run / "last.pt")["train"]["progress"]["step"]
    assert stopped > saved + 5 and _records(run, "train")[-1]["step"] == stopped
    # Finished on one process.
    resumed, reason = train(
        Config(),
        toy_dir,
        run,
        resume=True,
        overrides=[f"train.max_steps={stopped + 4}"],
        progress_bar=False,
        log=_quiet,
    )
    assert reason == f"max_steps ({stopped + 4})"
    steps = [r["step"] for r in _records(run, "train")]
    assert steps == list(range(1, stopped + 5))  # none lost, none twice
    assert sorted(p.name for p in run.iterdir() if not p.name.startswith("step-")) == RUN_FILES


def test_two_nodes_meet_through_c10d_rendezvous(toy_dir, tmp_path):
    """The README's multi-node command, with two "machines" on this one: two torchrun agents
    of one process each find each other at the rendezvous endpoint and train as one run."""
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        port = sock.getsockname()[1]
    sets = [*FAST, "train.max_steps=4", "train.valid_every=4"]
    args = ["-m", "nmt", "train", "--data", str(toy_dir), "--out", str(tmp_path / "run")]
    node = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2"]
    node += ["--nproc-per-node", "1", "--rdzv-id", "test", "--rdzv-backend", "c10d"]
    node += ["--rdzv-endpoint", f"localhost:{port}", *args, *(f"--set={s}" for s in sets)]
    procs = [subprocess.Popen(node, stdout=subprocess.PIPE, text=True, env=ENV) for _ in "ab"]
    outputs = [proc.communicate(timeout=300)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0]
    assert "".join(outputs).count("2 processes") == 1  # one run of two ranks, one logging
    assert [r["step"] for r in _records(tmp_path / "run", "train")] == [1, 2, 3, 4]


def test_ranks_share_an_epoch_without_overlap_or_gaps():
    """Four ranks over one epoch of 21 batches: the last update has one batch for four ranks."""
    sampler = TokenBatchSampler(np.arange(1, 301) % 17 + 1, np.arange(300) % 13 + 1, 200)
    batches = list(sampler)
    assert len(batches) == 21
    trained, idle = [], 0
    for start in range(0, len(batches), 4):
        group = batches[start : start + 4]
        shares = [Dist(rank, 4).share(group) for rank in range(4)]
        assert all(len(share) == 1 for share in shares)  # every rank meets the all-reduce
        trained += [batch for share in shares for batch, weight in share if weight == 1.0]
        idle += sum(weight == 0.0 for share in shares for _, weight in share)
    assert idle == 3
    assert sorted(np.concatenate(trained).tolist()) == list(range(300))  # once each, none lost


def test_bench_distributed_compares_launches_at_one_global_batch(toy_dir):
    rows = bench_distributed(toy_dir, None, [2], 4, "cpu", FAST)  # one torchrun: 10 s less
    assert [(r["launch"], r["processes"], r["accum_steps"]) for r in rows] == [
        ("plain", 1, 2),
        ("torchrun", 2, 1),
    ]
    assert all(r["tokens_per_s"] > 0 for r in rows) and rows[0]["vs_plain"] == 1.0
    for counts in ([2, 3], [0, 2]):
        with pytest.raises(NmtError, match="must be at least 1 and all divide"):
            bench_distributed(toy_dir, None, counts, 4, "cpu", FAST)


def test_more_processes_than_gpus_is_a_clear_error(monkeypatch):
    env = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(NmtError, match="started 2 processes on this machine but only 1 GPUs"):
        setup("auto")


def test_ranks_stop_early_together_and_no_ddp_wrapper_outlives_the_group(toy_dir, tmp_path):
    """Rank 0 alone validates; the others take its early-stopping count and stop with it, at
    the same update. And a DDP wrapper still alive after destroy_process_group keeps the gloo
    group until interpreter shutdown, where its threads can abort the process (a rare CI
    failure: "terminate called without an active exception"): none is left."""
    sets = [*FAST, "train.lr=0", "train.valid_every=1", "train.patience=2", "train.max_steps=50"]
    script = tmp_path / "check.py"  # keeps the trainer, as the CLI does until it returns
    script.write_text(
        "import gc\n"
        "import os\n"
        "from pathlib import Path\n"
        "import torch\n"
        "from nmt.config import Config, apply_overrides\n"
        "from nmt.train import train\n"
        f"cfg = apply_overrides(Config(), {sets!r})\n"
        f"trainer, reason = train(cfg, Path({str(toy_dir)!r}), Path({str(tmp_path / 'run')!r}))\n"
        "DDP = torch.nn.parallel.DistributedDataParallel\n"
        "live = sum(isinstance(o, DDP) for o in gc.get_objects())\n"
        "line = f'step {trainer.progress.step}: {reason}; live DDP: {live}\\n'\n"
        "os.write(1, line.encode())  # one write: the ranks' lines never mix\n"
    )
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    out = subprocess.run(
        [*command, "--nproc-per-node=2", str(script)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    line = "step 3: no improvement in 2 validations (early stopping); live DDP: 0"
    assert out.stdout.count(line) == 2, out.stdout
