"""What a search step carries for each hypothesis (`DecoderState`), and how rows of it are
selected, reordered and padded as hypotheses join, leave and reorder."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass
class DecoderState:
    """What a decoder carries from step to step.

    The target side (hidden, context) has one row per hypothesis (batch dimension 1 for hidden,
    0 for context); the source side (memory, keys, mask, source_proj) one row per sentence. In
    beam search a sentence's K hypotheses are K consecutive rows, all attending to its one
    source row, so reordering beams never copies the source.
    """

    hidden: torch.Tensor  # [L, N, H]
    memory: torch.Tensor | None = None  # [B, S, M] encoder states
    keys: torch.Tensor | None = None  # [B, S, A] attention keys
    mask: torch.Tensor | None = None  # [B, S] True at real source tokens
    context: torch.Tensor | None = None  # rnnenc: summary c [N, H]; luong feed h̃: [N, H]
    source_proj: torch.Tensor | None = None  # search: rnnsearch [B, S, 3H + 2E], luong [B, S, H]

    def select(self, index: torch.Tensor, sources: torch.Tensor | None = None) -> DecoderState:
        """The hypotheses `index` [N'] (beam reordering) of the sentences `sources` [B'], or of
        all sentences when None."""
        hidden = self.hidden.index_select(1, index)
        context = None if self.context is None else self.context.index_select(0, index)
        if sources is None:
            return dataclasses.replace(self, hidden=hidden, context=context)
        memory, keys, mask, source_proj = (
            None if x is None else x.index_select(0, sources)
            for x in (self.memory, self.keys, self.mask, self.source_proj)
        )
        return DecoderState(hidden, memory, keys, mask, context, source_proj)

    def fit_source(self, width: int) -> DecoderState:
        """The source side padded (masked out) or cut to `width` positions, so that sentences
        of other lengths can join the batch (`cat`)."""
        memory, keys, source_proj = (
            None if x is None else resize(x, 1, width, 0.0)
            for x in (self.memory, self.keys, self.source_proj)
        )
        mask = None if self.mask is None else resize(self.mask, 1, width, False)
        return DecoderState(self.hidden, memory, keys, mask, self.context, source_proj)

    @staticmethod
    def cat(states: Sequence[DecoderState]) -> DecoderState:
        """The hypotheses and sentences of several states, in order, as one state; their
        source sides must have one width (`fit_source`)."""

        def join(name: str, dim: int) -> torch.Tensor | None:
            parts = [getattr(s, name) for s in states]
            return None if parts[0] is None else torch.cat(parts, dim)

        names = ("memory", "keys", "mask", "context", "source_proj")
        return DecoderState(join("hidden", 1), **{name: join(name, 0) for name in names})


def resize(x: torch.Tensor, dim: int, size: int, value: float | bool) -> torch.Tensor:
    """x cut, or padded with `value`, to `size` along `dim`."""
    if x.shape[dim] >= size:
        return x.narrow(dim, 0, size)
    shape = list(x.shape)
    shape[dim] = size - x.shape[dim]
    return torch.cat([x, x.new_full(shape, value)], dim)
