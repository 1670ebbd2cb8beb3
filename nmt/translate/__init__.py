"""Translation with trained checkpoints: the Python API behind `nmt translate`, `nmt score`
and the server."""

from nmt.translate.translator import (
    DecodeOptions,
    Prepared,
    Result,
    TranslationBatch,
    Translator,
    no_translation,
)

__all__ = [
    "DecodeOptions",
    "Prepared",
    "Result",
    "TranslationBatch",
    "Translator",
    "no_translation",
]
