"""Decoding prepared lines: a running beam search that lines join and leave at any step
(`TranslationBatch`, continuous batching), or one batch of lines sampled (`sample_lines`). Both
constrain the search to keep every placeholder (`Translator.constraints`) and hand back each
line's `Result`. A line split into parts (`Prepared.parts`) is searched as its parts, next to the
other lines; its result, their translations joined, comes once its last part is done."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
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


@dataclass(frozen=True)
class _Part:
    """The search's key of one part of a split line (`key`: the line's)."""

    key: Hashable
    index: int


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
        self._parts: dict[Hashable, list[list[Hypothesis] | None]] = {}  # split lines' so far
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
        """Non-empty lines join the search (a split line as its parts); `step` hands each back
        under its key."""
        runtime = self.translator.runtime
        search_keys: list[Hashable] = []
        parts: list[Prepared] = []
        for key, item in zip(keys, items):
            pieces = item.parts()
            if item.cuts:
                self._parts[key] = [None] * len(pieces)
                search_keys += [_Part(key, k) for k in range(len(pieces))]
            else:
                search_keys.append(key)
            parts += pieces
        src, lengths = source_tensors(parts, runtime.device)
        batch = [part.ids for part in parts]
        constraints = self.translator.constraints(batch, [part.masked for part in parts])
        runtime.share_cores()
        vocab = self.translator.vocab(src, self.options)
        self.search.add(search_keys, src, lengths, constraints, prefix_tensor(parts), vocab)
        self.items.update(zip(keys, items))
        self.tokens += int(lengths.sum())

    def step(self) -> list[tuple[Hashable, Result]]:
        """One search step; the lines it finished (a split line: its last part), with their
        results."""
        done = []
        for key, hyps in self.search.step():
            if not isinstance(key, _Part):
                item = self._forget(key)
                done.append((key, self.translator.result(item, hyps, self.options.nbest)))
                continue
            got = self._parts[key.key]
            got[key.index] = hyps
            if all(part is not None for part in got):
                item = self._forget(key.key)
                parts = [part for part in got if part is not None]
                done.append((key.key, self.translator.joined(item, parts, self.options)))
        return done

    def drop(self, keys: Sequence[Hashable]) -> None:
        """Take lines out unfinished."""
        searched: list[Hashable] = []
        for key in keys:
            parts = self._parts.get(key)
            if parts is None:
                searched.append(key)
            else:  # the parts still in the search
                searched += [_Part(key, k) for k, hyps in enumerate(parts) if hyps is None]
        self.search.drop(searched)
        for key in keys:
            self._forget(key)

    def _forget(self, key: Hashable) -> Prepared:
        item = self.items.pop(key)
        self._parts.pop(key, None)
        self.tokens -= len(item.ids) + len(item.cuts) + 1  # each part has its eos
        return item


@torch.no_grad()
def sample_lines(
    translator: Translator, items: list[Prepared], options: DecodeOptions
) -> list[Result]:
    """One translation drawn per line of one batch (`nmt.decode.sampling`), scored like a search's
    hypothesis; a split line's parts are drawn (with its line's draws) and joined."""
    parts = [part for item in items for part in item.parts()]
    src, lengths = source_tensors(parts, translator.runtime.device)
    masked = [part.masked for part in parts]
    constraints = translator.constraints([part.ids for part in parts], masked)
    lines = torch.tensor([part.line for part in parts])
    dc, runtime = translator.cfg.decode, translator.runtime
    runtime.share_cores()
    with runtime.autocast():
        outputs, totals = greedy_search(
            translator.models, src, lengths, dc.max_len_a, dc.max_len_b, constraints,
            options.sampler, lines, prefix_tensor(parts), translator.vocab(src, options),
        )  # fmt: skip
    drawn = []
    for tokens, total in zip(outputs, totals.tolist()):
        score = total / length_penalty(len(tokens) + 1, options.penalty, options.alpha)
        drawn.append([Hypothesis(tokens, score)] if math.isfinite(score) else [])
    results = []
    for item in items:
        hyps, drawn = drawn[: len(item.cuts) + 1], drawn[len(item.cuts) + 1 :]
        if item.cuts:
            results.append(translator.joined(item, hyps, options))
        else:
            results.append(translator.result(item, hyps[0], 1))
    return results
