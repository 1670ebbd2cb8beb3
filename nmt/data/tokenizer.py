"""SentencePiece subword models: training, loading, batched encoding and decoding.

Fixed special ids, the same in every model this toolkit trains (the model and the batching code
rely on them): 0 = `<pad>`, 1 = `<unk>`, 2 = `<s>` (bos), 3 = `</s>` (eos).

Text is normalised by `nmt.data.corpus.normalize` before training, so SentencePiece runs with the
`identity` normalisation rule: decoding gives back exactly the normalised text.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from pathlib import Path

import sentencepiece as spm

from nmt.errors import NmtError

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
SPECIAL_PIECES = {"pad": "<pad>", "unk": "<unk>", "bos": "<s>", "eos": "</s>"}


def train_sentencepiece(
    inputs: Sequence[Path],
    model_path: Path,
    *,
    vocab_size: int,
    model_type: str,
    character_coverage: float,
    byte_fallback: bool,
    sample_size: int,
    seed: int,
    threads: int,
    symbols: Sequence[str] = (),
) -> Path:
    """Train a model on normalised text files; write it to `model_path` (suffix `.model`).
    `symbols` are pieces always kept whole (the placeholders of protected spans)."""
    spm.set_random_generator_seed(seed)
    try:
        spm.SentencePieceTrainer.train(
            input=[str(p) for p in inputs],
            model_prefix=str(model_path.with_suffix("")),
            vocab_size=vocab_size,
            model_type=model_type,
            character_coverage=character_coverage,
            byte_fallback=byte_fallback,
            input_sentence_size=sample_size,
            shuffle_input_sentence=True,
            normalization_rule_name="identity",
            num_threads=threads or os.cpu_count() or 1,
            pad_id=PAD_ID,
            unk_id=UNK_ID,
            bos_id=BOS_ID,
            eos_id=EOS_ID,
            pad_piece=SPECIAL_PIECES["pad"],
            unk_piece=SPECIAL_PIECES["unk"],
            bos_piece=SPECIAL_PIECES["bos"],
            eos_piece=SPECIAL_PIECES["eos"],
            user_defined_symbols=list(symbols),
            minloglevel=2,
        )
    except RuntimeError as exc:
        raise _vocab_error(str(exc), vocab_size, inputs) from None
    path = model_path.with_suffix(".model")
    path.write_bytes(canonical_proto(path.read_bytes()))
    return path


def _vocab_error(message: str, vocab_size: int, inputs: Sequence[Path]) -> NmtError:
    """Turn SentencePiece's vocabulary-size failures into an error that says what to do."""
    limit = re.search(r"<= (\d+)", message)
    if "Vocabulary size too high" in message and limit:
        return NmtError(
            f"vocabulary size {vocab_size} is more than this corpus supports "
            f"(at most {limit[1]} subwords)",
            "data.vocab_size",
            f"use --vocab-size {limit[1]} or less, or a larger corpus",
        )
    if "Vocabulary size is smaller than required_chars" in message:
        return NmtError(
            f"vocabulary size {vocab_size} is smaller than the number of distinct characters "
            "in the corpus",
            "data.vocab_size",
            "raise --vocab-size, or lower data.character_coverage",
        )
    where = ", ".join(map(str, inputs))
    return NmtError(f"SentencePiece training failed: {message.splitlines()[-1]}", where)


# Fields of SentencePiece's ModelProto.trainer_spec that say where and how fast it was trained,
# not what it does: input files (1), model prefix (2), threads (16).
_TRAINER_SPEC = 2
_PROVENANCE = {1, 2, 16}


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= len(buf) or shift > 63:
            raise ValueError("truncated varint")
        byte = buf[i]
        value |= (byte & 0x7F) << shift
        i, shift = i + 1, shift + 7
        if byte < 0x80:
            return value, i


