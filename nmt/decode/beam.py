"""Beam search, batched, with sentences that join and leave the batch while it runs.

The search follows the usual batched formulation (as in fairseq's sequence generator): at each
step the 2K best continuations of the K beams are taken; those that end in eos and rank among
the first K are set aside as finished (their score normalised by the length penalty), the K
best that do not end in eos carry on. A sentence is done once it has K finished hypotheses, or
at its length limit. With K = 1 this is exactly greedy search; with K as large as the number of
possible prefixes it is an exhaustive search (both are tested).

Every sentence runs at its own step, so sentences can join a batch in progress
(`BeamBatch.add`) and leave it as soon as they are done (`BeamBatch.step` hands them back):
continuous batching, with which a server keeps its batch full and a long sentence does not
hold back short ones. A sentence's result does not depend on the company it is decoded in
(tested). `beam_search` decodes one batch from start to end.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import torch

from nmt.data.tokenizer import BOS_ID, EOS_ID, PAD_ID
from nmt.decode.constraints import Constraints
from nmt.decode.ensemble import Ensemble, select
from nmt.decode.hypothesis import Hypothesis, length_penalty, strip
from nmt.decode.rules import limits, on_device, rules
from nmt.decode.shortlist import Lists
from nmt.model import DecoderState, Seq2Seq, resize

NEG = float("-inf")
WIDTH_CHUNK = 8  # token columns added to the history at a time


def _gather_beams(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x [b, C, ...], index [b, K] → x[i, index[i, k], ...] of shape [b, K, ...]."""
    return x[torch.arange(x.shape[0], device=x.device).unsqueeze(1), index]


