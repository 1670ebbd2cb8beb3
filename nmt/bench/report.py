"""What every benchmark shares: the rows' table and JSON report, the machine they were measured on,
the matrix-multiply ceiling that utilisation divides by, and the sentences translation decodes.

Benchmarks are measurements, not tests: nothing here asserts a speed. Each row records what was
measured and on what, so that docs/performance.md can quote the command and its figures.
"""

from __future__ import annotations

import functools
import itertools
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from nmt.data.corpus import read_lines
from nmt.device import cpu_bf16_features
from nmt.errors import NmtError
from nmt.fileio import atomic_write_json


def bench_sentences(path: Path, n: int) -> list[str]:
    """The first n non-empty lines of `path`: what the translation benchmarks decode."""
    lines = list(itertools.islice((line for line in read_lines(path) if line.strip()), n))
    if not lines:
        raise NmtError("no sentence to measure: the file has no non-empty line", str(path))
    return lines


def bench_pairs(path: Path, reference: Path | None, n: int) -> tuple[list[str], list[str] | None]:
    """`bench_sentences`, and the reference's lines beside them (None without a reference),
    for the BLEU that a speed is reported with."""
    lines = bench_sentences(path, n)
    if reference is None:
        return lines, None
    sources, targets = list(read_lines(path)), list(read_lines(reference))
    if len(sources) != len(targets):
        raise NmtError(
            f"the reference has {len(targets):,} lines and the input {len(sources):,}",
            str(reference),
            "give the reference translation of --input, line by line",
        )
    return lines, [t for s, t in zip(sources, targets) if s.strip()][: len(lines)]


def environment() -> dict[str, Any]:
    """What the numbers were measured on."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "cpu_bf16": list(cpu_bf16_features()),
        **onednn_bf16(),
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


@functools.cache
def onednn_bf16() -> dict[str, str]:
    """The instruction set oneDNN dispatches to on this CPU and the kernel that runs a bf16
    matrix product (its name says `amx` where AMX is in use), from ONEDNN_VERBOSE in a child
    process: oneDNN reads the variable once, when it starts."""
    code = "import torch; a = torch.ones(64, 64, dtype=torch.bfloat16); a @ a"
    env = {**os.environ, "ONEDNN_VERBOSE": "1"}
    try:
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    found = {}
    for line in out.splitlines():
        fields = line.split(",")
        if ",cpu,isa:" in line:
            found["onednn_isa"] = line.split("isa:", 1)[1]
        elif fields[2:6] == ["primitive", "exec", "cpu", "matmul"]:
            found["onednn_bf16_matmul"] = fields[6]
    return found


def table(rows: Sequence[dict[str, Any]]) -> str:
    """Rows as a Markdown table (the format docs/performance.md uses)."""
    if not rows:
        return "(no rows)"
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def write_report(
    out_dir: Path, name: str, rows: list[dict[str, Any]], settings: dict[str, Any]
) -> Path:
    path = Path(out_dir) / f"{name}.json"
    report = {"benchmark": name, "settings": settings, "environment": environment(), "rows": rows}
    atomic_write_json(path, report)
    return path


def matmul_ceiling(
    dtype: torch.dtype, device: torch.device, size: int = 2048, seconds: float = 1.0
) -> float:
    """FLOP/s of a size x size matrix product: the hardware ceiling utilisation is measured
    against, taken in the same process as the measurement it divides."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        n += 1
    sync(device)
    return 2 * size**3 * n / (time.perf_counter() - start)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cpu_columns() -> dict[str, str]:
    """What a CPU row's bf16 figures depend on: the CPU's bf16 features and oneDNN's kernel."""
    return {
        "cpu_bf16": "+".join(cpu_bf16_features()) or "none",
        "onednn_bf16_matmul": onednn_bf16().get("onednn_bf16_matmul", "unknown"),
    }
