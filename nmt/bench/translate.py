"""`nmt bench translate`: sentences/s batched at several sizes against one at a time."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nmt.bench.report import bench_sentences, cpu_columns


def _timed_translation(
    translator: Any, calls: list[list[str]], beam: int, batch_tokens: int | None = None
) -> dict:
    """Translate each list of `calls` with one call; seconds, sentences/s, output tokens/s."""
    start = time.perf_counter()
    results = [
        r
        for lines in calls
        for r in translator.translate_nbest(lines, beam, batch_tokens=batch_tokens)
    ]
    seconds = time.perf_counter() - start
    tokens = sum(len(r.hypotheses[0].pieces) + 1 for r in results if r.source_pieces)
    return {
        "seconds": round(seconds, 2),
        "sentences_per_s": round(len(results) / seconds, 1),
        "tokens_per_s": round(tokens / seconds),
    }


def bench_translate(
    checkpoint: Path,
    input_path: Path,
    n_lines: int,
    beams: Sequence[int],
    batch_tokens: Sequence[int],
    device: str,
    precision: str,
) -> list[dict[str, Any]]:
    """Per beam size: the whole file decoded in length-sorted batches of each size, then the
    same sentences one at a time (one call per sentence, as a naive loop would), in one process.
    `vs one at a time` is the batched rate over the one-at-a-time rate of the same beam."""
    from nmt.translate import Translator

    lines = bench_sentences(input_path, n_lines)
    translator = Translator.from_checkpoint(checkpoint, device, precision)
    translator.translate(lines[:8])  # warm-up: allocator, kernels, weight caches
    rows = []
    for beam in beams:
        batched = [
            {"beam": beam, "mode": f"batched, {size} tokens"}
            | _timed_translation(translator, [lines], beam, size)
            for size in batch_tokens
        ]
        single = _timed_translation(translator, [[line] for line in lines], beam)
        for row in [*batched, single]:
            row["vs one at a time"] = f"{row['sentences_per_s'] / single['sentences_per_s']:.1f}x"
        rows += [*batched, {"beam": beam, "mode": "one at a time"} | single]
    for row in rows:
        row.update(precision=translator.runtime.precision, device=str(translator.runtime.device))
        row.update(cpu_columns() if translator.runtime.device.type == "cpu" else {})
    return rows
