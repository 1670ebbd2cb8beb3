"""The CUDA branches that can be reached without a GPU, through a mocked `torch.cuda`: what the
runtime picks, what it reports, the RNG states a checkpoint carries, and running out of memory.
(The paths that need a real GPU are in tests/test_devices.py, run by `make gpu-check`.)"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from nmt.cli import app
from nmt.device import Runtime, resolve_runtime
from nmt.distributed import Dist
from nmt.train.state import restore_rng


@pytest.fixture
def fake_gpu(monkeypatch):
    """torch.cuda as it answers on a machine with one GPU; the settable answers in a dict."""
    answers = {"bf16": True, "peak": 0, "rng": None}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: answers["bf16"])
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: answers["peak"])
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: ["cuda-state"])
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda s: answers.update(rng=s))
    return answers


@pytest.mark.parametrize(("bf16", "expected"), [(True, "bf16"), (False, "fp16")])
def test_auto_picks_the_gpu_and_a_precision_it_has(fake_gpu, bf16, expected):
    fake_gpu["bf16"] = bf16
    runtime = resolve_runtime("auto", "auto")
    assert runtime.device == torch.device("cuda") and runtime.precision == expected
    assert runtime.cores is None  # the CPU thread share is a CPU matter
    assert resolve_runtime("cuda:0", "fp16").precision == "fp16"  # fp16 is allowed on a GPU
    assert resolve_runtime("cpu", "auto").device == torch.device("cpu")  # asked for: the CPU


def test_fp32_on_a_gpu_is_fp32_not_tf32(fake_gpu, monkeypatch):
    """cuDNN's GRUs would run "fp32" in TF32 by default: nmt turns that off for fp32 runs."""
    rnn = torch.backends.cudnn.rnn
    monkeypatch.setattr(rnn, "fp32_precision", "tf32")  # restored after the test
    resolve_runtime("cuda", "bf16")
    assert rnn.fp32_precision == "tf32"  # bf16 runs are left as they are
    resolve_runtime("cuda", "fp32")
    assert rnn.fp32_precision == "ieee"


def test_memory_reports_the_gpu_peak_beside_the_host(fake_gpu):
    fake_gpu["peak"] = 3 * 2**20
    memory = Runtime(torch.device("cuda", 0), "bf16").memory_mib()
    assert memory["gpu_peak_mib"] == 3 and memory["peak_rss_mib"] > 0


def test_a_checkpoint_carries_and_restores_the_gpu_rng_states(fake_gpu):
    saved = {"cpu": torch.get_rng_state(), "cuda": ["saved-cuda-state"]}
    restore_rng([saved], Dist(), seed=1, step=10)
    assert fake_gpu["rng"] == ["saved-cuda-state"]
    fake_gpu["rng"] = None
    restore_rng([{"cpu": torch.get_rng_state()}], Dist(), seed=1, step=10)  # saved on a CPU
    assert fake_gpu["rng"] is None


GPU_OOM = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
HOST_OOM = RuntimeError("[enforce fail] DefaultCPUAllocator: can't allocate memory: 12 TB")


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (GPU_OOM, "the GPU: out of GPU memory (CUDA out of memory. Tried to allocate 20.00 GiB)"),
        (HOST_OOM, "this machine: out of memory ([enforce fail"),
    ],
)
def test_running_out_of_memory_is_an_error_that_says_what_to_lower(monkeypatch, error, message):
    def exhausted(*args, **kwargs):
        raise error

    monkeypatch.setattr("nmt.evaluate.file_metrics", exhausted)
    result = CliRunner().invoke(app, ["evaluate", "hyp.txt", "ref.txt"])
    assert result.exit_code == 2 and result.exception is not None
    assert f"error: {message}" in result.output
    assert "fix: make the batches smaller (train.batch_tokens" in result.output


def test_other_runtime_errors_still_surface(monkeypatch):
    """Only memory errors are translated: a bug must not hide behind an error line."""

    def broken(*args, **kwargs):
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr("nmt.evaluate.file_metrics", broken)
    result = CliRunner().invoke(app, ["evaluate", "hyp.txt", "ref.txt"])
    assert isinstance(result.exception, RuntimeError) and "error:" not in result.output


def test_the_command_line_loads_no_torch_until_a_command_needs_it():
    """`nmt --help` and option errors stay fast: the CLI imports the library in its commands."""
    code = "import sys, nmt.cli; assert 'torch' not in sys.modules, 'nmt.cli imported torch'"
    subprocess.run([sys.executable, "-c", code], check=True)
