"""What the search returns for a sentence, and how its score is normalised by length."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nmt.data.tokenizer import EOS_ID, PAD_ID

PENALTIES = ("wu", "length", "none")


@dataclass
class Hypothesis:
    """One output of the search: token ids (no bos/eos), normalised score, attention."""

    tokens: list[int]
    score: float  # sum of log-probabilities (eos included), divided by the length penalty
    attention: torch.Tensor | None = None  # [len(tokens) + 1, src_len]: α per output (+ eos)


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


def strip(row: list[int]) -> list[int]:
    """Tokens up to (not including) the first eos or padding."""
    for i, token in enumerate(row):
        if token in (EOS_ID, PAD_ID):
            return row[:i]
    return row
