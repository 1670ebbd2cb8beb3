"""Where translation time goes: the decoder step (for `luong`: its GRU and its attention apart),
the output layer with its softmax, the scoring around them (masks, rules, top-k), the beam
search's own bookkeeping, the encoder, and the rest of `translate` (subwords in and out,
batching). docs/notes/2026-12-04-search-profile.md has the figures.

    .venv/bin/python scripts/profile_search.py CHECKPOINT -i test.es.txt --lines 500 --beam 5

With --ops, PyTorch's operators instead (torch.profiler, each operator's own time): the matrix
products' share of the translation, and so the most that faster products (int8, a shortlist)
can give, products free: whole / (whole - products), Amdahl's bound
(docs/notes/2026-12-05-search-speed-bound.md). The same command run on older code, with
PYTHONPATH at its checkout, measures what a change started from.

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
from torch.profiler import ProfilerActivity
from torch.profiler import profile as torch_profile

import nmt.model.luong
from nmt.bench.report import bench_sentences
from nmt.decode.ensemble import Ensemble
from nmt.model.attention import MultiplicativeAttention
from nmt.model.luong import LuongDecoder
from nmt.model.seq2seq import Seq2Seq
from nmt.translate import Translator

# the operators that multiply matrices: the layers' (int8 and a shortlist make these faster)
# and the attention's
PRODUCTS = frozenset(
    {"aten::_int_mm", "aten::addmm", "aten::mm", "aten::bmm", "aten::baddbmm", "aten::mkldnn_rnn"}
)

# (part, the class or module whose method times it, the method, the part that calls it);
# SCORING: masks, rules and the top-k around the decoder step and the output layer
Part = tuple[str, Any, str, str | None]
TEXT, SEARCH, SCORING = "subwords in and out, batching", "search bookkeeping", "scoring: top-k"
STEP = "decoder step"
PARTS: list[Part] = [
    (TEXT, Translator, "translate_nbest", None),
    (SEARCH, Translator, "translate_prepared", TEXT),
    ("encoder", Seq2Seq, "encode", SEARCH),
    (SCORING, Ensemble, "topk", SEARCH),
    ("output layer + softmax", Seq2Seq, "log_probs", SCORING),
]
LUONG: list[Part] = [
    (STEP + ": GRU", nmt.model.luong, "run_gru", STEP),
    (STEP + ": attention", MultiplicativeAttention, "weights", STEP),
]


def parts_of(decoder: type) -> list[Part]:
    """Every part timed for a model with this decoder: its step, and for `luong` the step's
    GRU and attention apart."""
    return [*PARTS, (STEP, decoder, "step", SCORING), *(LUONG if decoder is LuongDecoder else [])]


@contextlib.contextmanager
def timers(parts: list[Part], totals: dict[str, float], calls: dict[str, int]) -> Iterator[None]:
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

    with contextlib.ExitStack() as stack:
        for part, owner, name, _ in parts:
            stack.enter_context(mock.patch.object(owner, name, clocked(part, getattr(owner, name))))
        yield


def profile(translator: Translator, lines: Sequence[str], beam: int, shortlist: bool) -> dict:
    """Each part's own seconds and share, the search steps and milliseconds per step."""
    parts = parts_of(type(translator.models[0].decoder))
    translator.translate(list(lines[:8]), beam=beam, shortlist=shortlist)  # warm-up
    totals: dict[str, float] = collections.defaultdict(float)
    calls: dict[str, int] = collections.defaultdict(int)
    with timers(parts, totals, calls):
        translator.translate(list(lines), beam=beam, shortlist=shortlist)
    own = dict(totals)
    for part, _, _, parent in parts:
        if parent is not None and part in totals:
            own[parent] -= totals[part]
    whole = totals[TEXT]
    rows = [
        {"part": part, "seconds": round(s, 3), "share": f"{100 * s / whole:.1f}%"}
        for part, s in own.items()
    ]
    steps = calls[SCORING]
    return {"rows": rows, "seconds": round(whole, 2), "steps": steps,
            "ms_per_step": round(1000 * totals[SCORING] / max(steps, 1), 3),
            "sentences_per_s": round(len(lines) / whole, 1)}  # fmt: skip


def operators(translator: Translator, lines: Sequence[str], beam: int, shortlist: bool) -> dict:
    """Each operator's own seconds over the translation of `lines` (most first), the products'
    sum, and the products-free bound on any speed-up of the products alone."""
    translator.translate(list(lines[:8]), beam=beam, shortlist=shortlist)  # warm-up
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        translator.translate(list(lines), beam=beam, shortlist=shortlist)
        whole = time.perf_counter() - start
    own = collections.Counter()
    for event in prof.key_averages():
        own[event.key] += event.self_cpu_time_total / 1e6
    products = sum(s for name, s in own.items() if name in PRODUCTS)
    return {"seconds": whole, "products": products, "bound": whole / max(whole - products, 1e-9),
            "ops": [{"op": name, "seconds": s} for name, s in own.most_common()]}  # fmt: skip


def print_operators(result: dict) -> None:
    """`operators`' result as a Markdown table (the 12 costliest) and a summary line."""
    whole, products = result["seconds"], result["products"]
    print("| operator | own seconds | share |\n|---|---|---|")
    for row in result["ops"][:12]:
        print(f"| {row['op']} | {row['seconds']:.3f} | {100 * row['seconds'] / whole:.1f}% |")
    print(f"\n{whole:.2f} s (profiled); products {products:.3f} s ({100 * products / whole:.1f}%); "
          f"products free: at most {result['bound']:.2f}x")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("-i", "--input", required=True, type=Path, help="source, a sentence a line")
    parser.add_argument("--lines", type=int, default=500)
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-shortlist", action="store_true", help="the full softmax")
    parser.add_argument("--precision", default="auto", help="auto, fp32, bf16 or int8")
    parser.add_argument("--ops", action="store_true", help="operators and the products' share")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    translator = Translator.from_checkpoint(args.checkpoint, "cpu", args.precision)
    lines = bench_sentences(args.input, args.lines)
    measure = operators if args.ops else profile
    result = measure(translator, lines, args.beam, not args.no_shortlist)
    if args.json:
        print(json.dumps(result, indent=1))
        return
    if args.ops:
        print_operators(result)
        return
    print("| part | seconds | share |\n|---|---|---|")
    for row in result["rows"]:
        print(f"| {row['part']} | {row['seconds']} | {row['share']} |")
    print(f"\n{result['seconds']} s, {result['sentences_per_s']} sentences/s, "
          f"{result['steps']} steps at {result['ms_per_step']} ms")  # fmt: skip


if __name__ == "__main__":
    main()
