"""Decoding: what greedy search (here) and beam search (`nmt.beam`) share, over one model or
an ensemble. Validation during training decodes greedily, translation with the beam: one
decoder for both.

Both searches run every sentence (and, for beam search, every beam) of a batch as one tensor per
step. The encoder runs once per sentence; sentences that are done leave the batch, so the tensors
shrink as decoding goes on. A sentence may produce at most `max_len = a * src_len + b` tokens
before eos; at that step eos is the only token allowed, so every hypothesis ends with eos and its
score includes eos's log-probability.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from nmt.constraints import Constraints, StepRule
from nmt.data.tokenizer import BOS_ID, EOS_ID, PAD_ID
from nmt.model import Seq2Seq
from nmt.model.decoder import DecoderState
from nmt.sampling import Sampler

PENALTIES = ("wu", "length", "none")
CPU_SCORES_PER_PASS = 1 << 20  # scores computed, normalised and searched at once on the CPU


@dataclass
class Hypothesis:
    """One output of the search: token ids (no bos/eos), normalised score, attention."""

    tokens: list[int]
    score: float  # sum of log-probabilities (eos included), divided by the length penalty
    attention: torch.Tensor | None = None  # [len(tokens) + 1, src_len]: α per output (+ eos)


def max_lengths(src_lengths: torch.Tensor, a: float, b: int) -> torch.Tensor:
    """Output length limit per sentence: a * source length + b (source length with eos)."""
    return (a * src_lengths.float() + b).long().clamp(min=1)


def length_penalty(length: int | torch.Tensor, kind: str, alpha: float) -> float | torch.Tensor:
    """What a hypothesis's summed log-probability is divided by; `length` (one, or a tensor of
    them) counts eos.

    wu: ((5 + |y|) / 6)^alpha (Wu et al. 2016); length: |y| (the average log-probability);
    none: 1.
    """
    if kind == "wu":
        return ((5.0 + length) / 6.0) ** alpha
    if kind == "length":
        return length * 1.0
    if kind == "none":
        return 1.0
    raise ValueError(f"unknown length penalty {kind!r}; expected one of {PENALTIES}")


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
        their log-probabilities."""
        outputs = [model.decoder.step(y_prev, s) for model, s in zip(self.models, states)]
        states = [s for _, s, _ in outputs]
        weights = [w for _, _, w in outputs if w is not None]
        rows, device = y_prev.shape[0], y_prev.device
        values = torch.empty(rows, min(k, self.vocab), dtype=self.dtype, device=device)
        tokens = torch.empty(values.shape, dtype=torch.long, device=device)
        special = rule.candidates(EOS_ID)  # [C]: what forced rows choose from
        forced = torch.empty(rows, len(special), dtype=self.dtype, device=device)
        # on the CPU, a few rows at a time: their [rows, V] scores stay in the cache from the
        # output layer through the softmax to the top-k (one pass over all rows is memory-bound)
        per_pass = max(1, CPU_SCORES_PER_PASS // self.vocab if device.type == "cpu" else rows)
        for start in range(0, rows, per_pass):
            chunk = slice(start, start + per_pass)
            scores = self._scores([f[chunk] for f, _, _ in outputs])  # [chunk, V]
            scores[:, PAD_ID] = scores[:, BOS_ID] = float("-inf")
            rule.apply(scores, chunk, EOS_ID)
            forced[chunk] = scores[:, special]
            if keys is None:
                torch.topk(scores, values.shape[1], -1, out=(values[chunk], tokens[chunk]))
            else:
                tokens[chunk] = keys(scores, chunk).topk(values.shape[1], -1).indices
                values[chunk] = scores.gather(1, tokens[chunk])
        if bool(rule.forced.any()):
            best, pick = forced[rule.forced].topk(min(k, len(special)), 1)  # [f, k']
            values[rule.forced] = float("-inf")
            values[rule.forced, : best.shape[1]] = best
            tokens[rule.forced, : best.shape[1]] = special[pick]
        attention = torch.stack([w.to(self.dtype) for w in weights]).mean(0) if weights else None
        return values, tokens, states, attention

    def _scores(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Each model's features [n, E] → the ensemble's log-probabilities [n, V]."""
        if len(self.models) == 1:
            return self.models[0].log_probs(features[0]).to(self.dtype)
        return torch.stack(
            [m.log_probs(f).to(self.dtype) for m, f in zip(self.models, features)]
        ).mean(0)


def select(
    states: list[DecoderState], index: torch.Tensor, sources: torch.Tensor | None = None
) -> list[DecoderState]:
    return [state.select(index, sources) for state in states]


@torch.no_grad()
def greedy_search(
    model: Seq2Seq | Sequence[Seq2Seq],
    src: torch.Tensor,
    src_lengths: torch.Tensor,
    max_len_a: float = 1.5,
    max_len_b: int = 10,
    constraints: Constraints | None = None,
    sampler: Sampler | None = None,
    lines: torch.Tensor | None = None,
    prefix: torch.Tensor | None = None,
) -> tuple[list[list[int]], torch.Tensor]:
    """The most probable next token at every step (that `constraints` allow, if given), for
    the whole batch at once; with `sampler`, a token drawn from the model's distribution
    instead, by the line numbers `lines` [B] (default 0 to B-1: see `nmt.sampling`). Each
    output begins with its row of `prefix` [B, P] (-1 after its end), if given.

    src [B, S], src_lengths [B] → token ids per sentence (without bos/eos) and the sum of their
    log-probabilities (eos included) [B]. Finished sentences are masked until all are done.
    """
    ensemble = Ensemble(model)
    batch, constraints = src.shape[0], on_device(constraints, src.device)
    prefix = None if prefix is None else prefix.to(src.device)
    limit = limits(src_lengths, max_len_a, max_len_b, constraints, prefix).to(src.device)  # [B]
    every = torch.arange(batch, device=src.device)
    numbers = every if lines is None else lines.to(src.device)  # the rows' line numbers
    states = ensemble.encode(src, src_lengths)
    y = torch.full((batch,), BOS_ID, dtype=torch.long, device=src.device)
    finished = torch.zeros(batch, dtype=torch.bool, device=src.device)
    scores = torch.zeros(batch, dtype=ensemble.dtype, device=src.device)
    steps = []
    for t in range(int(limit.max()) + 1):
        history = None  # [B, t]: read by the constraints alone
        if constraints is not None:
            history = torch.stack(steps, 1) if steps else every.new_empty(batch, 0)
        rule = rules(constraints, history, every, t, limit, prefix)
        keys = None
        if sampler is not None:  # ranks each chunk of rows by its sampling keys at step t
            keys = functools.partial(_sampling_keys, sampler, numbers, t)
        best, y, states, _ = ensemble.topk(y, states, 1, rule, keys)  # [B, 1]
        best, y = best[:, 0], y[:, 0]
        scores += best.masked_fill(finished, 0.0)
        y = y.masked_fill(finished, PAD_ID)
        steps.append(y)
        finished |= y == EOS_ID
        if bool(finished.all()):
            break
    tokens = torch.stack(steps, 1).tolist()  # [B, T]
    return [strip(row) for row in tokens], scores


def _sampling_keys(
    sampler: Sampler, lines: torch.Tensor, t: int, scores: torch.Tensor, chunk: slice
) -> torch.Tensor:
    return sampler.keys(scores, lines[chunk], t)


def limits(
    src_lengths: torch.Tensor,
    a: float,
    b: int,
    constraints: Constraints | None,
    prefix: torch.Tensor | None = None,
) -> torch.Tensor:
    """Output length limits [B], raised where the constraints or a prefix need more (with
    both, room for every placeholder after the prefix)."""
    limit = max_lengths(src_lengths, a, b)
    forced = None if prefix is None else (prefix >= 0).sum(1)  # [B]
    if forced is not None:
        limit = torch.maximum(limit.to(prefix.device), forced)
    if constraints is None:
        return limit
    limit = constraints.limits(limit.to(constraints.need.device))
    return (
        limit
        if forced is None
        else torch.maximum(limit, forced.to(limit.device) + constraints.count)
    )


def on_device(constraints: Constraints | None, device: torch.device) -> Constraints | None:
    return None if constraints is None else constraints.to(device)


def rules(
    constraints: Constraints | None,
    history: torch.Tensor | None,
    sentence: torch.Tensor,
    t: int | torch.Tensor,
    limit: torch.Tensor,
    prefix: torch.Tensor | None = None,
) -> StepRule:
    """What rows may emit at step t (one, or [N]): history [N, W] of rows of `sentence` [N]
    with length limits limit [N], and the prefix [B, P] (-1 after each sentence's own) each
    sentence's output must begin with. Without constraints, anything until the limit, then
    eos; within a prefix, its token alone."""
    if constraints is None or history is None:
        rule = StepRule(forced=t >= limit)
    else:
        rule = constraints.rule(history, sentence, t, limit)
    if prefix is None or prefix.shape[1] == 0:
        return rule
    t = torch.as_tensor(t, device=sentence.device).expand_as(sentence)
    width = prefix.shape[1]
    token = torch.where(t < width, prefix[sentence, t.clamp(max=width - 1)], -1)  # [N]
    return dataclasses.replace(rule, token=token)


def strip(row: list[int]) -> list[int]:
    """Tokens up to (not including) the first eos or padding."""
    for i, token in enumerate(row):
        if token in (EOS_ID, PAD_ID):
            return row[:i]
    return row
