"""Decoding: batched greedy search (beam search joins it here).

Used both by validation during training and by translation, so there is one decoder.
"""

from __future__ import annotations

import torch

from nmt.data.tokenizer import BOS_ID, EOS_ID, PAD_ID
from nmt.model import Seq2Seq


def max_lengths(src_lengths: torch.Tensor, a: float, b: int) -> torch.Tensor:
    """Output length limit per sentence: a * source length + b (source length with eos)."""
    return (a * src_lengths.float() + b).long().clamp(min=1)


@torch.no_grad()
def greedy_search(
    model: Seq2Seq,
    src: torch.Tensor,
    src_lengths: torch.Tensor,
    max_len_a: float = 1.5,
    max_len_b: int = 10,
) -> tuple[list[list[int]], torch.Tensor]:
    """The most probable next token at every step, for the whole batch at once.

    src [B, S], src_lengths [B] → token ids per sentence (without bos/eos) and the sum of their
    log-probabilities (eos included) [B]. Finished sentences are masked until all are done.
    """
    batch = src.shape[0]
    limit = max_lengths(src_lengths, max_len_a, max_len_b).to(src.device)  # [B]
    state = model.encode(src, src_lengths)
    y = torch.full((batch,), BOS_ID, dtype=torch.long, device=src.device)
    finished = torch.zeros(batch, dtype=torch.bool, device=src.device)
    scores = torch.zeros(batch, device=src.device)
    steps = []
    for t in range(int(limit.max())):
        log_probs, state, _ = model.step(y, state)  # [B, V]
        best, y = log_probs.max(-1)
        scores += best.masked_fill(finished, 0.0)
        y = y.masked_fill(finished, PAD_ID)
        steps.append(y)
        finished |= (y == EOS_ID) | (t + 1 >= limit)
        if bool(finished.all()):
            break
    tokens = torch.stack(steps, 1).tolist()  # [B, T]
    return [_strip(row) for row in tokens], scores


def _strip(row: list[int]) -> list[int]:
    """Tokens up to (not including) the first eos or padding."""
    for i, token in enumerate(row):
        if token in (EOS_ID, PAD_ID):
            return row[:i]
    return row
