import mmap
import os

import pytest
import torch

from nmt.device import ONEDNN_CACHE, cpu_has_native_bf16, resolve_runtime
from nmt.errors import NmtError


def test_explicit_and_automatic_choices():
    assert resolve_runtime("cpu", "fp32").precision == "fp32"
    assert resolve_runtime("cpu", "bf16").precision == "bf16"
    auto = resolve_runtime("cpu", "auto")
    assert auto.device == torch.device("cpu")
    assert auto.precision == ("bf16" if cpu_has_native_bf16() else "fp32")


def test_autocast_context_follows_the_precision():
    with resolve_runtime("cpu", "bf16").autocast():
        assert torch.is_autocast_enabled("cpu")
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    with resolve_runtime("cpu", "fp32").autocast():
        assert not torch.is_autocast_enabled("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU messages")
def test_impossible_requests_are_clear_errors():
    with pytest.raises(NmtError, match="no GPU is visible"):
        resolve_runtime("cuda", "auto")
    with pytest.raises(NmtError, match="fp16 needs a GPU"):
        resolve_runtime("cpu", "fp16")
    with pytest.raises(NmtError, match="unknown device 'tpu9'"):
        resolve_runtime("tpu9", "auto")


def test_the_onednn_caches_are_bounded_unless_the_user_set_them(monkeypatch):
    monkeypatch.delenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", raising=False)
    monkeypatch.setenv("LRU_CACHE_CAPACITY", "64")
    resolve_runtime("cpu", "fp32")
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == str(ONEDNN_CACHE)
    assert os.environ["LRU_CACHE_CAPACITY"] == "64"


def test_memory_reports_the_resident_set_now_and_at_its_peak():
    before = resolve_runtime("cpu", "fp32").memory_mib()
    # 256 MiB of fresh pages, one byte written in each: a tensor could reuse heap pages that
    # an earlier test in this process freed but glibc kept resident
    block = mmap.mmap(-1, 256 * 2**20)
    for page in range(0, len(block), mmap.PAGESIZE):
        block[page] = 1
    during = resolve_runtime("cpu", "fp32").memory_mib()
    assert during["rss_mib"] - before["rss_mib"] >= 200
    assert during["peak_rss_mib"] >= during["rss_mib"] and "gpu_peak_mib" not in during
    block.close()
