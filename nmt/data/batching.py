"""Batches over the binarised store: a dataset that pads, and a token-capped batch sampler.

The sampler's recipe (as in fairseq and Marian): shuffle the pairs, split them into large pools,
sort each pool by length, cut it into batches whose padded size stays under a token cap, then
shuffle the order of the batches. Sorting makes the pairs of a batch nearly equal in length (little
padding); pools and the final shuffle keep the order random from epoch to epoch. Everything is a
function of (seed, epoch), so a run stopped mid-epoch resumes on exactly the same batches.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nmt.data.store import open_split, read_manifest
from nmt.data.subword_sampling import SubwordSampler
from nmt.data.tokenizer import PAD_ID
from nmt.errors import NmtError

TARGET_BIN = 2  # target-length step of the sort key; see TokenBatchSampler._cut


@dataclass
class Batch:
    """Padded tensors of one batch; `indices` are the pairs' positions in the split."""

    src: torch.Tensor  # [B, S] source ids + eos, PAD_ID-padded
    src_lengths: torch.Tensor  # [B] source lengths with eos
    tgt_in: torch.Tensor  # [B, T] bos + target ids (decoder input)
    tgt_out: torch.Tensor  # [B, T] target ids + eos (what the decoder predicts)
    indices: np.ndarray  # [B]

    @property
    def target_tokens(self) -> int:
        return int((self.tgt_out != PAD_ID).sum())

    def to(self, device: torch.device | str) -> Batch:
        move = {
            k: getattr(self, k).to(device, non_blocking=True)
            for k in ("src", "src_lengths", "tgt_in", "tgt_out")
        }
        return Batch(**move, indices=self.indices)


class ParallelDataset:
    """One split of a preprocessed directory; pairs over `max_len` subwords are left out.

    `src_sizes` / `tgt_sizes` are the lengths of the tensors a pair becomes in a batch (source +
    eos; target + one of bos/eos), which is what the sampler's token cap counts.
    """

    def __init__(self, data_dir: Path, split: str, max_len: int | None = None):
        self.manifest = read_manifest(data_dir)
        self.src, self.tgt = open_split(data_dir, split, self.manifest)
        self.src_sizes = self.src.lengths + 1  # [N]
        self.tgt_sizes = self.tgt.lengths + 1  # [N]
        keep = np.ones(len(self.src), dtype=bool)
        if max_len is not None:
            keep = (self.src.lengths <= max_len) & (self.tgt.lengths <= max_len)
        self.indices = np.flatnonzero(keep)  # pairs that may be batched
        self.skipped = len(keep) - len(self.indices)
        self.resegment: SubwordSampler | None = None  # subword regularisation, when set

    def __len__(self) -> int:
        return len(self.src)

    def batch(self, indices: Sequence[int] | np.ndarray, draw: int | None = None) -> Batch:
        """Pad the given pairs into one Batch (vectorised gather from the memory map); with a
        `resegment` sampler and a `draw` seed, in a segmentation drawn for this batch."""
        indices = np.asarray(indices)
        if self.resegment is not None and draw is not None:
            (src, src_lengths), (tgt, _) = self.resegment.batch(indices, draw)
            src_lengths = src_lengths + 1  # with eos
        else:
            src = self.src.padded(indices, eos=True)  # [B, S]
            tgt = self.tgt.padded(indices, bos=True, eos=True)  # [B, T+1]
            src_lengths = self.src_sizes[indices]
        tgt = torch.from_numpy(tgt)
        return Batch(
            src=torch.from_numpy(src),
            src_lengths=torch.from_numpy(src_lengths),
            tgt_in=tgt[:, :-1],
            tgt_out=tgt[:, 1:],
            indices=indices,
        )

    # torch's DataLoader fetches a whole batch through this when given our sampler
    __getitems__ = batch


