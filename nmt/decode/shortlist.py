"""The search's side of the lexical shortlist (`nmt.data.shortlist`): each sentence's list made
complete with what the search must be able to emit, and the target pieces one step scores.

A sentence's list always holds eos, unk, the placeholders its constraints need and its forced
prefix, so every constraint stays satisfiable whatever the list. At each step the output layer
is computed only over the union of the lists of the rows in the batch; each row is masked to its
own sentence's list before the softmax, so that its scores do not depend on the sentences it is
decoded with (`Seq2Seq.log_probs`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from nmt.data.tokenizer import EOS_ID, UNK_ID

if TYPE_CHECKING:
    from nmt.decode.constraints import Constraints


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
    """The target pieces of one step: `ids` [U], the union of the rows' lists, and `allow`
    [N, U], each row's own list within it."""

    ids: torch.Tensor  # [U] sorted
    allow: torch.Tensor  # [N, U] bool

    @classmethod
    def of(cls, masks: torch.Tensor, rows: torch.Tensor) -> Subset:
        """From the sentences' lists masks [B, V] and the sentence of each row rows [N]."""
        ids = masks.any(0).nonzero().squeeze(1)  # [U]
        return cls(ids, masks[:, ids][rows])  # [N, U]

    def __getitem__(self, chunk: slice) -> Subset:
        """The rows `chunk` of the step."""
        return Subset(self.ids, self.allow[chunk])


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