def _fields(buf: bytes) -> list[tuple[int, bytes, bytes]]:
    """(field number, payload of a length-delimited field or b"", whole field's bytes) of a
    protobuf message, in order."""
    out, i = [], 0
    while i < len(buf):
        start = i
        key, i = _varint(buf, i)
        wire, payload = key & 7, b""
        if wire == 0:
            _, i = _varint(buf, i)
        elif wire in (1, 5):
            i += 8 if wire == 1 else 4
        elif wire == 2:
            n, i = _varint(buf, i)
            payload, i = buf[i : i + n], i + n
        else:
            raise ValueError(f"wire type {wire}")
        if i > len(buf):
            raise ValueError("truncated field")
        out.append((key >> 3, payload, buf[start:i]))
    return out


def _length_prefixed(field: int, payload: bytes) -> bytes:
    key, n, out = (field << 3) | 2, len(payload), bytearray()
    for value in (key, n):
        while value >= 0x80:
            out.append(value & 0x7F | 0x80)
            value >>= 7
        out.append(value)
    return bytes(out) + payload


def canonical_proto(proto: bytes) -> bytes:
    """A SentencePiece model without the training run's paths and thread count: two trainings
    that learn the same pieces, scores and normaliser give the same bytes (and hash)."""
    out = []
    for field, payload, raw in _fields(proto):
        if field == _TRAINER_SPEC:
            kept = b"".join(r for f, _, r in _fields(payload) if f not in _PROVENANCE)
            raw = _length_prefixed(field, kept)
        out.append(raw)
    return b"".join(out)


def vocabulary_sha256(proto: bytes) -> str:
    """A SentencePiece model's identity by content (see `canonical_proto`); ValueError if the
    bytes are not a protobuf message."""
    return hashlib.sha256(canonical_proto(proto)).hexdigest()


class Tokenizer:
    """One SentencePiece model, loaded from its serialized bytes (so checkpoints can embed it).

    `sha256` identifies the vocabulary by content (pieces, scores, normaliser, model type),
    not by where or on how many threads it was trained."""

    def __init__(self, proto: bytes, source: str = "SentencePiece model"):
        self.proto = proto
        try:
            self.sp = spm.SentencePieceProcessor(model_proto=proto)
            self.sha256 = vocabulary_sha256(proto)
        except (RuntimeError, ValueError, TypeError):
            raise NmtError(
                "not a readable SentencePiece model (corrupt or truncated)",
                source,
                "preprocess the corpus again (or use an intact checkpoint)",
            ) from None
        if self.sp.get_piece_size() <= EOS_ID:
            raise NmtError(f"only {self.vocab_size} pieces: not a model nmt trained", source)

    @classmethod
    def load(cls, path: Path) -> Tokenizer:
        try:
            return cls(Path(path).read_bytes(), str(path))
        except FileNotFoundError:
            raise NmtError("SentencePiece model not found", str(path)) from None

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    def encode(self, texts: Sequence[str], threads: int = 0) -> list[list[int]]:
        """Subword ids of each text (no bos/eos), encoded on `threads` threads (0 = all)."""
        return self.sp.encode(list(texts), num_threads=threads or os.cpu_count() or 1)

    def sample(self, texts: Sequence[str], alpha: float, nbest: int, seed: int) -> list[list[int]]:
        """One segmentation of each text drawn at random (subword regularisation, Kudo 2018;
        BPE-dropout for BPE models, with `alpha` the dropout rate), the same for the same seed.
        SentencePiece seeds a global generator, so the draw runs on one thread."""
        spm.set_random_generator_seed(seed)
        return self.sp.encode(
            list(texts), enable_sampling=True, alpha=alpha, nbest_size=nbest, num_threads=1
        )

    def decode(self, ids: Sequence[int]) -> str:
        """Text of a sequence of ids; pad, bos and eos (control symbols) decode to nothing."""
        return self.sp.decode([int(i) for i in ids])

    def symbol_ids(self, symbols: Sequence[str]) -> list[int] | None:
        """The ids of `symbols` (e.g. the placeholders), or None unless all are pieces."""
        ids = [self.sp.piece_to_id(s) for s in symbols]
        return ids if ids and UNK_ID not in ids else None

    def pieces(self, ids: Sequence[int]) -> list[str]:
        return [self.sp.id_to_piece(int(i)) for i in ids]
