"""Word dropout (`train.src_word_dropout`, `train.tgt_word_dropout`): in each training batch a
share of the source tokens and of the decoder's input tokens is replaced by `<unk>`, so that
the model cannot lean on any single token and the decoder learns to recover from its context
(Sennrich & Zhang 2019 use 0.1-0.3 for small corpora; Gal & Ghahramani 2016 drop whole words).

Padding, `<s>`, `</s>`, `<unk>` and the placeholders of protected spans are never replaced: a
placeholder must reach the output, and the decoder's targets (`tgt_out`) are never touched.
The draws come from torch's global generator, which last.pt carries, so a resumed run draws
what an unbroken one would.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

from nmt.data.batching import Batch
from nmt.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID

SPECIAL = (PAD_ID, UNK_ID, BOS_ID, EOS_ID)


class WordDropout:
    """Replaces a share of a batch's source and decoder-input tokens by `<unk>`."""

    def __init__(
        self,
        src_rate: float,
        tgt_rate: float,
        spared: tuple[Sequence[int], Sequence[int]] = ((), ()),
    ):
        """`spared`: the (source, target) ids besides the special ones that are never
        replaced (the placeholders)."""
        self.src_rate, self.tgt_rate = src_rate, tgt_rate
        self.spared = tuple(torch.tensor(sorted({*SPECIAL, *ids})) for ids in spared)

    @property
    def active(self) -> bool:
        return bool(self.src_rate or self.tgt_rate)

    def __call__(self, batch: Batch) -> Batch:
        """`batch` with its tokens replaced (a new Batch; the input is left as it was)."""
        if not self.active:
            return batch
        return dataclasses.replace(
            batch,
            src=_drop(batch.src, self.src_rate, self.spared[0]),  # [B, S]
            tgt_in=_drop(batch.tgt_in, self.tgt_rate, self.spared[1]),  # [B, T]
        )


def _drop(tokens: torch.Tensor, rate: float, spared: torch.Tensor) -> torch.Tensor:
    """`tokens` with each one not in `spared` replaced by `<unk>` with probability `rate`."""
    if not rate:
        return tokens
    hit = torch.rand(tokens.shape, device=tokens.device) < rate  # [B, L]
    hit &= ~torch.isin(tokens, spared.to(tokens.device))
    return tokens.masked_fill(hit, UNK_ID)
