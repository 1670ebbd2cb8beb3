"""The search's side of the lexical shortlist (`nmt.data.shortlist`): each sentence's list made
complete with what the search must be able to emit, and the target pieces one step scores.

A sentence's list always holds eos, unk, the placeholders its constraints need and its forced
prefix, so every constraint stays satisfiable whatever the list. At each step the output layer
is computed only over the union of the lists of the rows in the batch; each row is masked to its
own sentence's list before the softmax, so that its scores do not depend on the sentences it is
decoded with (`Seq2Seq.log_probs`): to the last bit, as the union is padded to a multiple of
`BLOCK` pieces (a matrix product computes its last, narrower columns apart, in another order)
and the softmax sums in float64 (a sum's order follows the row's width).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from nmt.data.tokenizer import EOS_ID, PAD_ID, UNK_ID

if TYPE_CHECKING:
    from nmt.decode.constraints import Constraints

BLOCK = 64  # the union of a step's lists is padded to a multiple of this many pieces


def complete(
    masks: torch.Tensor, constraints: Constraints | None, prefix: torch.Tensor | None
) -> torch.Tensor:
    """Sentences' lists masks [B, V] (bool) with eos, unk, the placeholders each sentence's
    constraints need and the pieces of its prefix [B, P] (-1 after its end) added."""
    masks = masks.clone()
    masks[:, EOS_ID] = masks[:, UNK_ID] = True
    if constraints is not None:
        symbols = constraints.symbols.to(masks.device)
        masks[:, symbols] |= constraints.need.to(masks.device)  # [B, P]
    if prefix is not None and prefix.shape[1]:
        prefix = prefix.to(masks.device)
        masks.scatter_(1, torch.where(prefix >= 0, prefix, EOS_ID), True)
    return masks


@dataclass
class Subset:
    """The target pieces of one step: `ids` [U'], the union of the rows' lists (its first
    `count`, sorted) padded to a multiple of `BLOCK` with pad, and `allow` [N, U'], each row's own
    list within it (never the padding)."""

    ids: torch.Tensor  # [U'] the union, then pad
    allow: torch.Tensor  # [N, U'] bool
    count: int  # U, the union's size

    @classmethod
    def of(cls, masks: torch.Tensor, rows: torch.Tensor) -> Subset:
        """From the sentences' lists masks [B, V] and the sentence of each row rows [N]."""
        ids = masks.any(0).nonzero().squeeze(1)  # [U]
        pad = -len(ids) % BLOCK
        allow = masks[:, ids][rows]  # [N, U]
        return cls(
            torch.cat([ids, ids.new_full((pad,), PAD_ID)]),
            torch.cat([allow, allow.new_zeros(len(rows), pad)], 1),  # [N, U']
            len(ids),
        )

    def __getitem__(self, chunk: slice) -> Subset:
        """The rows `chunk` of the step."""
        return Subset(self.ids, self.allow[chunk], self.count)


class Lists:
    """The shortlists of a running beam search's sentences, following them as they join and
    leave it (`nmt.decode.beam.BeamBatch`)."""

    def __init__(self) -> None:
        self.masks: torch.Tensor | None = None  # [b, V] bool; None: the sentences have none

    def add(
        self,
        running: int,
        masks: torch.Tensor | None,
        constraints: Constraints | None,
        prefix: torch.Tensor | None,
    ) -> None:
        """Sentences join after the `running` ones, with their lists masks [n, V] (for every
        sentence of a batch or for none), completed (`complete`)."""
        if running and (masks is None) != (self.masks is None):
            raise ValueError("shortlists are given for every sentence of a batch or for none")
        if masks is not None:
            masks = complete(masks, constraints, prefix)
            masks = torch.cat([self.masks, masks]) if running and self.masks is not None else masks
        self.masks = masks

    def keep(self, sentences: torch.Tensor) -> None:
        """Keep the lists of `sentences` (an index or a mask [b])."""
        if self.masks is not None:
            self.masks = self.masks[sentences]

    def subset(self, rows: torch.Tensor) -> Subset | None:
        """A step's pieces for rows of the sentences rows [N]; None without lists."""
        return None if self.masks is None else Subset.of(self.masks, rows)
