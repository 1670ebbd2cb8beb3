"""Translation with trained checkpoints: the Python API behind `nmt translate`, `nmt score`
and the server.

    translator = Translator.from_checkpoint("runs/x/best.pt")
    translator.translate(["Hola, mundo."], beam=5)  # ["Hello, world."]

Several checkpoints with the same vocabulary decode as an ensemble. Input lines are normalised
like the training data, their protected spans masked (`nmt.data.protect`: as preprocessing masked
them, plus glossary terms and markup when asked), split into subwords, sorted by length and cut
into batches of at most `batch_tokens` source tokens (counting every beam), decoded with
`nmt.decode.beam` (constrained to keep every placeholder, `nmt.decode.constraints`; or sampled,
`nmt.decode.sampling`), put back together and returned in input order. An empty line gives an empty
translation; a line longer than the model's limit is split into parts that each fit (at
sentence ends, else clause ends, commas, spaces), translated with the other lines and joined, or
with `decode.long_lines=truncate` truncated, with a warning naming its position.

The modules, in the order a line passes through them:

- `options`: the option rules, in one place: `DecodeOptions` (a request's search settings,
  validated like their config keys) and the checks of `nmt translate`'s and `nmt score`'s options.
- `translator`: `Translator`, loading checkpoints, and the API that decodes with them.
- `inputs`: `Prepared`, a line normalised, masked, split into subwords and, over the limit,
  into parts or truncated (with warnings), and its prefix; the padded tensors the search takes.
- `batch`: `TranslationBatch`, the running beam search that lines join and leave at any step
  (the server's scheduler shares it); `sample_lines`, a batch sampled instead.
- `outputs`: `Result` and `Translation`, the hypotheses as text: the prefix as given, the spans
  put back.
- `files`: files and pipes, line for line, and the output formats (text, tsv, jsonl).
- `forced`: `score_pairs`, the model's score of given translations (`nmt score`).
- `plot`: attention heatmaps.
"""

from __future__ import annotations

import importlib
from typing import Any

# each public name and the module it lives in, imported on first use (`__getattr__`)
_HOMES = {
    "DecodeOptions": "options",
    "Prepared": "inputs",
    "Result": "outputs",
    "Scored": "forced",
    "Translation": "outputs",
    "TranslationBatch": "batch",
    "Translator": "translator",
    "no_translation": "outputs",
    "score_pairs": "forced",
}
__all__ = list(_HOMES)


def __getattr__(name: str) -> Any:
    """A public name, imported from its module when first asked for: the CLI reads the option
    rules (`nmt.translate.options`) without loading torch and the models."""
    if name not in _HOMES:
        raise AttributeError(f"module 'nmt.translate' has no attribute {name!r}")
    return getattr(importlib.import_module(f"nmt.translate.{_HOMES[name]}"), name)
