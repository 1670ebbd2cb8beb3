"""Decoding prepared lines: a running beam search that lines join and leave at any step
(`TranslationBatch`, continuous batching), or one batch of lines sampled (`sample_lines`). Both
constrain the search to keep every placeholder (`Translator.constraints`) and hand back each
line's `Result`."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING

import torch

from nmt.decode.beam import BeamBatch
from nmt.decode.greedy import greedy_search
from nmt.decode.hypothesis import Hypothesis, length_penalty
from nmt.translate.inputs import Prepared, prefix_tensor, source_tensors
from nmt.translate.options import DecodeOptions
from nmt.translate.outputs import Result

if TYPE_CHECKING:
    from nmt.translate.translator import Translator


class TranslationBatch:
    """Prepared lines in one running beam search (`nmt.decode.BeamBatch`): lines join with
    `add` while others are being decoded, and `step` hands back each line's result as soon as its
    search is done. `translate_prepared` and the server's scheduler both decode through it.

    It is a context: the runtime's precision holds from `with` to its end, on the thread that
    entered it. Autocast forgets its casts of the weights when its context exits, so entered
    per step it would cast the output layer anew at every step, a large share of a step
    (docs/notes/2026-11-28-serving-under-load.md)."""

    def __init__(self, translator: Translator, options: DecodeOptions):
        self.translator, self.options = translator, options
        dc = translator.cfg.decode
        self.search = BeamBatch(
            translator.models,
            beam=options.beam,
            nbest=options.beam if translator.symbols else options.nbest,
            alpha=options.alpha,
            penalty=options.penalty,
            max_len_a=dc.max_len_a,
            max_len_b=dc.max_len_b,
            attention=options.attention,
        )
        self.items: dict[Hashable, Prepared] = {}
        self.tokens = 0  # source subwords (with eos) of the lines in the search
        self._context = contextlib.ExitStack()

    def __enter__(self) -> TranslationBatch:
        self._context.enter_context(self.translator.runtime.autocast())
        return self

    def __exit__(self, *exc: object) -> None:
        self._context.close()

    def __len__(self) -> int:
        return len(self.items)

    @torch.no_grad()
    def add(self, keys: Sequence[Hashable], items: Sequence[Prepared]) -> None:
        """Non-empty lines join the search; `step` hands each back under its key."""
        runtime = self.translator.runtime
        src, lengths = source_tensors(items, runtime.device)
        batch = [item.ids for item in items]
        constraints = self.translator.constraints(batch, [item.masked for item in items])
        runtime.share_cores()
        self.search.add(keys, src, lengths, constraints, prefix_tensor(items))
        self.items.update(zip(keys, items))
        self.tokens += int(lengths.sum())

    def step(self) -> list[tuple[Hashable, Result]]:
        """One search step; the lines it finished, with their results."""
        return [(key, self._result(key, hyps)) for key, hyps in self.search.step()]

    def drop(self, keys: Sequence[Hashable]) -> None:
        """Take lines out unfinished."""
        self.search.drop(keys)
        for key in keys:
            self._forget(key)

    def _result(self, key: Hashable, hyps: list[Hypothesis]) -> Result:
        item = self._forget(key)
        return self.translator.result(item, hyps, self.options.nbest)

    def _forget(self, key: Hashable) -> Prepared:
        item = self.items.pop(key)
        self.tokens -= len(item.ids) + 1
        return item


@torch.no_grad()
def sample_lines(
    translator: Translator, items: list[Prepared], options: DecodeOptions
) -> list[Result]:
    """One translation drawn per line of one batch (`nmt.decode.sampling`), scored like a search's
    hypothesis."""
    src, lengths = source_tensors(items, translator.runtime.device)
    masked = [item.masked for item in items]
    constraints = translator.constraints([item.ids for item in items], masked)
    lines = torch.tensor([item.line for item in items])
    dc, runtime = translator.cfg.decode, translator.runtime
    runtime.share_cores()
    with runtime.autocast():
        outputs, totals = greedy_search(
            translator.models, src, lengths, dc.max_len_a, dc.max_len_b, constraints,
            options.sampler, lines, prefix_tensor(items),
        )  # fmt: skip
    results = []
    for item, tokens, total in zip(items, outputs, totals.tolist()):
        score = total / length_penalty(len(tokens) + 1, options.penalty, options.alpha)
        hyps = [Hypothesis(tokens, score)] if math.isfinite(score) else []
        results.append(translator.result(item, hyps, 1))
    return results
