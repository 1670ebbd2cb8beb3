"""Subword regularisation (Kudo 2018): training pairs segmented anew each time they are batched.

The store's fixed segmentation stays for validation, for the batch sampler's token cap and for
runs without sampling. With `data.sampling_alpha` > 0 the pairs of a training batch are encoded
again from the training text the store keeps (`train.LANG.txt`: cleaned, normalised and masked
as it was encoded, so placeholders are the same user symbols), with SentencePiece's sampling.
Each batch's draw is seeded by (train.seed, update, batch of the update), so that a resumed run
draws what the unbroken run drew, and every rank of a distributed run draws the same.

Encoding runs inline, in the training process: it is a small share of a training step
(docs/notes/2026-11-28-subword-sampling-cost.md), so a worker to hide it would save next to
nothing. The batch sampler plans batches by the fixed segmentation's lengths; a drawn one is
longer (more so at small alphas), so `train.batch_tokens` bounds batches less tightly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from nmt.data.store import pad_rows, verify_file
from nmt.data.tokenizer import UNK_ID, Tokenizer
from nmt.errors import NmtError


class TextLines:
    """The lines of a UTF-8 text file by number, memory-mapped (line ends found once)."""

    def __init__(self, path: Path):
        size = path.stat().st_size
        self._data = np.memmap(path, dtype=np.uint8, mode="r") if size else np.zeros(0, np.uint8)
        self._ends = np.flatnonzero(self._data == ord("\n"))  # [lines]
        self._starts = np.concatenate([[0], self._ends[:-1] + 1])

    def __len__(self) -> int:
        return len(self._ends)

    def __getitem__(self, i: int) -> str:
        return self._data[self._starts[i] : self._ends[i]].tobytes().decode("utf-8")


class SubwordSampler:
    """Draws segmentations of training pairs `indices` from the kept training text."""

    def __init__(
        self,
        data_dir: Path,
        manifest: dict[str, Any],
        tokenizers: dict[str, Tokenizer],
        alpha: float,
        nbest: int,
    ):
        self.alpha, self.nbest = alpha, nbest
        langs = (manifest["src"], manifest["tgt"])
        self.tokenizers = [tokenizers[lang] for lang in langs]
        self.lines = []
        for lang in langs:
            name = f"train.{lang}.txt"
            if name not in manifest.get("files", {}):
                raise NmtError(
                    f"preprocessed without its training text ({name}), which subword sampling "
                    "segments anew",
                    str(data_dir),
                    "run `nmt preprocess` again with this version, or set data.sampling_alpha=0",
                )
            self.lines.append(TextLines(verify_file(data_dir, manifest, name)))
        pairs = manifest["splits"]["train"]["pairs"]
        if any(len(lines) != pairs for lines in self.lines):
            raise NmtError(
                f"the training text does not have the store's {pairs} lines",
                str(data_dir),
                "run `nmt preprocess` again",
            )

    def batch(
        self, indices: np.ndarray, seed: int
    ) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
        """(source, target) of pairs `indices`, each side as padded ids and lengths: the source
        [B, S] with eos, the target [B, T + 1] framed by bos and eos (as `TokenArray.padded`)."""
        sides = []
        for side, (lines, tokenizer) in enumerate(zip(self.lines, self.tokenizers)):
            texts = [lines[i] for i in indices]
            ids = _keep_symbols_whole(
                tokenizer, texts, tokenizer.sample(texts, self.alpha, self.nbest, seed)
            )
            lengths = np.fromiter(map(len, ids), np.int64, len(ids))
            sides.append((pad_rows(ids, bos=side == 1, eos=True), lengths))
        return sides[0], sides[1]


def _keep_symbols_whole(
    tokenizer: Tokenizer, texts: list[str], sampled: list[list[int]]
) -> list[list[int]]:
    """Rows whose draw has more unknown pieces than their fixed segmentation get the fixed one.
    SentencePiece's sampling can cover a user symbol (a placeholder such as ｟0｠, whose
    characters are no pieces of their own) with an unknown piece instead of the symbol: about
    one line in a hundred with placeholders, per draw, at alpha 0.1."""
    for row, ids in enumerate(sampled):
        if UNK_ID in ids:
            fixed = tokenizer.encode([texts[row]], 1)[0]
            if fixed.count(UNK_ID) < ids.count(UNK_ID):
                sampled[row] = fixed
    return sampled
