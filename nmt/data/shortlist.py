"""A lexical shortlist: the target pieces that can plausibly translate each source piece.

The search's output layer then scores only a sentence's list (the union of its source pieces'
rows, the most frequent target pieces, and what its constraints need: `nmt.decode.shortlist`),
as Marian's `--shortlist` and CTranslate2's vocabulary map do, instead of the whole vocabulary.

Built from the preprocessed training split (`build_shortlist`): in a seeded sample of at most
`MAX_PAIRS` pairs, each source piece's target pieces are ranked by the Dice coefficient of their
sentence co-occurrence, 2 c(s, t) / (c(s) + c(t)) with c counting sentences: a translation
co-occurs with its source piece more often than its own frequency alone explains; frequent pieces
(`the`, `▁,`) rank low here and come in through the frequent list instead. Counting is
vectorised over chunks of sentences (one sort per chunk), a few seconds for 100k pairs.

Stored in a checkpoint's vocabulary entry (`entry`, `Shortlist.from_entry`): `table` [V_src,
K] (best first, -1 where a piece has fewer), `frequent` (target pieces by frequency, most
frequent first). How many of each a search uses is `decode.shortlist_k` and
`decode.shortlist_frequent`, at most what was stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nmt.data.store import open_split, padded, read_manifest
from nmt.data.tokenizer import PAD_ID
from nmt.errors import NmtError

STORED_K = 100  # target pieces kept per source piece (a search may use fewer)
MAX_PAIRS = 100_000  # training pairs sampled for the counts
MAX_LEN = 250  # longer pairs are left out of the counts (their cross product is large)
CHUNK_KEYS = 4_000_000  # co-occurring (source, target) pieces counted per sort


@dataclass
class Shortlist:
    """Each source piece's likely target pieces, and the target pieces by frequency."""

    table: torch.Tensor  # [V_src, K] target pieces per source piece, best first; -1: none
    frequent: torch.Tensor  # [F] target pieces, most frequent first
    tgt_size: int  # V_tgt

    def masks(self, src: torch.Tensor, k: int, n: int) -> torch.Tensor:
        """Each sentence's list from its source pieces src [B, S] (padded): the first k of
        each piece's row and the n most frequent target pieces → [B, V_tgt] bool. What its
        constraints need comes on top (`nmt.decode.shortlist.complete`)."""
        rows = self.table[src.clamp(0, self.table.shape[0] - 1), :k]  # [B, S, k]
        rows = rows.masked_fill((src == PAD_ID).unsqueeze(2), -1).flatten(1)  # [B, S*k]
        mask = torch.zeros(src.shape[0], self.tgt_size + 1, dtype=torch.bool, device=src.device)
        mask.scatter_(1, torch.where(rows < 0, self.tgt_size, rows), True)  # -1 → the spare
        mask[:, self.frequent[:n]] = True
        return mask[:, : self.tgt_size]

    def to(self, device: torch.device | str) -> Shortlist:
        return Shortlist(self.table.to(device), self.frequent.to(device), self.tgt_size)

    def entry(self) -> dict[str, Any]:
        """As a checkpoint stores it (int32 tensors: loadable with weights_only)."""
        return {
            "method": "dice",
            "table": self.table.to(torch.int32).cpu(),
            "frequent": self.frequent.to(torch.int32).cpu(),
        }

    @classmethod
    def from_entry(cls, entry: Any, src_size: int, tgt_size: int, where: str) -> Shortlist:
        """A stored shortlist, checked against the vocabulary sizes: a damaged one is an
        NmtError, not ids out of range in the middle of a search."""
        fix = "add a new one with `nmt shortlist CHECKPOINT --data DIR --out NEW.pt`"
        if not isinstance(entry, dict):
            raise NmtError("the checkpoint's shortlist is not readable", where, fix)
        table, frequent = entry.get("table"), entry.get("frequent")
        if not (
            isinstance(table, torch.Tensor)
            and isinstance(frequent, torch.Tensor)
            and table.dim() == 2
            and table.shape[0] == src_size
            and frequent.dim() == 1
            and not table.is_floating_point()
            and not frequent.is_floating_point()
        ):
            raise NmtError("the checkpoint's shortlist does not fit its vocabulary", where, fix)
        table, frequent = table.long(), frequent.long()
        if bool(((table < -1) | (table >= tgt_size)).any()) or bool(
            ((frequent < 0) | (frequent >= tgt_size)).any()
        ):
            raise NmtError("the checkpoint's shortlist holds pieces out of range", where, fix)
        return cls(table, frequent, tgt_size)


