"""Where translation time goes: the decoder step (for `luong`: its GRU and its attention apart),
the output layer with its softmax, the scoring around them (masks, rules, top-k), the beam
search's own bookkeeping, the encoder, and the rest of `translate` (subwords in and out,
batching). docs/notes/2026-12-04-search-profile.md has the figures.

    .venv/bin/python scripts/profile_search.py CHECKPOINT -i test.es.txt --lines 500 --beam 5

Wall clocks around the methods that do each part; on the CPU torch runs each operation before
returning, so a method's wall time is its work. A part's time excludes the parts it calls (its
"self" time), so the rows add up to the whole. Prints a Markdown table (or --json).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import json
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any
from unittest import mock

import torch

import nmt.model.luong
from nmt.bench.report import bench_sentences
from nmt.decode.ensemble import Ensemble
from nmt.model.luong import LuongDecoder
from nmt.model.seq2seq import Seq2Seq
from nmt.translate import Translator

# (part, the method it is timed by, the part that calls it); SCORING: masks, rules and the top-k
# around the decoder step and the output layer
TEXT, SEARCH, SCORING = "subwords in and out, batching", "search bookkeeping", "scoring: top-k"
PARTS: list[tuple[str, Any, str, str | None]] = [
    (TEXT, Translator, "translate_nbest", None),
    (SEARCH, Translator, "translate_prepared", TEXT),
    ("encoder", Seq2Seq, "encode", SEARCH),
    (SCORING, Ensemble, "topk", SEARCH),
    ("output layer + softmax", Seq2Seq, "log_probs", SCORING),
]
STEP = "decoder step"
LUONG = [("decoder step: GRU", nmt.model.luong, "run_gru"), ("decoder step: attention",
         LuongDecoder, "_attend")]  # fmt: skip


@contextlib.contextmanager
def timers(decoder: type, totals: dict[str, float], calls: dict[str, int]) -> Iterator[None]:
    """Patch every part's method with a wall clock that adds to totals[part]."""

    def clocked(part: str, fn: Callable) -> Callable:
        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                totals[part] += time.perf_counter() - start
                calls[part] += 1

        return run

    parts = [(p, owner, name) for p, owner, name, _ in PARTS] + [(STEP, decoder, "step")]
    parts += LUONG if decoder is LuongDecoder else []
    with contextlib.ExitStack() as stack:
        for part, owner, name in parts:
            stack.enter_context(mock.patch.object(owner, name, clocked(part, getattr(owner, name))))
        yield


def parent_of(part: str, luong: bool) -> str | None:
    if part == STEP:
        return SCORING
    if luong and part.startswith(STEP + ":"):
        return STEP
    return next(parent for p, _, _, parent in PARTS if p == part)


def profile(translator: Translator, lines: Sequence[str], beam: int, shortlist: bool) -> dict:
    """Each part's own seconds and share, the search steps and milliseconds per step."""
    decoder = type(translator.models[0].decoder)
    translator.translate(list(lines[:8]), beam=beam, shortlist=shortlist)  # warm-up
    totals: dict[str, float] = collections.defaultdict(float)
    calls: dict[str, int] = collections.defaultdict(int)
    with timers(decoder, totals, calls):
        translator.translate(list(lines), beam=beam, shortlist=shortlist)
    own = dict(totals)
    for part, seconds in totals.items():
        parent = parent_of(part, decoder is LuongDecoder)
        if parent is not None:
            own[parent] -= seconds
    whole = totals[PARTS[0][0]]
    rows = [
        {"part": part, "seconds": round(s, 3), "share": f"{100 * s / whole:.1f}%"}
        for part, s in own.items()
    ]
    steps = calls[SCORING]
    return {"rows": rows, "seconds": round(whole, 2), "steps": steps,
            "ms_per_step": round(1000 * totals[SCORING] / max(steps, 1), 3),
            "sentences_per_s": round(len(lines) / whole, 1)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("-i", "--input", required=True, type=Path, help="source, a sentence a line")
    parser.add_argument("--lines", type=int, default=500)
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-shortlist", action="store_true", help="the full softmax")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    translator = Translator.from_checkpoint(args.checkpoint, "cpu")
    lines = bench_sentences(args.input, args.lines)
    result = profile(translator, lines, args.beam, not args.no_shortlist)
    if args.json:
        print(json.dumps(result, indent=1))
        return
    print("| part | seconds | share |\n|---|---|---|")
    for row in result["rows"]:
        print(f"| {row['part']} | {row['seconds']} | {row['share']} |")
    print(f"\n{result['seconds']} s, {result['sentences_per_s']} sentences/s, "
          f"{result['steps']} steps at {result['ms_per_step']} ms")  # fmt: skip


if __name__ == "__main__":
    main()
