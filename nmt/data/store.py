"""The binarised, memory-mapped corpus store and its manifest.

A preprocessed directory holds:

    manifest.json                     languages, vocabularies, pair counts, hashes, config, version
    spm.model                         joint SentencePiece model (or spm.SRC.model + spm.TGT.model)
    SPLIT.LANG.bin                    every token id of the split, concatenated (uint16, or int32
                                      when the vocabulary has more than 65,536 entries)
    SPLIT.LANG.idx                    int64 offsets, one more than sentences: sentence i is
                                      bin[idx[i]:idx[i+1]]
    dev.LANG.txt, test.LANG.txt       the untouched dev/test text (references for scoring)
    train.LANG.txt                    the training text as it was encoded (cleaned, normalised,
                                      masked), which subword sampling segments anew

Ids are stored without bos/eos; `TokenArray.padded` adds them when it builds a batch. Writers
append chunk by chunk, so memory stays flat however large the split.

The manifest lists every file with its size and sha256 and carries its own checksum, so a
truncated or corrupted store is an error when it is opened, not a silently different corpus.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
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
_STORE_FILE = re.compile(
    r"manifest\.json|spm(\.[^.]+)?\.model|(train|dev|test)\.[^.]+\.(bin|idx)"
    r"|(train|dev|test)\.[^.]+\.txt"
)
_REFRESH = "run `nmt preprocess` again (with --overwrite) to rebuild it"


def is_store_file(name: str) -> bool:
    """Whether a file name is one `nmt preprocess` writes (and may replace)."""
    return _STORE_FILE.fullmatch(name) is not None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _manifest_sha256(manifest: dict[str, Any]) -> str:
    body = {k: v for k, v in manifest.items() if k != "sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode("utf-8")).hexdigest()


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
        self.idx.write(np.zeros(1, np.int64).data)
        self.sentences = 0
        self.tokens = 0

    def append(self, lengths: np.ndarray, ids: np.ndarray) -> None:
        """Append sentences given as their lengths and their concatenated ids (see flatten)."""
        # file.write, not ndarray.tofile: a full disk is then an OSError that says so
        self.bin.write(np.ascontiguousarray(ids, dtype=self.dtype).data)
        self.idx.write((self.tokens + np.cumsum(lengths)).data)
        self.sentences += len(lengths)
        self.tokens += len(ids)

    def close(self) -> None:
        self.bin.close()
        self.idx.close()


class TokenArray:
    """Read-only, memory-mapped view of one side of one split; its files are checked against
    each other (offsets that start at 0, never fall, and end at the .bin's size)."""

    def __init__(self, prefix: Path, dtype: np.dtype):
        idx, bin_ = Path(f"{prefix}.idx"), Path(f"{prefix}.bin")
        if idx.stat().st_size % 8 or not idx.stat().st_size:
            raise NmtError("truncated index (not whole int64 offsets)", str(idx), _REFRESH)
        self.offsets = np.fromfile(idx, dtype=np.int64)
        self.lengths = np.diff(self.offsets)  # [n]
        n_tokens = int(self.offsets[-1])
        if self.offsets[0] != 0 or (self.lengths < 0).any():
            raise NmtError("corrupt index (offsets out of order)", str(idx), _REFRESH)
        if bin_.stat().st_size != n_tokens * dtype.itemsize:
            raise NmtError(
                f"holds {bin_.stat().st_size} bytes, but its index says "
                f"{n_tokens * dtype.itemsize} (truncated?)",
                str(bin_),
                _REFRESH,
            )
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
        """Sentences `indices` as one padded int64 array, optionally framed by bos/eos."""
        return padded(self.tokens, self.offsets, self.lengths, indices, bos, eos)


def padded(
    tokens: np.ndarray,
    offsets: np.ndarray,
    lengths: np.ndarray,
    indices: np.ndarray,
    bos: bool = False,
    eos: bool = False,
) -> np.ndarray:
    """Sentences `indices` of concatenated `tokens` (sentence i at offsets[i], lengths[i] long)
    as [len(indices), max_len + bos + eos] int64, padded with PAD_ID (a vectorised gather)."""
    indices = np.asarray(indices)
    lens = lengths[indices]  # [B]
    width = int(lens.max(initial=0))
    out = np.full((len(indices), width + bos + eos), PAD_ID, dtype=np.int64)
    col = np.arange(width)
    mask = col[None, :] < lens[:, None]  # [B, width]
    positions = offsets[indices][:, None] + col[None, :]  # [B, width]
    out[:, bos : bos + width][mask] = tokens[positions[mask]]
    if bos:
        out[:, 0] = BOS_ID
    if eos:
        out[np.arange(len(indices)), bos + lens] = EOS_ID
    return out


def pad_rows(rows: Sequence[Sequence[int]], bos: bool = False, eos: bool = False) -> np.ndarray:
    """Sentences given as lists of ids, padded and framed as `TokenArray.padded` does the
    store's: [len(rows), max_len + bos + eos] int64."""
    lengths, tokens = flatten(rows, np.dtype(np.int64))
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    return padded(tokens, offsets, lengths, np.arange(len(rows)), bos, eos)


def write_manifest(data_dir: Path, manifest: dict[str, Any]) -> None:
    """The manifest, with the size and sha256 of every file beside it, and its own sha256."""
    files = {
        p.name: {"bytes": p.stat().st_size, "sha256": file_sha256(p)}
        for p in sorted(Path(data_dir).iterdir())
        if is_store_file(p.name) and p.name != MANIFEST
    }
    body = {"format_version": FORMAT_VERSION, "nmt_version": __version__, **manifest}
    body["files"] = files
    atomic_write_json(Path(data_dir) / MANIFEST, {**body, "sha256": _manifest_sha256(body)})


def verify_file(data_dir: Path, manifest: dict[str, Any], name: str) -> Path:
    """The path of a store file, checked against the manifest's size and sha256 (stores
    written before nmt kept checksums are not checked)."""
    path = Path(data_dir) / name
    expected = manifest.get("files", {}).get(name)
    if not path.is_file():
        raise NmtError("a file of the preprocessed corpus is missing", str(path), _REFRESH)
    if expected is None:
        return path
    if path.stat().st_size != expected["bytes"]:
        raise NmtError(
            f"holds {path.stat().st_size} bytes, the manifest says {expected['bytes']} "
            "(truncated or replaced)",
            str(path),
            _REFRESH,
        )
    if file_sha256(path) != expected["sha256"]:
        raise NmtError("checksum mismatch: the file is corrupt", str(path), _REFRESH)
    return path


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
        raise NmtError(f"manifest is corrupt: {exc}", str(path), _REFRESH) from None
    if not isinstance(manifest, dict):
        raise NmtError("manifest is corrupt: not a JSON object", str(path), _REFRESH)
    if "sha256" in manifest and manifest["sha256"] != _manifest_sha256(manifest):
        raise NmtError("manifest is corrupt: checksum mismatch", str(path), _REFRESH)
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
    loaded = {
        name: Tokenizer.load(verify_file(data_dir, manifest, name)) for name in set(files.values())
    }
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
    prefixes = [f"{split}.{manifest[side]}" for side in ("src", "tgt")]
    for name in prefixes:
        for suffix in (".bin", ".idx"):
            verify_file(data_dir, manifest, name + suffix)
    arrays = tuple(TokenArray(Path(data_dir) / name, dtype) for name in prefixes)
    if len(arrays[0]) != len(arrays[1]):
        raise NmtError(
            f"the sides of `{split}` hold {len(arrays[0])} and {len(arrays[1])} sentences",
            str(data_dir),
            _REFRESH,
        )
    return arrays  # type: ignore[return-value]
