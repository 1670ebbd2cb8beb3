"""The search's side of the lexical shortlist (`nmt.data.shortlist`): each sentence's list made
complete with what the search must be able to emit, and the target pieces one step scores.

A sentence's list always holds eos, unk, the placeholders its constraints need and its forced
prefix, so every constraint stays satisfiable whatever the list. At each step the output layer
is computed only over the union of the lists of the rows in the batch (`Subset`), and the
search masks, normalises and ranks in the union's columns, mapping the pieces it picks back to
their ids: nothing of vocabulary width is computed. Each row is masked to its own sentence's
list before the softmax, so its scores do not depend on the sentences it is decoded with
(`Seq2Seq.log_probs`): in float64 to the last bit, as the union is padded to a multiple of
`BLOCK` pieces (a matrix product computes its last, narrower columns apart, in another order);
in float32 and bf16 to the last bits, as the other products are. The union is made when
sentences join and kept while they leave (`Lists`), with the output layer's rows gathered for
it once.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
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
    """The target pieces of one step: `ids` [U'], the union of the sentences' lists (its
    first `count`, sorted) padded to a multiple of `BLOCK` with pad; `penalty` [B, U'], 0 in
    each sentence's own list and -inf outside it (and at the padding), added to its rows'
    logits (an addition: masking a float tensor by a bool one is 10x slower on the CPU);
    `rows` [N], the sentence of each row; and `columns` [V], the column of each piece in `ids`
    (-1: not there). The search scores, masks and ranks in these columns and maps the tokens
    it picks back through `ids`. `cache` holds what the models derive from `ids` (the output
    layer's rows: `Seq2Seq.output_rows`); it is shared by every Subset of the same union."""

    ids: torch.Tensor  # [U'] the union, then pad
    penalty: torch.Tensor  # [B, U'] float32: 0 or -inf
    rows: torch.Tensor  # [N] long
    count: int  # U, the union's size
    columns: torch.Tensor  # [V] long
    cache: dict = field(default_factory=dict, compare=False)

    @classmethod
    def of(cls, masks: torch.Tensor, rows: torch.Tensor) -> Subset:
        """From the sentences' lists masks [B, V] and the sentence of each row rows [N]."""
        ids = masks.any(0).nonzero().squeeze(1)  # [U]
        count, pad = len(ids), -len(ids) % BLOCK
        ids = torch.cat([ids, ids.new_full((pad,), PAD_ID)])  # [U']
        columns = torch.full((masks.shape[1],), -1, dtype=torch.long, device=masks.device)
        columns[ids[:count]] = torch.arange(count, device=masks.device)
        penalty = torch.where(masks[:, ids], 0.0, float("-inf"))  # [B, U']
        penalty[:, count:] = float("-inf")
        return cls(ids, penalty, rows, count, columns)

    def keep(self, sentences: torch.Tensor) -> Subset:
        """The union kept for the sentences `sentences` (an index or a mask [B]) alone: it
        still holds their lists."""
        return dataclasses.replace(self, penalty=self.penalty[sentences])

    def __getitem__(self, chunk: slice) -> Subset:
        """The rows `chunk` of the step."""
        return dataclasses.replace(self, rows=self.rows[chunk])

    def row_penalty(self) -> torch.Tensor:
        """The penalty of each row [N, U']."""
        return self.penalty.index_select(0, self.rows)


class Lists:
    """The shortlists of a running beam search's sentences, following them as they join and
    leave it (`nmt.decode.beam.BeamBatch`). The union is made when sentences join and kept
    while they leave (it still holds every list left), so what the models derived from it
    (`Subset.cache`) is not rebuilt."""

    def __init__(self) -> None:
        self.masks: torch.Tensor | None = None  # [b, V] bool; None: the sentences have none
        self._union: Subset | None = None  # of the sentences now in the search

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
        self.masks, self._union = masks, None

    def keep(self, sentences: torch.Tensor) -> None:
        """Keep the lists of `sentences` (an index or a mask [b])."""
        if self.masks is not None:
            self.masks = self.masks[sentences]
            self._union = None if self._union is None else self._union.keep(sentences)

    def subset(self, rows: torch.Tensor) -> Subset | None:
        """A step's pieces for rows of the sentences rows [N]; None without lists."""
        if self.masks is None:
            return None
        if self._union is None:
            self._union = Subset.of(self.masks, rows)
        return dataclasses.replace(self._union, rows=rows)


class Columns:
    """Where target pieces sit in a step's scores: at their own ids (the whole vocabulary), or
    in a subset's columns, where a piece outside the union has none."""

    def __init__(self, subset: Subset | None, vocab: int):
        self.subset, self.vocab = subset, vocab

    def find(self, pieces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The columns [C] of `pieces` [C] (0 for a piece without one) and which have one."""
        if self.subset is None:
            return pieces, torch.ones_like(pieces, dtype=torch.bool)
        found = self.subset.columns[pieces]
        return found.clamp(min=0), found >= 0

    def gather(self, scores: torch.Tensor, pieces: torch.Tensor) -> torch.Tensor:
        """scores [n, W] of `pieces` [C] → [n, C], -inf for a piece without a column."""
        found, present = self.find(pieces)
        return scores[:, found].masked_fill_(~present, float("-inf"))

    def bar(self, scores: torch.Tensor, pieces: list[int]) -> None:
        """Set the scores [n, W] of `pieces` to -inf, in place, where they have a column."""
        if self.subset is None:
            scores[:, pieces] = float("-inf")
            return
        found, present = self.find(torch.tensor(pieces, device=scores.device))
        scores[:, found[present]] = float("-inf")

    def pieces(self, device: torch.device) -> torch.Tensor:
        """The target piece of each column [W] (pad at a subset's padding)."""
        if self.subset is None:
            return torch.arange(self.vocab, device=device)
        return self.subset.ids


def expand(scores: torch.Tensor, subset: Subset, vocab: int) -> torch.Tensor:
    """Scores [n, U'] over a subset's columns → [n, V] over the vocabulary, -inf elsewhere."""
    full = scores.new_full((scores.shape[0], vocab), float("-inf"))
    return full.index_copy_(1, subset.ids[: subset.count], scores[:, : subset.count])
