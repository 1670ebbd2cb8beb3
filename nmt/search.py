"""Decoding: batched greedy and beam search over one model or an ensemble.

Used both by validation during training and by translation, so there is one decoder.

Both searches run every sentence (and, for beam search, every beam) of a batch as one tensor per
step. The encoder runs once per sentence; sentences that are done leave the batch, so the tensors
shrink as decoding goes on. A sentence may produce at most `max_len = a * src_len + b` tokens
before eos; at that step eos is the only token allowed, so every hypothesis ends with eos and its
score includes eos's log-probability.

Beam search follows the usual batched formulation (as in fairseq's sequence generator): at each
step the 2K best continuations of the K beams are taken; those that end in eos and rank among the
first K are set aside as finished (their score normalised by the length penalty), the K best
that do not end in eos carry on. A sentence is done once it has K finished hypotheses. With
K = 1 this is exactly greedy search; with K as large as the number of possible prefixes it is an
exhaustive search (both are tested).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from nmt.constraints import Constraints, StepRule
from nmt.data.tokenizer import BOS_ID, EOS_ID, PAD_ID
from nmt.model import Seq2Seq
from nmt.model.decoder import DecoderState

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


def length_penalty(length: int, kind: str, alpha: float) -> float:
    """What a hypothesis's summed log-probability is divided by; `length` counts eos.

    wu: ((5 + |y|) / 6)^alpha (Wu et al. 2016); length: |y| (the average log-probability);
    none: 1.
    """
    if kind == "wu":
        return ((5.0 + length) / 6.0) ** alpha
    if kind == "length":
        return float(length)
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
        """Each model's initial state; under autocast the source side is stored in the autocast
        dtype once, instead of being cast again at every step."""
        states = [model.encode(src, src_lengths) for model in self.models]
        device = src.device.type
        if not torch.is_autocast_enabled(device):
            return states
        dtype = torch.get_autocast_dtype(device)

        def cast(x: torch.Tensor | None) -> torch.Tensor | None:
            return None if x is None else x.to(dtype)

        return [dataclasses.replace(s, memory=cast(s.memory), keys=cast(s.keys)) for s in states]

    def topk(
        self, y_prev: torch.Tensor, states: list[DecoderState], k: int, rule: StepRule
    ) -> tuple[torch.Tensor, torch.Tensor, list[DecoderState], torch.Tensor | None]:
        """The k most probable next tokens after y_prev [N] that `rule` allows:
        log-probabilities [N, k] (sorted, -inf where fewer are allowed) and ids [N, k], the new
        states, attention [N, S] or None. pad and bos are never generated; rows the rule forces
        take only its candidates (eos at the length limit)."""
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
            torch.topk(scores, values.shape[1], -1, out=(values[chunk], tokens[chunk]))
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
) -> tuple[list[list[int]], torch.Tensor]:
    """The most probable next token at every step (that `constraints` allow, if given), for
    the whole batch at once.

    src [B, S], src_lengths [B] → token ids per sentence (without bos/eos) and the sum of their
    log-probabilities (eos included) [B]. Finished sentences are masked until all are done.
    """
    ensemble = Ensemble(model)
    batch, constraints = src.shape[0], _on(constraints, src.device)
    limit = _limits(src_lengths, max_len_a, max_len_b, constraints).to(src.device)  # [B]
    every = torch.arange(batch, device=src.device)
    states = ensemble.encode(src, src_lengths)
    y = torch.full((batch,), BOS_ID, dtype=torch.long, device=src.device)
    finished = torch.zeros(batch, dtype=torch.bool, device=src.device)
    scores = torch.zeros(batch, dtype=ensemble.dtype, device=src.device)
    steps = []
    for t in range(int(limit.max()) + 1):
        history = None  # [B, t]: read by the constraints alone
        if constraints is not None:
            history = torch.stack(steps, 1) if steps else every.new_empty(batch, 0)
        rule = _rule(constraints, history, every, t, limit)
        best, y, states, _ = ensemble.topk(y, states, 1, rule)  # [B, 1]
        best, y = best[:, 0], y[:, 0]
        scores += best.masked_fill(finished, 0.0)
        y = y.masked_fill(finished, PAD_ID)
        steps.append(y)
        finished |= y == EOS_ID
        if bool(finished.all()):
            break
    tokens = torch.stack(steps, 1).tolist()  # [B, T]
    return [_strip(row) for row in tokens], scores


def _limits(
    src_lengths: torch.Tensor, a: float, b: int, constraints: Constraints | None
) -> torch.Tensor:
    limit = max_lengths(src_lengths, a, b)
    return limit if constraints is None else constraints.limits(limit.to(constraints.need.device))


def _on(constraints: Constraints | None, device: torch.device) -> Constraints | None:
    return None if constraints is None else constraints.to(device)


def _rule(
    constraints: Constraints | None,
    history: torch.Tensor | None,
    sentence: torch.Tensor,
    t: int,
    limit: torch.Tensor,
) -> StepRule:
    """What rows may emit at step t: history [N, t] of rows of `sentence` [N] with length
    limits limit [N]. Without constraints, anything until the limit, then eos."""
    if constraints is None or history is None:
        return StepRule(forced=t >= limit)
    return constraints.rule(history, sentence, t, limit)


def _strip(row: list[int]) -> list[int]:
    """Tokens up to (not including) the first eos or padding."""
    for i, token in enumerate(row):
        if token in (EOS_ID, PAD_ID):
            return row[:i]
    return row


class _Finished:
    """The K best finished hypotheses of every sentence in the batch, kept as tensors."""

    def __init__(self, batch: int, k: int, width: int, src_len: int, attention: bool, like):
        self.scores = like.new_full((batch, k), float("-inf"))  # [B, K], sorted
        self.tokens = torch.full((batch, k, width), PAD_ID, dtype=torch.long, device=like.device)
        self.attention = (  # [B, K, width, S]
            like.new_zeros(batch, k, width, src_len) if attention else None
        )

    def add(
        self,
        rows: torch.Tensor,
        scores: torch.Tensor,
        tokens: torch.Tensor,
        attention: torch.Tensor | None,
    ) -> None:
        """Merge candidates of the sentences `rows` [b]: scores [b, C] (-inf: not a candidate),
        tokens [b, C, t], attention [b, C, t, S]."""
        k, width = self.scores.shape[1], self.tokens.shape[2]
        merged, pick = torch.cat([self.scores[rows], scores], 1).topk(k, 1)  # [b, K]
        pad = width - tokens.shape[2]
        tokens = torch.cat([self.tokens[rows], _pad(tokens, pad, PAD_ID)], 1)
        self.scores[rows] = merged
        self.tokens[rows] = _gather_beams(tokens, pick)
        if self.attention is not None:
            attention = torch.cat([self.attention[rows], _pad(attention, pad, 0.0)], 1)
            self.attention[rows] = _gather_beams(attention, pick)

    def count(self, rows: torch.Tensor) -> torch.Tensor:
        return (self.scores[rows] > float("-inf")).sum(1)  # [b]

    def hypotheses(self, nbest: int, src_lengths: torch.Tensor) -> list[list[Hypothesis]]:
        """The `nbest` best per sentence, best first, eos and padding removed."""
        scores, tokens = self.scores.tolist(), self.tokens.tolist()
        out = []
        for b, lengths in enumerate(src_lengths.tolist()):
            hyps = []
            for k in range(nbest):
                if scores[b][k] == float("-inf"):
                    break
                ids = _strip(tokens[b][k])
                attention = None
                if self.attention is not None:
                    attention = self.attention[b, k, : len(ids) + 1, :lengths].cpu()
                hyps.append(Hypothesis(ids, scores[b][k], attention))
            out.append(hyps)
        return out


def _pad(x: torch.Tensor, extra: int, value: float) -> torch.Tensor:
    """Pad dimension 2 of x [b, C, t, ...] on the right by `extra`."""
    shape = list(x.shape)
    shape[2] = extra
    return torch.cat([x, x.new_full(shape, value)], 2)


def _gather_beams(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x [b, C, ...], index [b, K] → x[i, index[i, k], ...] of shape [b, K, ...]."""
    return x[torch.arange(x.shape[0], device=x.device).unsqueeze(1), index]


