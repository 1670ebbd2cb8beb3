"""Placeholder constraints for the search: every placeholder of the source exactly once.

A sentence's source holds placeholders ｟i｠ (see `nmt.data.protect`). At every step of greedy or
beam search, a hypothesis may emit placeholder i only if the source holds it and the hypothesis has
not emitted it yet; a closing tag only when its opening tag is the innermost tag still open; and
eos only once every placeholder is out. A hypothesis whose remaining length would not fit its
missing placeholders is forced: from then on it may emit only those (or eos, once complete). So
the output holds the source's placeholders as a multiset, with paired tags nested, by
construction, whatever the model's scores.

The state of a hypothesis is read from its tokens so far, so it follows beams through the
search's reordering without any bookkeeping of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from nmt.decode.shortlist import Columns

if TYPE_CHECKING:
    from nmt.data.protect import Masked
    from nmt.decode.shortlist import Subset


@dataclass
class StepRule:
    """What each of N rows may emit at one step."""

    forced: torch.Tensor  # [N] bool: only eos (where allowed) or an allowed placeholder
    eos_ok: torch.Tensor | None = None  # [N] bool; None: eos is always allowed
    symbols: torch.Tensor | None = None  # [P] token ids of the placeholders ｟0｠ ... ｟P-1｠
    allow: torch.Tensor | None = None  # [N, P] bool: placeholders allowed now
    token: torch.Tensor | None = None  # [N] the only token a forced prefix allows (-1: any)
    subset: Subset | None = None  # a shortlist: the pieces scored, each row's own list

    def apply(
        self, scores: torch.Tensor, rows: slice, eos: int, columns: Columns | None = None
    ) -> None:
        """Set disallowed scores [n, W] of the rows `rows` to -inf, in place; W is the
        vocabulary, or a shortlist's columns (`columns`)."""
        columns = columns or Columns(None, scores.shape[1])
        if self.token is not None:
            token = self.token[rows].unsqueeze(1)  # [n, 1]
            other = columns.pieces(scores.device) != token  # [n, W]
            scores.masked_fill_(other & (token >= 0), float("-inf"))
        if self.eos_ok is not None:
            found, _ = columns.find(torch.tensor([eos], device=scores.device))  # always listed
            ok = self.eos_ok[rows].unsqueeze(1)
            scores[:, found] = scores[:, found].masked_fill(~ok, float("-inf"))
        if self.symbols is not None and self.allow is not None:
            found, present = columns.find(self.symbols)  # [P]
            allowed = scores[:, found].masked_fill(~self.allow[rows], float("-inf"))
            scores[:, found[present]] = allowed[:, present]  # a list lacks only what is barred

    def candidates(self, eos: int) -> torch.Tensor:
        """The only tokens a forced row may take: [1 + P] (eos, then the placeholders)."""
        eos_id = self.forced.new_tensor([eos], dtype=torch.long)
        return eos_id if self.symbols is None else torch.cat([eos_id, self.symbols])