class TokenBatchSampler(torch.utils.data.Sampler):
    """Yields arrays of pair indices; each batch's padded size is at most `max_tokens` per side.

    With `shuffle=False` (validation, translation) the whole set is sorted by length and batches
    come in that order. `state_dict()` / `load_state_dict()` resume mid-epoch: the batches of an
    epoch depend only on (seed, epoch), and `start` counts those already yielded.
    """

    def __init__(
        self,
        src_sizes: np.ndarray,
        tgt_sizes: np.ndarray,
        max_tokens: int,
        *,
        indices: np.ndarray | None = None,
        shuffle: bool = True,
        seed: int = 0,
        pool_size: int = 100_000,
    ):
        self.src_sizes, self.tgt_sizes = np.asarray(src_sizes), np.asarray(tgt_sizes)
        self.indices = np.arange(len(self.src_sizes)) if indices is None else np.asarray(indices)
        self.max_tokens, self.shuffle, self.seed = max_tokens, shuffle, seed
        self.pool_size = pool_size
        self.epoch, self.start = 0, 0
        self._cache: tuple[int, list[np.ndarray]] | None = None
        longest = int(
            np.maximum(self.src_sizes[self.indices], self.tgt_sizes[self.indices]).max(initial=0)
        )
        if longest > max_tokens:
            raise NmtError(
                f"a pair needs {longest} tokens, more than the batch cap of {max_tokens}",
                "train.batch_tokens",
                "raise train.batch_tokens or lower train.max_len",
            )

    def batches(self, epoch: int) -> list[np.ndarray]:
        """All batches of `epoch`, in the order they will be yielded."""
        if self._cache and self._cache[0] == epoch:
            return self._cache[1]
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(self.indices) if self.shuffle else self.indices
        pool = self.pool_size if self.shuffle else max(len(order), 1)
        batches: list[np.ndarray] = []
        for begin in range(0, len(order), pool):
            batches += self._cut(order[begin : begin + pool])
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        self._cache = (epoch, batches)
        return batches

    def _cut(self, pool: np.ndarray) -> list[np.ndarray]:
        """Sort a pool by length and cut it greedily into batches under the token cap.

        The sort key is (target size // TARGET_BIN, source size): binning the target in steps of
        two leaves more pairs per bin to match on source length, which cuts padding
        (docs/notes/2026-11-24-batching-padding-share.md). lexsort is stable, so ties stay
        shuffled.
        """
        pool = pool[np.lexsort((self.src_sizes[pool], self.tgt_sizes[pool] // TARGET_BIN))]
        src, tgt = self.src_sizes[pool], self.tgt_sizes[pool]
        ends, i = [], 0
        while i < len(pool):
            width = min(len(pool) - i, self.max_tokens // max(src[i], tgt[i]))
            count = np.arange(1, width + 1)
            fits = (count * np.maximum.accumulate(src[i : i + width]) <= self.max_tokens) & (
                count * np.maximum.accumulate(tgt[i : i + width]) <= self.max_tokens
            )
            i += width if fits.all() else int(fits.argmin())
            ends.append(i)
        return np.split(pool, ends[:-1])

    def __len__(self) -> int:
        return len(self.batches(self.epoch))

    def __iter__(self) -> Iterator[np.ndarray]:
        batches = self.batches(self.epoch)
        while self.start < len(batches):
            self.start += 1
            yield batches[self.start - 1]
        self.epoch, self.start = self.epoch + 1, 0

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "start": self.start, "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.start, self.seed = state["epoch"], state["start"], state["seed"]
        self._cache = None


def length_batches(lengths: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Indices of the non-empty sequences (`lengths` without eos), sorted by length and cut
    into decoding batches whose padded size (sentences x (longest + eos)) stays within
    `max_tokens` (a longer sentence goes alone)."""
    order = sorted((i for i, n in enumerate(lengths) if n), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        if current and (len(current) + 1) * (lengths[i] + 1) > max(max_tokens, 1):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def padding_share(
    batches: Sequence[np.ndarray], src_sizes: np.ndarray, tgt_sizes: np.ndarray
) -> float:
    """Share of padding among all tokens of the padded batches, both sides together."""
    padded = real = 0
    for b in batches:
        for sizes in (src_sizes[b], tgt_sizes[b]):
            padded += len(b) * int(sizes.max())
            real += int(sizes.sum())
    return 1 - real / padded if padded else 0.0
