"""Device and numeric precision, decided in one place.

`Runtime` answers: which device, which autocast dtype, whether to scale gradients, and on a
CPU how many threads to use (`nmt.threads`). Training, validation and translation all take
their device and precision from here.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import resource
import sys
from dataclasses import dataclass, field

import torch

from nmt.errors import NmtError
from nmt.threads import CoreShare, core_share

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    precision: str  # fp32 | bf16 | fp16 | int8 (translation on a CPU)
    cores: CoreShare | None = field(default=None, compare=False)  # CPU threads that adapt

    def share_cores(self) -> None:
        """On a CPU, follow the cores other processes leave free (cheap: call it often)."""
        if self.cores is not None:
            self.cores.adjust()

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed precision for the forward pass (a no-op in fp32). int8 (translation on a
        CPU: `nmt.model.int8`) runs what it does not quantise as `auto` would."""
        precision = self.precision
        if precision == "int8":
            precision = "bf16" if cpu_has_native_bf16() else "fp32"
        if precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=_DTYPES[precision])

    def memory_mib(self) -> dict[str, int]:
        """Memory in use now and at its peak, in MiB: this process's resident set (the figure
        that decides whether a run fits the machine) and, on a GPU, its peak allocation."""
        memory = host_memory_mib()
        if self.device.type == "cuda":
            memory["gpu_peak_mib"] = round(torch.cuda.max_memory_allocated(self.device) / 2**20)
        return memory

    def grad_scaler(self) -> torch.amp.GradScaler:
        """Loss scaling, needed for fp16 only (bf16 has fp32's range)."""
        return torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")


def host_memory_mib() -> dict[str, int]:
    """This process's resident memory at its peak (getrusage) and now (/proc, Linux only)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB; bytes on macOS
    memory = {"peak_rss_mib": round(peak / (2**20 if sys.platform == "darwin" else 2**10))}
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            pages = int(fh.read().split()[1])
        memory["rss_mib"] = round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20)
        memory["peak_rss_mib"] = max(memory["peak_rss_mib"], memory["rss_mib"])  # lags a little
    except (OSError, ValueError, IndexError):
        pass
    return memory


BF16_FLAGS = ("avx512_bf16", "amx_bf16", "amx_tile")  # /proc/cpuinfo names


def memory_error(exc: RuntimeError) -> NmtError | None:
    """Running out of GPU or host memory as a user-facing error that says what to lower, or
    None for any other RuntimeError. (torch raises `OutOfMemoryError` for CUDA; the CPU
    allocator raises a plain RuntimeError that says it cannot allocate.)"""
    if isinstance(exc, torch.OutOfMemoryError):
        what, where = "out of GPU memory", "the GPU"
    elif "can't allocate memory" in str(exc):
        what, where = "out of memory", "this machine"
    else:
        return None
    detail = str(exc).splitlines()[0] if str(exc) else ""
    return NmtError(
        f"{what} ({detail})" if detail else what,
        where,
        "make the batches smaller (train.batch_tokens to train; --batch-tokens to translate, "
        "score or serve) or the model (model.hidden_size, model.emb_size), or use bf16 "
        "(--precision bf16)",
    )


@functools.cache
def cpu_bf16_features() -> tuple[str, ...]:
    """The CPU's bf16 features, of `BF16_FLAGS`: AVX512-BF16 and AMX's tiles (amx_bf16 with
    amx_tile) multiply bf16 faster than fp32 (docs/notes/2026-11-28-bf16-without-amx.md)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            flags = next((line for line in fh if line.startswith("flags")), "").split()
    except OSError:
        return ()
    return tuple(flag for flag in BF16_FLAGS if flag in flags)


def cpu_has_native_bf16() -> bool:
    """Whether the CPU multiplies bf16 in hardware (AVX512-BF16 or AMX); without it bf16 is
    emulated and slower than fp32. Native bf16 gives the same loss per update and more updates
    per minute (docs/notes/2026-11-24-fp32-against-bf16.md), so `auto` picks it."""
    return bool(cpu_bf16_features())


