"""Sampling instead of search: each next token drawn from the model's distribution, tempered
and truncated to the top k tokens (`topk:K`) or the smallest set holding probability p
(`topp:P`, nucleus sampling; Holtzman et al. 2020), or from all of it (`full`).

Sampled translations are what back-translation wants: Edunov et al. (2018) found sampled
synthetic sources train better models than beam-searched ones. The draw uses the Gumbel-max
trick (the argmax of log-probabilities plus Gumbel noise is a sample), with noise that is a
hash of (seed, line number, step, token) rather than a generator's stream: so a line gets the
same translation for a seed whatever batch, batch size or order it is decoded in, and the
sampling is one tensor expression per step, with no loop over the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nmt.errors import NmtError

KINDS = ("full", "topk", "topp")
_MASK = (1 << 64) - 1
_MIX = (0xBF58476D1CE4E5B9, 0x94D049BB133111EB)  # splitmix64's multipliers


def _signed(x: int) -> int:
    """A 64-bit constant as the int64 torch computes with."""
    x &= _MASK
    return x - (1 << 64) if x >> 63 else x


def _shift_right(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 values (torch's `>>` is arithmetic)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def uniform(seed: int, lines: torch.Tensor, step: int, vocab: int) -> torch.Tensor:
    """Uniform (0, 1) numbers [N, V], one per (seed, line [N], step, token), from splitmix64's
    finaliser over their combination (int64 products wrap around, as the hash wants)."""
    tokens = torch.arange(vocab, device=lines.device)
    x = (lines.long() * _signed(0x9E3779B97F4A7C15) + (seed * 1_000_003 + step)).unsqueeze(1)
    x = x + tokens * _signed(0xD1B54A32D192ED03)  # [N, V]
    for shift, multiplier in zip((30, 27), _MIX):
        x = (x ^ _shift_right(x, shift)) * _signed(multiplier)
    x = x ^ _shift_right(x, 31)
    return (_shift_right(x, 11).double() + 0.5) / float(1 << 53)


@dataclass(frozen=True)
class Sampler:
    """How to draw each next token: `kind` full, topk (keep the `k` most probable) or topp
    (keep the most probable tokens until their probability reaches `p`), after dividing the
    log-probabilities by `temperature`."""

    kind: str = "full"
    k: int = 0
    p: float = 1.0
    temperature: float = 1.0
    seed: int = 1

    @classmethod
    def parse(cls, spec: str, temperature: float = 1.0, seed: int = 1) -> Sampler:
        """`full`, `topk:K` (K ≥ 1) or `topp:P` (0 < P ≤ 1), as `translate --sampling` takes."""
        kind, _, value = spec.partition(":")
        try:
            if kind == "full" and not value:
                sampler = cls("full", temperature=temperature, seed=seed)
            elif kind == "topk" and int(value) >= 1:
                sampler = cls("topk", k=int(value), temperature=temperature, seed=seed)
            elif kind == "topp" and 0 < float(value) <= 1:
                sampler = cls("topp", p=float(value), temperature=temperature, seed=seed)
            else:
                raise ValueError
        except ValueError:
            raise NmtError(
                f"unknown sampling {spec!r}",
                "--sampling",
                "use full, topk:K with K ≥ 1 (e.g. topk:10) or topp:P with 0 < P ≤ 1 (topp:0.9)",
            ) from None
        if not 0 < temperature < float("inf"):
            raise NmtError(
                f"a temperature of {temperature}", "--temperature", "give a positive number"
            )
        return sampler

    def keys(self, scores: torch.Tensor, lines: torch.Tensor, step: int) -> torch.Tensor:
        """Perturbed scores [N, V] whose argmax is a sample: log-probabilities [N, V] (-inf
        where not allowed) of the rows' lines [N] at `step`, tempered and truncated, plus
        Gumbel noise."""
        tempered = scores / self.temperature
        if self.kind == "topk" and self.k < scores.shape[1]:
            kth = tempered.topk(self.k, 1).values[:, -1:]  # [N, 1]
            tempered = tempered.masked_fill(tempered < kth, float("-inf"))
        elif self.kind == "topp":
            ordered, order = tempered.sort(1, descending=True)
            probs = ordered.softmax(1)
            outside = probs.cumsum(1) - probs >= self.p  # mass before a token already ≥ p
            tempered = tempered.scatter(1, order, ordered.masked_fill(outside, float("-inf")))
        gumbel = -torch.log(-torch.log(uniform(self.seed, lines, step, scores.shape[1])))
        return tempered + gumbel.to(tempered.dtype)