def build_shortlist(
    data_dir: Path, k: int = STORED_K, max_pairs: int = MAX_PAIRS, seed: int = 1
) -> Shortlist:
    """The shortlist of a preprocessed directory's training split (see the module docstring);
    pairs sampled with `seed`, so a run and its resumption build the same one."""
    manifest = read_manifest(data_dir)
    src, tgt = open_split(data_dir, "train", manifest)
    sizes = {lang: info["vocab_size"] for lang, info in manifest["tokenizers"].items()}
    v_src, v_tgt = sizes[manifest["src"]], sizes[manifest["tgt"]]
    pairs = np.flatnonzero((src.lengths <= MAX_LEN) & (tgt.lengths <= MAX_LEN))
    if len(pairs) > max_pairs:
        pairs = np.sort(np.random.default_rng(seed).choice(pairs, max_pairs, replace=False))
    count_src, count_tgt = np.zeros(v_src, np.int64), np.zeros(v_tgt, np.int64)
    tokens_tgt = np.zeros(v_tgt, np.int64)
    found: list[tuple[np.ndarray, np.ndarray]] = []  # each chunk's (keys, counts)
    per_pair = int(np.mean(src.lengths[pairs] * tgt.lengths[pairs])) if len(pairs) else 1
    step = max(1, CHUNK_KEYS // max(per_pair, 1))
    for start in range(0, len(pairs), step):
        chunk = pairs[start : start + step]
        s = _unique_rows(padded(src.tokens, src.offsets, src.lengths, chunk), v_src)
        t_ids = padded(tgt.tokens, tgt.offsets, tgt.lengths, chunk)
        tokens_tgt += np.bincount(t_ids[t_ids != PAD_ID], minlength=v_tgt)
        t = _unique_rows(t_ids, v_tgt)
        count_src += np.bincount(s[1], minlength=v_src)
        count_tgt += np.bincount(t[1], minlength=v_tgt)
        found.append(np.unique(_cross(s, t, v_tgt), return_counts=True))
    keys, counts = _merge(found)
    frequent = np.argsort(-tokens_tgt, kind="stable")[: int((tokens_tgt > 0).sum())]
    table = _top_k(keys, counts, count_src, count_tgt, v_tgt, k)
    return Shortlist(table, torch.from_numpy(frequent), v_tgt)


def _unique_rows(ids: np.ndarray, vocab: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's distinct pieces of ids [B, L] (PAD left out) as (row [M], piece [M]),
    sorted by row."""
    keys = np.unique((np.arange(ids.shape[0])[:, None] * vocab + ids)[ids != PAD_ID])
    return keys // vocab, keys % vocab


def _cross(
    s: tuple[np.ndarray, np.ndarray], t: tuple[np.ndarray, np.ndarray], v_tgt: int
) -> np.ndarray:
    """Every (source piece, target piece) of each sentence, as keys s * V_tgt + t: for each
    source piece, a ragged range over its sentence's target pieces (vectorised)."""
    (s_row, s_piece), (t_row, t_piece) = s, t
    rows = max(int(s_row.max(initial=-1)), int(t_row.max(initial=-1))) + 1
    t_start = np.searchsorted(t_row, np.arange(rows))  # [B] first target piece of each row
    repeat = np.bincount(t_row, minlength=rows)[s_row]  # [M] target pieces of its sentence
    total = int(repeat.sum())
    first = np.repeat(np.cumsum(repeat) - repeat, repeat)  # [total] where each run starts
    index = np.repeat(t_start[s_row], repeat) + np.arange(total) - first  # [total]
    dtype = np.uint32 if (s_piece.max(initial=0) + 1) * v_tgt < 2**32 else np.int64
    return np.repeat(s_piece.astype(dtype), repeat) * dtype(v_tgt) + t_piece[index].astype(dtype)


def _merge(found: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Chunks' sorted (key, count) lists as one, the counts of equal keys added."""
    if len(found) == 1:
        return found[0]
    keys, inverse = np.unique(np.concatenate([k for k, _ in found]), return_inverse=True)
    counts = np.bincount(inverse, np.concatenate([c for _, c in found]), len(keys))
    return keys, counts.astype(np.int64)


def _top_k(
    keys: np.ndarray,
    counts: np.ndarray,
    count_src: np.ndarray,
    count_tgt: np.ndarray,
    v_tgt: int,
    k: int,
) -> torch.Tensor:
    """The k target pieces of highest Dice per source piece → [V_src, k], -1 where fewer
    co-occur."""
    s, t = keys // v_tgt, keys % v_tgt  # keys are sorted: by source piece, then target piece
    dice = 2.0 * counts / (count_src[s] + count_tgt[t])  # in (0, 1]
    order = np.argsort(s + (1.0 - dice) / 2, kind="stable")  # best first, ties by id
    s, t = s[order], t[order]
    rank = np.arange(len(s)) - np.searchsorted(s, s)  # position within its source piece
    keep = rank < k
    table = np.full((len(count_src), k), -1, np.int64)
    table[s[keep], rank[keep]] = t[keep]
    return torch.from_numpy(table)
