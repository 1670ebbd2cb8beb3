"""`nmt bench preprocess`: pairs/s and peak memory of `nmt preprocess` at several corpus sizes."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nmt.data.corpus import read_lines


def _generate_corpus(tsv: Path, pairs: int, out: Path) -> None:
    """Write a TSV corpus of exactly `pairs` pairs: the rows of `tsv` cycled, numbered so that
    no two are equal (deduplication and SentencePiece's sampling see a corpus of that size)."""
    lines = read_lines(tsv)
    header = next(lines)
    rows = [line.split("\t")[-2:] for line in lines]
    with out.open("w", encoding="utf-8") as fh:
        fh.write("\t".join(header.split("\t")[-2:]) + "\n")
        for start in range(0, pairs, len(rows)):
            cycle = start // len(rows)
            fh.writelines(
                f"{src} ({cycle})\t{tgt} ({cycle})\n" for src, tgt in rows[: pairs - start]
            )


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
    corpus: Path, sizes: Sequence[int], overrides: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """Pairs/s and peak memory of `nmt preprocess` on corpora of `sizes` pairs made from `corpus`.

    Each size runs in its own process, so that its peak memory is its own: the largest resident
    set of that process and of the worker processes it waited for (wait4's ru_maxrss).
    """
    rows = []
    with tempfile.TemporaryDirectory(prefix="nmt-bench-") as tmp:
        tmp_dir = Path(tmp)
        header = next(read_lines(corpus)).split("\t")
        src, tgt = header[-2], header[-1]
        dev = tmp_dir / "dev.tsv"
        dev.write_text(
            "\n".join(itertools.islice(read_lines(corpus), 501)) + "\n", encoding="utf-8"
        )
        for pairs in sizes:
            train = tmp_dir / f"train.{pairs}.tsv"
            _generate_corpus(corpus, pairs, train)
            cmd = [sys.executable, "-m", "nmt", "preprocess", "--src", src, "--tgt", tgt]
            cmd += ["--train", str(train), "--dev", str(dev), "--out", str(tmp_dir / f"out{pairs}")]
            for item in overrides:
                cmd += ["--set", item]
            seconds, rss = _run_measured(cmd)
            rows.append(
                {
                    "pairs": pairs,
                    "seconds": round(seconds, 2),
                    "pairs_per_s": round(pairs / seconds),
                    "peak_rss_mib": rss,
                }
            )
            train.unlink()
            shutil.rmtree(tmp_dir / f"out{pairs}")
    return rows
