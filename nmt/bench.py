"""Benchmarks: each returns rows, which the CLI prints as a table and writes as JSON.

Benchmarks are measurements, not tests: nothing here asserts a speed. Each row records what was
measured and on what, so that docs/benchmarks.md can quote the command and its figures.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nmt.data.batching import ParallelDataset, TokenBatchSampler, padding_share
from nmt.data.corpus import read_lines


def _repeat_corpus(tsv: Path, scale: int, out: Path) -> int:
    """Write `scale` copies of a TSV corpus (one header) to `out`; return the pair count."""
    lines = read_lines(tsv)
    header = next(lines)
    body = [line + "\n" for line in lines]
    with out.open("w", encoding="utf-8") as fh:
        fh.write(header + "\n")
        for _ in range(scale):
            fh.writelines(body)
    return len(body) * scale


def _run_measured(cmd: Sequence[str]) -> tuple[float, int]:
    """Run a command; return (wall seconds, peak resident memory in MiB) of that process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr.read().decode()}")
    proc.stderr.close()
    return seconds, usage.ru_maxrss // 1024  # Linux reports KiB


def bench_preprocess(
    corpus: Path, scales: Sequence[int], overrides: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """Pairs/s and peak RSS of `nmt preprocess` on the corpus repeated `scale` times.

    Each scale runs in its own process so that its peak memory is its own.
    """
    rows = []
    with tempfile.TemporaryDirectory(prefix="nmt-bench-") as tmp:
        tmp_dir = Path(tmp)
        header = next(read_lines(corpus)).split("\t")
        src, tgt = header[-2], header[-1]
        dev = tmp_dir / "dev.tsv"
        dev.write_text("\n".join(list(_take(read_lines(corpus), 501))) + "\n", encoding="utf-8")
        for scale in scales:
            train = tmp_dir / f"train.x{scale}.tsv"
            pairs = _repeat_corpus(corpus, scale, train)
            cmd = [
                sys.executable,
                "-m",
                "nmt",
                "preprocess",
                "--src",
                src,
                "--tgt",
                tgt,
                "--train",
                str(train),
                "--dev",
                str(dev),
                "--out",
                str(tmp_dir / f"out{scale}"),
            ]
            for item in overrides:
                cmd += ["--set", item]
            seconds, rss = _run_measured(cmd)
            rows.append(
                {
                    "scale": scale,
                    "pairs": pairs,
                    "seconds": round(seconds, 2),
                    "pairs_per_s": round(pairs / seconds),
                    "peak_rss_mib": rss,
                }
            )
            train.unlink()
    return rows


def _take(lines: Any, n: int) -> list[str]:
    return [line for _, line in zip(range(n), lines)]


def bench_batching(
    data_dir: Path, caps: Sequence[int], pools: Sequence[int], max_len: int = 200, seed: int = 1
) -> list[dict[str, Any]]:
    """Padding share and batch count of the training sampler for token caps and pool sizes."""
    ds = ParallelDataset(data_dir, "train", max_len=max_len)
    rows = []
    for cap in caps:
        for pool in pools:
            start = time.perf_counter()
            sampler = TokenBatchSampler(
                ds.src_sizes, ds.tgt_sizes, cap, indices=ds.indices, pool_size=pool, seed=seed
            )
            batches = sampler.batches(0)
            seconds = time.perf_counter() - start
            rows.append(
                {
                    "batch_tokens": cap,
                    "pool_size": pool,
                    "batches": len(batches),
                    "padding_pct": round(
                        100 * padding_share(batches, ds.src_sizes, ds.tgt_sizes), 2
                    ),
                    "epoch_plan_ms": round(1000 * seconds, 1),
                }
            )
    return rows


def environment() -> dict[str, Any]:
    """What the numbers were measured on."""
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def table(rows: Sequence[dict[str, Any]]) -> str:
    """Rows as a Markdown table (the format docs/benchmarks.md uses)."""
    if not rows:
        return "(no rows)"
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def write_report(
    out_dir: Path, name: str, rows: list[dict[str, Any]], settings: dict[str, Any]
) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    report = {"benchmark": name, "settings": settings, "environment": environment(), "rows": rows}
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return path
