"""`nmt bench translate`: sentences/s batched at several sizes against one at a time, for each
search setting (precision, a compiled step, the full softmax or the lexical shortlist), with
BLEU beside the speed."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nmt.bench.report import bench_pairs, cpu_columns
from nmt.evaluate import corpus_metrics


def _timed_translation(
    translator: Any, calls: list[list[str]], beam: int, shortlist: bool, batch_tokens: int | None
) -> tuple[dict, list[str]]:
    """Translate each list of `calls` with one call: seconds, sentences/s, output tokens/s;
    and the translations, for BLEU."""
    start = time.perf_counter()
    results = [
        r
        for lines in calls
        for r in translator.translate_nbest(
            lines, beam, batch_tokens=batch_tokens, shortlist=shortlist
        )
    ]
    seconds = time.perf_counter() - start
    tokens = sum(len(r.hypotheses[0].pieces) + 1 for r in results if r.source_pieces)
    texts = [r.hypotheses[0].text if r.hypotheses else "" for r in results]
    speed = {
        "seconds": round(seconds, 2),
        "sentences_per_s": round(len(results) / seconds, 1),
        "tokens_per_s": round(tokens / seconds),
    }
    return speed, texts


def _warm_up(translator: Any, lines: list[str], shortlists: Sequence[bool]) -> float:
    """Seconds of a first translation with each shortlist setting: the allocator, kernels,
    weight caches, compiling."""
    start = time.perf_counter()
    for shortlist in shortlists:
        translator.translate(lines[:8], shortlist=shortlist)
    return round(time.perf_counter() - start, 1)


def bench_translate(
    checkpoint: Path,
    input_path: Path,
    n_lines: int,
    beams: Sequence[int],
    batch_tokens: Sequence[int],
    device: str,
    precisions: Sequence[str],
    shortlists: Sequence[bool] | None = None,
    reference: Path | None = None,
    compiles: Sequence[bool] = (False,),
) -> list[dict[str, Any]]:
    """Per beam size and per way of running it (the whole file in length-sorted batches of
    each size, then one call per sentence, as a naive loop would), each setting (precision x
    compiled step x shortlist) in turn, so that the settings compared are measured side by side
    in one process. `vs one at a time` is a row's rate over the one-at-a-time rate of its beam
    and setting; `warm-up s` is the first call's time (a compiled step's compiling). Shortlist
    settings: None means both where the checkpoint has a shortlist, else the full softmax."""
    from nmt.translate import Translator
    from nmt.translate.options import check_model_options

    lines, refs = bench_pairs(input_path, reference, n_lines)
    kinds = [(p, c) for p in precisions for c in compiles]
    translators = {(p, c): Translator.from_checkpoint(checkpoint, device, p, c) for p, c in kinds}
    first = translators[kinds[0]]
    if shortlists is None:
        shortlists = [False, True] if first.shortlist is not None else [False]
    check_model_options(first, False, None, shortlist=any(shortlists))
    settings = [(*kind, shortlist) for kind in kinds for shortlist in shortlists]
    warm_up = {kind: _warm_up(t, lines, shortlists) for kind, t in translators.items()}
    runs = [(f"batched, {size} tokens", [lines], size) for size in batch_tokens]
    runs.append(("one at a time", [[line] for line in lines], None))
    rows = []
    for beam in beams:
        single: dict[tuple[str, bool, bool], float] = {}
        for mode, calls, size in runs:
            for precision, compiled, shortlist in settings:
                translator = translators[precision, compiled]
                speed, texts = _timed_translation(translator, calls, beam, shortlist, size)
                row = {"beam": beam, "mode": mode, "precision": translator.runtime.precision}
                row["compile"] = "on" if compiled else "off"
                row["shortlist"] = "on" if shortlist else "off"
                if refs is not None:
                    row["bleu"] = round(corpus_metrics(texts, [refs], ("bleu",))[0].score, 2)
                row |= speed | {"warm-up s": warm_up[precision, compiled]}
                rows.append(row | {"setting": (precision, compiled, shortlist)})
                if size is None:
                    single[precision, compiled, shortlist] = speed["sentences_per_s"]
        for row in rows[-len(runs) * len(settings) :]:
            rate = single[row.pop("setting")]
            row["vs one at a time"] = f"{row['sentences_per_s'] / rate:.1f}x"
    for row in rows:
        row["device"] = str(first.runtime.device)
        row.update(cpu_columns() if first.runtime.device.type == "cpu" else {})
    return rows
