"""Greedy search (and sampling, which draws where greedy search takes the best): the most
probable allowed token at every step, for a whole batch at once. Validation decodes with it."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch

from nmt.data.tokenizer import BOS_ID, EOS_ID, PAD_ID
from nmt.decode.constraints import Constraints
from nmt.decode.ensemble import Ensemble
from nmt.decode.hypothesis import strip
from nmt.decode.rules import limits, on_device, rules
from nmt.decode.sampling import Sampler
from nmt.decode.shortlist import Subset, complete
from nmt.model import Seq2Seq


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
    vocab: torch.Tensor | None = None,
) -> tuple[list[list[int]], torch.Tensor]:
    """The most probable next token at every step (that `constraints` allow, if given), for
    the whole batch at once; with `sampler`, a token drawn from the model's distribution
    instead, by the line numbers `lines` [B] (default 0 to B-1: see `nmt.decode.sampling`). Each
    output begins with its row of `prefix` [B, P] (-1 after its end), if given; with `vocab`
    [B, V] (bool), each sentence scores its shortlist alone (`nmt.decode.shortlist`).

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
    subset = None if vocab is None else Subset.of(complete(vocab, constraints, prefix), every)
    y = torch.full((batch,), BOS_ID, dtype=torch.long, device=src.device)
    finished = torch.zeros(batch, dtype=torch.bool, device=src.device)
    scores = torch.zeros(batch, dtype=ensemble.dtype, device=src.device)
    steps = []
    for t in range(int(limit.max()) + 1):
        history = None  # [B, t]: read by the constraints alone
        if constraints is not None:
            history = torch.stack(steps, 1) if steps else every.new_empty(batch, 0)
        rule = rules(constraints, history, every, t, limit, prefix)
        rule.subset = subset
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
