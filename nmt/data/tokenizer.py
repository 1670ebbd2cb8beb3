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
) -> Path:
    """Train a model on normalised text files; write it to `model_path` (suffix `.model`)."""
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
            minloglevel=2,
        )
    except RuntimeError as exc:
        raise _vocab_error(str(exc), vocab_size, inputs) from None
    return model_path.with_suffix(".model")


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


class Tokenizer:
    """One SentencePiece model, loaded from its serialized bytes (so checkpoints can embed it)."""

    def __init__(self, proto: bytes):
        self.proto = proto
        self.sp = spm.SentencePieceProcessor(model_proto=proto)
        self.sha256 = hashlib.sha256(proto).hexdigest()

    @classmethod
    def load(cls, path: Path) -> Tokenizer:
        try:
            return cls(Path(path).read_bytes())
        except FileNotFoundError:
            raise NmtError("SentencePiece model not found", str(path)) from None

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    def encode(self, texts: Sequence[str], threads: int = 0) -> list[list[int]]:
        """Subword ids of each text (no bos/eos), encoded on `threads` threads (0 = all)."""
        return self.sp.encode(list(texts), num_threads=threads or os.cpu_count() or 1)

    def decode(self, ids: Sequence[int]) -> str:
        """Text of a sequence of ids; pad, bos and eos (control symbols) decode to nothing."""
        return self.sp.decode([int(i) for i in ids])

    def pieces(self, ids: Sequence[int]) -> list[str]:
        return [self.sp.id_to_piece(int(i)) for i in ids]