@torch.no_grad()
def beam_search(
    model: Seq2Seq | Sequence[Seq2Seq],
    src: torch.Tensor,
    src_lengths: torch.Tensor,
    beam: int = 5,
    nbest: int = 1,
    alpha: float = 0.6,
    penalty: str = "wu",
    max_len_a: float = 1.5,
    max_len_b: int = 10,
    attention: bool = False,
    constraints: Constraints | None = None,
) -> list[list[Hypothesis]]:
    """The `nbest` (≤ beam) best hypotheses per sentence, best first, distinct.

    src [B, S], src_lengths [B]. See the module docstring for the algorithm. With `attention`,
    each hypothesis carries its attention weights (averaged over an ensemble); with
    `constraints`, every hypothesis obeys them (see `nmt.constraints`).
    """
    if not 1 <= nbest <= beam:
        raise ValueError(f"nbest must be between 1 and the beam size {beam}, not {nbest}")
    ensemble = Ensemble(model)
    attention = attention and ensemble.has_attention
    batch, src_len, k, device = src.shape[0], src.shape[1], beam, src.device
    constraints = _on(constraints, device)
    limit = _limits(src_lengths, max_len_a, max_len_b, constraints).to(device)  # [B]
    scores = torch.zeros(batch, k, dtype=ensemble.dtype, device=device)  # [b, K] log-probs
    scores[:, 1:] = float("-inf")  # all beams start equal: expand only the first
    finished = _Finished(batch, k, int(limit.max()) + 1, src_len, attention, scores)
    beams = torch.arange(batch, device=device).repeat_interleave(k)  # [B*K] → its sentence
    states = select(ensemble.encode(src, src_lengths), beams)  # the source stays [B, ...]
    sent = torch.arange(batch, device=device)  # [b] the live sentences
    history = torch.empty(batch, k, 0, dtype=torch.long, device=device)  # [b, K, t]
    weights = scores.new_zeros(batch, k, 0, src_len) if attention else None  # [b, K, t, S]
    y = torch.full((batch * k,), BOS_ID, dtype=torch.long, device=device)
    for t in range(int(limit.max()) + 1):
        b = len(sent)
        at_limit = t >= limit[sent]  # [b]
        of = sent.repeat_interleave(k)  # [b*K] → its sentence
        rule = _rule(constraints, history.view(b * k, t), of, t, limit[of])
        # the 2K best continuations of each beam hold the 2K best continuations of all beams
        values, tokens, states, alpha_t = ensemble.topk(
            y, states, 2 * k, rule
        )  # [b*K, C] with C = min(2K, vocabulary); α [b*K, S]
        per_beam = values.shape[1]
        candidates = (scores.unsqueeze(2) + values.view(b, k, per_beam)).view(b, k * per_beam)
        top, index = candidates.topk(2 * k, 1)  # [b, 2K]
        origin = index // per_beam  # the beam extended
        token = tokens.view(b, k * per_beam).gather(1, index)  # the token added
        history = torch.cat([_gather_beams(history, origin), token.unsqueeze(2)], 2)
        if weights is not None:
            weights = _gather_beams(torch.cat([weights, alpha_t.view(b, k, 1, -1)], 2), origin)
        ended = (token == EOS_ID) & (top > float("-inf"))
        ended[:, k:] = False  # only eos among the K best counts as finished
        if bool(ended.any()):
            normalised = top / length_penalty(t + 1, penalty, alpha)
            finished.add(sent, normalised.masked_fill(~ended, float("-inf")), history, weights)
        scores, pos = top.masked_fill(token == EOS_ID, float("-inf")).topk(k, 1)  # [b, K]
        history, origin, y = (_gather_beams(x, pos) for x in (history, origin, token))
        if weights is not None:
            weights = _gather_beams(weights, pos)
        done = (finished.count(sent) >= k) | at_limit | (scores[:, 0] == float("-inf"))
        if bool(done.all()):
            break
        keep = ~done
        rows = (torch.arange(b, device=device).unsqueeze(1) * k + origin)[keep].view(-1)
        # the source side is copied only when sentences leave the batch
        states = select(states, rows, None if bool(keep.all()) else keep.nonzero().squeeze(1))
        sent, scores, history, y = sent[keep], scores[keep], history[keep], y[keep].view(-1)
        if weights is not None:
            weights = weights[keep]
    return finished.hypotheses(nbest, src_lengths)