@functools.cache
def keep_freed_memory() -> bool:
    """Ask glibc to keep freed blocks of up to 1 GiB instead of returning them to the OS.

    Training allocates and frees the same large buffers every step; by default glibc serves
    blocks over 32 MiB with fresh mmap()s, so every step pays page faults to zero them again
    (a measurable share of a CPU training step). Peak memory is unchanged; memory is
    simply not handed back between steps. Linux/glibc only; elsewhere nothing happens.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    return all(
        libc.mallopt(option, value) == 1
        for option, value in (
            (m_mmap_threshold, 1 << 30),
            (m_trim_threshold, (1 << 31) - 1),
            (m_top_pad, 1 << 28),
        )
    )


ONEDNN_CACHE = 8  # entries kept in oneDNN's and in ideep's caches (their default: 1,024)


def bound_onednn_cache() -> None:
    """Keep few oneDNN primitives, and few of ideep's (PyTorch's layer over oneDNN). In bf16
    on the CPU both cache one entry per matrix-product shape, with reordered weights and
    scratch memory, and batches come in many shapes: with the defaults (1,024 each) resident
    memory grows several-fold, and bounding both costs no speed, in training or in beam search
    (docs/notes/2026-11-27-demo-memory-onednn-ideep-caches.md). Both libraries read their
    setting when they first build a product; a value the user set in the environment wins."""
    for variable in ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY"):
        os.environ.setdefault(variable, str(ONEDNN_CACHE))


def resolve_runtime(
    device: str | None = None,
    precision: str = "auto",
    source: str = "--precision",
    threads: int = 0,
    int8: bool = False,
) -> Runtime:
    """CUDA when available (unless `device` says otherwise), and the precision that suits it.
    `source` names where the precision came from, for errors. On a CPU, `threads` fixes the
    intra-op threads; 0 lets them follow the free cores. `int8` admits that precision
    (translation only)."""
    if device in (None, "", "auto"):
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise NmtError(
            f"unknown device {device!r}", "--device", "use cpu, cuda, cuda:N or auto"
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise NmtError(
            "CUDA was asked for but no GPU is visible",
            "--device",
            "use --device cpu, or check the driver and CUDA_VISIBLE_DEVICES",
        )
    known = ("auto", "fp32", *_DTYPES, *(("int8",) if int8 else ()))
    if precision not in known:
        fix = f"use {', '.join(known[:-1])} or {known[-1]}"
        if precision == "int8":
            fix = "int8 is for translating (nmt translate, serve): train in auto, fp32 or bf16"
        raise NmtError(f"unknown precision {precision!r}", source, fix)
    if precision == "int8" and dev.type != "cpu":
        raise NmtError("int8 runs on a CPU", source, "use --device cpu, or auto on a GPU")
    if precision == "auto":
        if dev.type == "cuda":
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            precision = "bf16" if cpu_has_native_bf16() else "fp32"
    if precision == "fp16" and dev.type != "cuda":
        raise NmtError("fp16 needs a GPU", source, "use bf16 or fp32 on a CPU")
    if dev.type == "cpu":
        keep_freed_memory()
        bound_onednn_cache()
        return Runtime(dev, precision, core_share(threads))
    if precision == "fp32":
        strict_fp32()
    return Runtime(dev, precision)


def strict_fp32() -> None:
    """fp32 on a GPU means fp32: PyTorch lets cuDNN's GRUs run fp32 in TF32 by default (a
    10-bit mantissa), which would make "fp32" differ from the CPU's fp32 beyond rounding;
    bf16 is the precision to choose for speed."""
    rnn = getattr(torch.backends.cudnn, "rnn", None)
    if rnn is not None and hasattr(rnn, "fp32_precision"):
        rnn.fp32_precision = "ieee"
    else:  # torch before 2.9
        torch.backends.cudnn.allow_tf32 = False