class Constraints:
    """The placeholders of each sentence of a batch: need [B, P] (the source holds ｟i｠),
    partner [B, P] (for a closing tag, the index of its opening tag; else -1) and parent
    [B, P] (for an opening tag, the index of the tag it is nested in; else -1)."""

    def __init__(
        self, symbols: torch.Tensor, need: torch.Tensor, partner: torch.Tensor, parent: torch.Tensor
    ):
        self.symbols, self.need, self.partner, self.parent = symbols, need, partner, parent
        self.count = need.sum(1)  # [B]
        # token id → placeholder index (-1: not a placeholder); ids above the last symbol
        # are clamped onto the table's final -1
        self.slot = torch.full((int(symbols.max()) + 2,), -1, dtype=torch.long)
        self.slot[symbols] = torch.arange(len(symbols))
        self.slot = self.slot.to(symbols.device)

    @classmethod
    def build(
        cls,
        symbols: Sequence[int],
        need: Sequence[Sequence[int]],
        partners: Sequence[Sequence[int]],
        parents: Sequence[Sequence[int]] | None = None,
        device: torch.device | str = "cpu",
    ) -> Constraints:
        """From per-sentence lists: the placeholder indices its source holds, and the partner
        and parent of each index (-1: none). A sentence without placeholders may emit none;
        a tag whose partner or parent was cut off the source (truncation) loses that link."""
        need_t = torch.zeros(len(need), len(symbols), dtype=torch.bool)
        partner_t = torch.full(need_t.shape, -1, dtype=torch.long)
        parent_t = torch.full(need_t.shape, -1, dtype=torch.long)
        for b, (indices, pairs) in enumerate(zip(need, partners)):
            present = set(indices)
            need_t[b, list(present)] = True
            closes = {i: pairs[i] for i in present if i < len(pairs) and pairs[i] in present}
            for i, opening in closes.items():
                partner_t[b, i] = opening
            opens = set(closes.values())
            for i in opens:
                up = parents[b][i] if parents is not None and i < len(parents[b]) else -1
                parent_t[b, i] = up if up in opens else -1
        return cls(torch.tensor(list(symbols)), need_t, partner_t, parent_t).to(device)

    @classmethod
    def for_sources(
        cls,
        sources: Sequence[Sequence[int]],
        lines: Sequence[Masked],
        symbols: tuple[Sequence[int], Sequence[int]],
        device: torch.device | str = "cpu",
    ) -> Constraints:
        """The constraints of a batch: each sentence's subword ids (the placeholders it still
        holds, after any truncation), the masked line it comes from (its spans' partners and
        parents), and the placeholders' ids in the (source, target) vocabularies."""
        index = {symbol: i for i, symbol in enumerate(symbols[0])}
        need = [sorted({index[t] for t in seq if t in index}) for seq in sources]
        partners = [[span.partner for span in line.spans] for line in lines]
        parents = [[span.parent for span in line.spans] for line in lines]
        return cls.build(symbols[1], need, partners, parents, device)

    def __getitem__(self, rows: torch.Tensor) -> Constraints:
        """The constraints of the sentences `rows` (an index or a mask)."""
        return Constraints(self.symbols, self.need[rows], self.partner[rows], self.parent[rows])

    @staticmethod
    def cat(parts: Sequence[Constraints]) -> Constraints:
        """The sentences of several batches' constraints (one vocabulary), in order."""
        need, partner, parent = (
            torch.cat([getattr(c, name) for c in parts]) for name in ("need", "partner", "parent")
        )
        return Constraints(parts[0].symbols, need, partner, parent)

    def to(self, device: torch.device | str) -> Constraints:
        tensors = (self.symbols, self.need, self.partner, self.parent)
        return Constraints(*(x.to(device) for x in tensors))

    def limits(self, limit: torch.Tensor) -> torch.Tensor:
        """Output length limits [B] raised where needed, so that every placeholder fits."""
        return torch.maximum(limit, self.count)

    def rule(
        self,
        history: torch.Tensor,
        sentence: torch.Tensor,
        t: int | torch.Tensor,
        limit: torch.Tensor,
    ) -> StepRule:
        """What rows may emit at step t (one for all, or [N]), given their tokens so far
        history [N, W] (padding after each row's t), the sentence each row belongs to [N], and
        that sentence's length limit [N]."""
        need, partner = self.need[sentence], self.partner[sentence]  # [N, P]
        rows, width = need.shape
        slot = self.slot[history.clamp(max=len(self.slot) - 1)]  # [N, t] placeholder index
        steps = torch.arange(history.shape[1], device=history.device).expand_as(slot)
        when = torch.full((rows, width + 1), -1, dtype=torch.long, device=history.device)
        when = when.scatter_reduce(1, slot.masked_fill(slot < 0, width), steps, "amax")
        when = when[:, :width]  # [N, P] the step each placeholder was emitted at, -1: not yet
        placed = when >= 0
        closing, parent = partner >= 0, self.parent[sentence]  # [N, P]
        # a closing tag's flags go to its opening tag, an opening tag's to its parent
        at_opening, at_parent = partner.clamp(min=0), parent.clamp(min=0)
        zeros = torch.zeros_like(partner)
        is_open = zeros.scatter_add(1, at_opening, closing.long()) > 0  # [N, P] paired opening
        closed = zeros.scatter_add(1, at_opening, (placed & closing).long()) > 0
        still_open = is_open & placed & ~closed
        # the innermost open tag: its index, and the step it was opened at (-1: none open)
        innermost_at, innermost = torch.where(still_open, when, -1).max(1, keepdim=True)
        innermost = innermost.masked_fill(innermost_at < 0, -1)  # [N, 1]
        # children not yet placed, counted at their parent: a tag closes only after them
        waiting = (is_open & need & ~placed & (parent >= 0)).long()
        pending = zeros.scatter_add(1, at_parent, waiting).gather(1, at_opening)  # [N, P]
        closes_now = partner == innermost  # closes the innermost open tag...
        opens_now = parent == innermost  # ...or opens inside it, as in the source
        allow = need & ~placed & (~closing | (closes_now & (pending == 0))) & (~is_open | opens_now)
        missing = (need & ~placed).sum(1)  # [N]
        return StepRule(
            forced=t >= limit - missing,
            eos_ok=missing == 0,
            symbols=self.symbols,
            allow=allow,
        )
