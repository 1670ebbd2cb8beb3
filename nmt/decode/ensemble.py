"""One decoder step of one model or an ensemble: the k best next tokens that a rule allows.

Greedy search, beam search, sampling and validation all step through `Ensemble.topk`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import torch

from nmt.data.tokenizer import BOS_ID, EOS_ID, PAD_ID
from nmt.decode.constraints import StepRule
from nmt.decode.shortlist import Columns, Subset, expand
from nmt.model import DecoderState, Seq2Seq

CPU_SCORES_PER_PASS = 1 << 20  # scores computed, normalised and searched at once on the CPU
TOP_BLOCK = 64  # pieces per block of `top_k`
TOP_BLOCK_ROWS = 16  # `top_k` by blocks from this many rows (fewer: as fast, in fewer ops)


class Ensemble:
    """Several models with one vocabulary decoding together: per step, the mean of their
    log-probabilities and of their attention weights. One model is an ensemble of one."""

    def __init__(self, models: Seq2Seq | Sequence[Seq2Seq]):
        self.models = [models] if isinstance(models, Seq2Seq) else list(models)
        self.has_attention = any(m.cfg.arch != "rnnenc" for m in self.models)
        # scores are accumulated in float32, or float64 for a float64 model
        self.dtype = torch.promote_types(next(self.models[0].parameters()).dtype, torch.float32)
        self.vocab = self.models[0].output.out_features

    def encode(self, src: torch.Tensor, src_lengths: torch.Tensor) -> list[DecoderState]:
        """Each model's initial state, in the form its steps take (`Seq2Seq.search_state`);
        under autocast the source side is stored in the autocast dtype once, instead of being
        cast again at every step."""
        states = [model.encode(src, src_lengths) for model in self.models]
        device = src.device.type
        if torch.is_autocast_enabled(device):
            dtype = torch.get_autocast_dtype(device)

            def cast(x: torch.Tensor | None) -> torch.Tensor | None:
                return None if x is None else x.to(dtype)

            states = [
                dataclasses.replace(s, memory=cast(s.memory), keys=cast(s.keys)) for s in states
            ]
        return [model.search_state(s) for model, s in zip(self.models, states)]

    def topk(
        self,
        y_prev: torch.Tensor,
        states: list[DecoderState],
        k: int,
        rule: StepRule,
        keys: Callable[[torch.Tensor, slice], torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, list[DecoderState], torch.Tensor | None]:
        """The k most probable next tokens after y_prev [N] that `rule` allows:
        log-probabilities [N, k] (sorted, -inf where fewer are allowed) and ids [N, k], the new
        states, attention [N, S] or None. pad and bos are never generated; rows the rule forces
        take only its candidates (eos at the length limit). With `keys` (scores [n, V] of the
        rows `chunk` → what to rank them by: `Sampler.keys`), the k best by those keys, with
        their log-probabilities. With the rule's `subset` (a shortlist), only its pieces are
        scored, each row over its own list; the others are -inf."""
        outputs = [model.decoder.step(y_prev, s) for model, s in zip(self.models, states)]
        states = [s for _, s, _ in outputs]
        weights = [w for _, _, w in outputs if w is not None]
        rows, device, subset = y_prev.shape[0], y_prev.device, rule.subset
        width = self.vocab if subset is None or keys is not None else len(subset.ids)
        values = torch.empty(rows, min(k, width), dtype=self.dtype, device=device)
        tokens = torch.empty(values.shape, dtype=torch.long, device=device)
        special = rule.candidates(EOS_ID)  # [C]: what forced rows choose from
        forced = torch.empty(rows, len(special), dtype=self.dtype, device=device)
        # on the CPU, a few rows at a time: their [rows, V] scores stay in the cache from the
        # output layer through the softmax to the top-k (one pass over all rows is memory-bound)
        per_pass = max(1, CPU_SCORES_PER_PASS // width if device.type == "cpu" else rows)
        for start in range(0, rows, per_pass):
            chunk = slice(start, start + per_pass)
            part = None if subset is None else subset[chunk]
            scores = self._scores([f[chunk] for f, _, _ in outputs], part)  # [chunk, V or U']
            if keys is not None and part is not None:  # sampling draws over the vocabulary
                scores, part = expand(scores, part, self.vocab), None
            columns = Columns(part, self.vocab)
            columns.bar(scores, [PAD_ID, BOS_ID])
            rule.apply(scores, chunk, EOS_ID, columns)
            forced[chunk] = columns.gather(scores, special)
            if keys is None:
                values[chunk], tokens[chunk] = top_k(scores, values.shape[1])
            else:
                tokens[chunk] = keys(scores, chunk).topk(values.shape[1], -1).indices
                values[chunk] = scores.gather(1, tokens[chunk])
        if subset is not None and keys is None:
            tokens = subset.ids[tokens]  # columns → target pieces
        if bool(rule.forced.any()):
            best, pick = forced[rule.forced].topk(min(k, len(special)), 1)  # [f, k']
            values[rule.forced] = float("-inf")
            values[rule.forced, : best.shape[1]] = best
            tokens[rule.forced, : best.shape[1]] = special[pick]
        attention = torch.stack([w.to(self.dtype) for w in weights]).mean(0) if weights else None
        return values, tokens, states, attention

    def _scores(self, features: list[torch.Tensor], subset: Subset | None = None) -> torch.Tensor:
        """Each model's features [n, E] → the ensemble's log-probabilities [n, V]; with a
        `subset`, over its columns [n, U'] (-inf outside each row's list)."""
        penalty = None if subset is None else subset.row_penalty()
        scores = [
            m.log_probs(f, self._output(i, subset), penalty).to(self.dtype)
            for i, (m, f) in enumerate(zip(self.models, features))
        ]
        return scores[0] if len(scores) == 1 else torch.stack(scores).mean(0)

    def _output(self, i: int, subset: Subset | None) -> Callable | None:
        """Model i's output layer over the subset's pieces, made once per union and kept in
        its cache; None for the whole vocabulary."""
        if subset is None:
            return None
        if i not in subset.cache:
            subset.cache[i] = self.models[i].output_rows(subset.ids)
        return subset.cache[i]


def top_k(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`torch.topk(scores, k, 1)` for scores [n, W] (values exactly, sorted; among equal
    values any index), by blocks on the CPU for many wide rows: the W columns are read as
    `TOP_BLOCK` rows of W / TOP_BLOCK ("blocks" of strided pieces), each block's maximum
    taken (one vectorised pass), and the k best are searched only among the k blocks with
    the largest maxima, which hold them: any piece outside those blocks has k larger ones
    inside them. 1.3-1.8x faster than one top-k over the row on this CPU
    (docs/notes/2026-12-04-int8-search.md)."""
    n, width = scores.shape
    small = n < TOP_BLOCK_ROWS or width < 4 * k * TOP_BLOCK
    if scores.device.type != "cpu" or small or width % TOP_BLOCK:
        return scores.topk(k, 1)
    blocks = width // TOP_BLOCK
    parts = scores.view(n, TOP_BLOCK, blocks)  # block j: pieces j, j + blocks, ...
    _, best = parts.amax(1).topk(k, 1)  # [n, k] the blocks with the largest maxima
    inside = parts.gather(2, best.unsqueeze(1).expand(-1, TOP_BLOCK, -1))  # [n, TOP_BLOCK, k]
    values, at = inside.view(n, -1).topk(k, 1)  # [n, k]
    return values, (at // k) * blocks + best.gather(1, at % k)


def select(
    states: list[DecoderState], index: torch.Tensor, sources: torch.Tensor | None = None
) -> list[DecoderState]:
    return [state.select(index, sources) for state in states]