class BeamBatch:
    """The sentences of one beam search, each at its own step.

    Per live sentence (dimension 0 of every tensor below, in the order of `keys`): its step,
    length limit, source length, the scores and tokens of its K live beams and the K best
    finished hypotheses so far. Token tensors are W wide (the longest history), padded after
    each sentence's own step; attention tensors are S wide (the longest source).
    """

    def __init__(
        self,
        model: Seq2Seq | Sequence[Seq2Seq],
        beam: int = 5,
        nbest: int = 1,
        alpha: float = 0.6,
        penalty: str = "wu",
        max_len_a: float = 1.5,
        max_len_b: int = 10,
        attention: bool = False,
    ):
        if not 1 <= nbest <= beam:
            raise ValueError(f"nbest must be between 1 and the beam size {beam}, not {nbest}")
        self.ensemble = Ensemble(model)
        self.k, self.nbest, self.alpha, self.penalty = beam, nbest, alpha, penalty
        self.max_len_a, self.max_len_b = max_len_a, max_len_b
        k, dtype = beam, self.ensemble.dtype
        device = self.device = next(self.ensemble.models[0].parameters()).device
        self.keys: list[Hashable] = []
        self.states: list[DecoderState] = []
        self.constraints: Constraints | None = None
        self.lists = Lists()  # each sentence's shortlist, if given
        self.src_width = 0  # S: the source side's width in states and attention
        self.steps = torch.zeros(0, dtype=torch.long, device=device)  # [b] tokens so far
        self.limit = torch.zeros_like(self.steps)  # [b] tokens allowed (eos included)
        self.lengths = torch.zeros_like(self.steps)  # [b] source lengths (eos included)
        self.prefix = torch.zeros(0, 0, dtype=torch.long, device=device)  # [b, P], -1 after
        self.scores = torch.zeros(0, k, dtype=dtype, device=device)  # [b, K] log-probabilities
        self.y = torch.zeros(0, dtype=torch.long, device=device)  # [b*K] the last token
        self.history = torch.zeros(0, k, 0, dtype=torch.long, device=device)  # [b, K, W]
        self.best = torch.zeros(0, k, dtype=dtype, device=device)  # [b, K] finished, sorted
        self.best_tokens = torch.zeros_like(self.history)  # [b, K, W]
        attention = attention and self.ensemble.has_attention
        # [b, K, W, S] the live beams' attention and the finished hypotheses'
        self.weights = torch.zeros(0, k, 0, 0, dtype=dtype, device=device) if attention else None
        self.best_attention = None if self.weights is None else torch.zeros_like(self.weights)

    def __len__(self) -> int:
        return len(self.keys)

    @torch.no_grad()
    def add(
        self,
        keys: Sequence[Hashable],
        src: torch.Tensor,
        src_lengths: torch.Tensor,
        constraints: Constraints | None = None,
        prefix: torch.Tensor | None = None,
        vocab: torch.Tensor | None = None,
    ) -> None:
        """Sentences src [n, S] with src_lengths [n] join the batch; `step` hands each back
        under its key. Constraints (`nmt.decode.constraints`) and shortlists `vocab` [n, V]
        (`nmt.decode.shortlist`) are given for every sentence or none; `prefix` [n, P] (-1
        after each row's end) holds what each output must begin with."""
        n, k, device = src.shape[0], self.k, self.device
        if n == 0:
            return
        if self.keys and (constraints is None) != (self.constraints is None):
            raise ValueError("constraints are given for every sentence of a batch or for none")
        self.lists.add(len(self.keys), vocab, constraints, prefix)
        constraints = on_device(constraints, device)
        self._join_states(src, src_lengths)
        if constraints is not None:
            parts = [self.constraints, constraints] if self.keys else [constraints]
            self.constraints = Constraints.cat(parts)  # type: ignore[arg-type]
        if prefix is None:
            prefix = self.prefix.new_full((n, 0), -1)
        prefix_width = max(self.prefix.shape[1], prefix.shape[1])
        self.prefix = resize(self.prefix, 1, prefix_width, -1)
        prefix = resize(prefix.to(device), 1, prefix_width, -1)
        limit = limits(src_lengths, self.max_len_a, self.max_len_b, constraints, prefix)
        limit = limit.to(device)
        scores = self.scores.new_zeros(n, k)
        scores[:, 1:] = NEG  # all beams start equal: expand only the first
        tokens = self.history.new_full((n, *self.history.shape[1:]), PAD_ID)  # [n, K, W]
        weights = (
            None if self.weights is None else self.weights.new_zeros(n, *self.weights.shape[1:])
        )
        self._append(
            steps=torch.zeros_like(limit),
            limit=limit,
            lengths=src_lengths.to(device),
            prefix=prefix,
            scores=scores,
            history=tokens,
            best=self.best.new_full((n, k), NEG),
            best_tokens=tokens,
            weights=weights,
            best_attention=weights,
        )
        self.y = torch.cat([self.y, self.y.new_full((n * k,), BOS_ID)])
        self.keys += list(keys)

    def _join_states(self, src: torch.Tensor, src_lengths: torch.Tensor) -> None:
        """The new sentences' encoder states, K rows each, after the running ones; both sides
        padded to the wider source."""
        width = max(self.src_width, src.shape[1])
        self._fit(self.history.shape[2], width)
        states = [s.fit_source(width) for s in self.ensemble.encode(src, src_lengths)]
        beams = torch.arange(src.shape[0], device=self.device).repeat_interleave(self.k)
        states = select(states, beams)
        if self.keys:
            running = [s.fit_source(width) for s in self.states]
            states = [DecoderState.cat(pair) for pair in zip(running, states)]
        self.states = states

    @torch.no_grad()
    def step(self) -> list[tuple[Hashable, list[Hypothesis]]]:
        """One step of every live sentence; the sentences it finished leave the batch and come
        back as (key, their `nbest` best hypotheses, best first)."""
        b, k, t = len(self.keys), self.k, self.steps
        if b == 0:
            return []
        if self.history.shape[2] <= int(t.max()):  # grown in chunks: fewer copies
            self._fit(int(t.max()) + WIDTH_CHUNK, self.src_width)
        of = torch.arange(b, device=self.device).repeat_interleave(k)  # [b*K] → its sentence
        history = self.history.view(b * k, -1)
        rule = rules(self.constraints, history, of, t[of], self.limit[of], self.prefix)
        # the 2K best continuations of each beam hold the 2K best continuations of all beams
        rule.subset = self.lists.subset(of)
        values, tokens, self.states, alpha_t = self.ensemble.topk(self.y, self.states, 2 * k, rule)
        per_beam = values.shape[1]  # C = min(2K, vocabulary)
        candidates = (self.scores.unsqueeze(2) + values.view(b, k, per_beam)).view(b, -1)
        top, index = candidates.topk(2 * k, 1)  # [b, 2K]
        origin = index // per_beam  # the beam extended
        token = tokens.view(b, -1).gather(1, index)  # the token added
        at = t.view(b, 1, 1)  # each sentence writes its own column
        history = _gather_beams(self.history, origin).scatter(
            2, at.expand(b, 2 * k, 1), token.unsqueeze(2)
        )  # [b, 2K, W]
        weights = None
        if self.weights is not None and alpha_t is not None:
            alpha_t = alpha_t.view(b, k, 1, -1)
            written = self.weights.scatter(2, at.unsqueeze(3).expand_as(alpha_t), alpha_t)
            weights = _gather_beams(written, origin)  # [b, 2K, W, S]
        ended = (token == EOS_ID) & (top > NEG)
        ended[:, k:] = False  # only eos among the K best counts as finished
        if bool(ended.any()):
            penalty = length_penalty((t + 1).to(top.dtype), self.penalty, self.alpha)
            normalised = top / (penalty.unsqueeze(1) if torch.is_tensor(penalty) else penalty)
            self._finish(normalised.masked_fill(~ended, NEG), history, weights)
        self.scores, pos = top.masked_fill(token == EOS_ID, NEG).topk(k, 1)  # [b, K]
        self.history, origin, y = (_gather_beams(x, pos) for x in (history, origin, token))
        if weights is not None:
            self.weights = _gather_beams(weights, pos)
        count = (self.best > NEG).sum(1)
        done = (count >= k) | (t >= self.limit) | (self.scores[:, 0] == NEG)  # [b]
        self.steps = t + 1
        beams = torch.arange(b, device=self.device).unsqueeze(1) * k + origin  # [b, K]
        return self._leave(done, beams, y)

    @torch.no_grad()
    def drop(self, keys: Sequence[Hashable]) -> None:
        """Take sentences out of the batch unfinished (their client has gone)."""
        gone = set(keys)
        mask = torch.tensor([key in gone for key in self.keys], dtype=torch.bool)
        if bool(mask.any()):
            b, k = len(self.keys), self.k
            beams = torch.arange(b * k, device=self.device).view(b, k)
            self._keep(~mask.to(self.device), beams, self.y.view(b, k))

    def _leave(
        self, done: torch.Tensor, beams: torch.Tensor, y: torch.Tensor
    ) -> list[tuple[Hashable, list[Hypothesis]]]:
        """Hand back the sentences that are `done` [b] and keep the others' beams [b, K]."""
        out = []
        if bool(done.any()):
            rows = done.nonzero().squeeze(1)
            out = list(zip([self.keys[i] for i in rows.tolist()], self._hypotheses(rows)))
        self._keep(~done, beams, y)
        return out

    def _keep(self, keep: torch.Tensor, beams: torch.Tensor, y: torch.Tensor) -> None:
        """Keep the sentences `keep` [b] with their beams: rows `beams` [b, K] of the decoder
        states, whose last tokens are y [b, K]; the source side is copied only when sentences
        leave, cut to the longest source left."""
        if bool(keep.all()):
            self.states = select(self.states, beams.view(-1))
            self.y = y.reshape(-1)
            return
        sources = keep.nonzero().squeeze(1)
        self.keys = [self.keys[i] for i in sources.tolist()]
        names = ("steps", "limit", "lengths", "prefix", "scores", "history", "best", "best_tokens")
        for name in names:
            setattr(self, name, getattr(self, name)[sources])
        if self.weights is not None and self.best_attention is not None:
            self.weights, self.best_attention = self.weights[sources], self.best_attention[sources]
        if self.constraints is not None:
            self.constraints = self.constraints[sources]
        self.lists.keep(sources)
        self.src_width = int(self.lengths.max()) if self.keys else 0
        self.states = [s.fit_source(self.src_width) for s in self.states]
        self.states = select(self.states, beams[sources].view(-1), sources)
        self.y = y[sources].reshape(-1)
        self._fit(int(self.steps.max()) if self.keys else 0, self.src_width)

    def _finish(
        self, scores: torch.Tensor, history: torch.Tensor, weights: torch.Tensor | None
    ) -> None:
        """Merge candidates into the K best finished hypotheses: normalised scores [b, 2K]
        (-inf: not a candidate), their tokens [b, 2K, W] and attention [b, 2K, W, S]."""
        self.best, pick = torch.cat([self.best, scores], 1).topk(self.k, 1)  # [b, K]
        self.best_tokens = _gather_beams(torch.cat([self.best_tokens, history], 1), pick)
        if self.best_attention is not None and weights is not None:
            self.best_attention = _gather_beams(torch.cat([self.best_attention, weights], 1), pick)

    def _hypotheses(self, rows: torch.Tensor) -> list[list[Hypothesis]]:
        """The `nbest` best finished hypotheses of the sentences `rows`, best first."""
        scores, tokens = self.best[rows].tolist(), self.best_tokens[rows].tolist()
        out = []
        for i, row in enumerate(rows.tolist()):
            hyps = []
            for j in range(self.nbest):
                if scores[i][j] == NEG:
                    break
                ids = strip(tokens[i][j])
                attention = None
                if self.best_attention is not None:
                    length = int(self.lengths[row])
                    attention = self.best_attention[row, j, : len(ids) + 1, :length].cpu()
                hyps.append(Hypothesis(ids, scores[i][j], attention))
            out.append(hyps)
        return out

    def _fit(self, width: int, src_width: int) -> None:
        """Token tensors `width` wide, attention tensors `src_width` wide (padded or cut)."""
        self.history = resize(self.history, 2, width, PAD_ID)
        self.best_tokens = resize(self.best_tokens, 2, width, PAD_ID)
        if self.weights is not None and self.best_attention is not None:
            self.weights = resize(resize(self.weights, 2, width, 0.0), 3, src_width, 0.0)
            self.best_attention = resize(
                resize(self.best_attention, 2, width, 0.0), 3, src_width, 0.0
            )
        self.src_width = src_width

    def _append(self, **rows: torch.Tensor | None) -> None:
        """New sentences' rows at the end of each per-sentence tensor."""
        for name, x in rows.items():
            if x is not None:
                setattr(self, name, torch.cat([getattr(self, name), x]))


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
    prefix: torch.Tensor | None = None,
    vocab: torch.Tensor | None = None,
) -> list[list[Hypothesis]]:
    """The `nbest` (≤ beam) best hypotheses per sentence, best first, distinct.

    src [B, S], src_lengths [B]. See the module docstring for the algorithm. With `attention`,
    each hypothesis carries its attention weights (averaged over an ensemble); with
    `constraints`, every hypothesis obeys them (see `nmt.decode.constraints`); with `prefix` [B, P]
    (-1 after each row's end), every hypothesis begins with its row; with `vocab` [B, V] (bool),
    each sentence's search scores its shortlist alone.
    """
    batch = BeamBatch(model, beam, nbest, alpha, penalty, max_len_a, max_len_b, attention)
    batch.add(range(src.shape[0]), src, src_lengths, constraints, prefix, vocab)
    out: list[list[Hypothesis]] = [[] for _ in range(src.shape[0])]
    while len(batch):
        for key, hyps in batch.step():
            out[key] = hyps  # type: ignore[index]
    return out
