"""The binarised, memory-mapped corpus store and its manifest.

A preprocessed directory holds:

    manifest.json                     languages, vocabularies, pair counts, hashes, config, version
    spm.model                         joint SentencePiece model (or spm.SRC.model + spm.TGT.model)
    SPLIT.LANG.bin                    every token id of the split, concatenated (uint16, or int32
                                      when the vocabulary has more than 65,536 entries)
    SPLIT.LANG.idx                    int64 offsets, one more than sentences: sentence i is
                                      bin[idx[i]:idx[i+1]]
    dev.LANG.txt, test.LANG.txt       the untouched dev/test text (references for scoring)

Ids are stored without bos/eos; `TokenArray.padded` adds them when it builds a batch. Writers
append chunk by chunk, so memory stays flat however large the split.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nmt import __version__
from nmt.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, Tokenizer
from nmt.errors import NmtError
from nmt.fileio import atomic_write_json

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest dtype that holds every id of the vocabulary."""
    return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.int32)


def flatten(seqs: Sequence[Sequence[int]], dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """Sentences of ids as (lengths [n] int64, all ids concatenated [sum of lengths])."""
    lengths = np.fromiter(map(len, seqs), np.int64, len(seqs))
    ids = np.fromiter(itertools.chain.from_iterable(seqs), dtype, int(lengths.sum()))
    return lengths, ids


class TokenArrayWriter:
    """Appends encoded sentences to SPLIT.LANG.bin/.idx."""

    def __init__(self, prefix: Path, dtype: np.dtype):
        self.dtype = dtype
        self.bin = open(f"{prefix}.bin", "wb")  # noqa: SIM115 (closed in close())
        self.idx = open(f"{prefix}.idx", "wb")  # noqa: SIM115
        np.zeros(1, np.int64).tofile(self.idx)
        self.sentences = 0
        self.tokens = 0

    def append(self, lengths: np.ndarray, ids: np.ndarray) -> None:
        """Append sentences given as their lengths and their concatenated ids (see flatten)."""
        ids.astype(self.dtype, copy=False).tofile(self.bin)
        (self.tokens + np.cumsum(lengths)).tofile(self.idx)
        self.sentences += len(lengths)
        self.tokens += len(ids)

    def close(self) -> None:
        self.bin.close()
        self.idx.close()


class TokenArray:
    """Read-only, memory-mapped view of one side of one split."""

    def __init__(self, prefix: Path, dtype: np.dtype):
        self.offsets = np.fromfile(f"{prefix}.idx", dtype=np.int64)
        self.lengths = np.diff(self.offsets)  # [n]
        n_tokens = int(self.offsets[-1])
        self.tokens = (
            np.memmap(f"{prefix}.bin", dtype=dtype, mode="r", shape=(n_tokens,))
            if n_tokens
            else np.zeros(0, dtype)
        )

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, i: int) -> np.ndarray:
        return np.asarray(self.tokens[self.offsets[i] : self.offsets[i + 1]], dtype=np.int64)

    def padded(self, indices: np.ndarray, bos: bool = False, eos: bool = False) -> np.ndarray:
        """Sentences `indices` as one padded int64 array, optionally framed by bos/eos.

        Returns [len(indices), max_len + bos + eos], padded with PAD_ID.
        """
        indices = np.asarray(indices)
        lens = self.lengths[indices]  # [B]
        width = int(lens.max(initial=0))
        out = np.full((len(indices), width + bos + eos), PAD_ID, dtype=np.int64)
        col = np.arange(width)
        mask = col[None, :] < lens[:, None]  # [B, width]
        positions = self.offsets[indices][:, None] + col[None, :]  # [B, width]
        out[:, bos : bos + width][mask] = self.tokens[positions[mask]]
        if bos:
            out[:, 0] = BOS_ID
        if eos:
            out[np.arange(len(indices)), bos + lens] = EOS_ID
        return out


def write_manifest(data_dir: Path, manifest: dict[str, Any]) -> None:
    atomic_write_json(
        Path(data_dir) / MANIFEST,
        {"format_version": FORMAT_VERSION, "nmt_version": __version__, **manifest},
    )


def read_manifest(data_dir: Path) -> dict[str, Any]:
    """The manifest of a preprocessed directory, checked for a format this version reads."""
    path = Path(data_dir) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NmtError(
            "not a preprocessed directory (no manifest.json)",
            str(data_dir),
            "run `nmt preprocess ... --out DIR` first and pass that DIR",
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise NmtError(
            f"manifest is corrupt: {exc}", str(path), "run `nmt preprocess` again with --overwrite"
        ) from None
    if manifest.get("format_version") != FORMAT_VERSION:
        raise NmtError(
            f"written in store format {manifest.get('format_version')} by nmt "
            f"{manifest.get('nmt_version')}; this nmt {__version__} reads format {FORMAT_VERSION}",
            str(path),
            "run `nmt preprocess` again with this version",
        )
    return manifest


def load_tokenizers(data_dir: Path, manifest: dict[str, Any]) -> dict[str, Tokenizer]:
    """The tokenizer of each language, keyed by language code (one object when joint)."""
    files = {lang: info["file"] for lang, info in manifest["tokenizers"].items()}
    loaded = {name: Tokenizer.load(Path(data_dir) / name) for name in set(files.values())}
    return {lang: loaded[name] for lang, name in files.items()}


def open_split(
    data_dir: Path, split: str, manifest: dict[str, Any]
) -> tuple[TokenArray, TokenArray]:
    """(source, target) token arrays of a split."""
    if split not in manifest["splits"]:
        raise NmtError(
            f"no `{split}` split here; it has {', '.join(manifest['splits'])}",
            str(data_dir),
            "preprocess with --test to add a test split",
        )
    dtype = np.dtype(manifest["dtype"])
    return tuple(
        TokenArray(Path(data_dir) / f"{split}.{lang}", dtype)  # type: ignore[return-value]
        for lang in (manifest["src"], manifest["tgt"])
    )
