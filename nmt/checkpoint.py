"""Self-contained checkpoints: save (atomically), load (with clear errors), average.

A checkpoint holds everything needed to translate (weights, the full config, the SentencePiece
models) and, for `last.pt` and step checkpoints, everything needed to resume training exactly
(optimizer, schedule, gradient scaler, RNG and sampler state, progress counters):

    {"format_version", "nmt_version", "config": {...}, "vocab": {...}, "model": state_dict,
     "train": {...} or None}

Files are loaded with `torch.load(weights_only=True)`: no pickled code runs on load.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from nmt import __version__
from nmt.config import Config, config_from_dict, config_to_dict
from nmt.data.tokenizer import Tokenizer
from nmt.errors import NmtError
from nmt.fileio import atomic_write_bytes

FORMAT_VERSION = 1


def vocab_entry(manifest: dict[str, Any], tokenizers: dict[str, Tokenizer]) -> dict[str, Any]:
    """The vocabulary part of a checkpoint: languages, sizes, and the SentencePiece models."""
    src, tgt = manifest["src"], manifest["tgt"]
    return {
        "src": src,
        "tgt": tgt,
        "joint": manifest["joint"],
        "src_size": tokenizers[src].vocab_size,
        "tgt_size": tokenizers[tgt].vocab_size,
        "tokenizers": {
            lang: {"sha256": tok.sha256, "proto": tok.proto} for lang, tok in tokenizers.items()
        },
    }


def make_checkpoint(
    cfg: Config,
    vocab: dict[str, Any],
    model_state: dict[str, torch.Tensor],
    train_state: dict[str, Any] | None,
) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "nmt_version": __version__,
        "config": config_to_dict(cfg),
        "vocab": vocab,
        "model": model_state,
        "train": train_state,
    }


def save_checkpoint(path: Path, checkpoint: dict[str, Any]) -> None:
    """Serialize in memory, then write via a temporary file and a rename: the file at `path`
    is always either the previous checkpoint or the new one, never a partial write."""
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    atomic_write_bytes(Path(path), buffer.getvalue())


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and check a checkpoint; anything that is not one is an NmtError."""
    path = Path(path)
    if not path.is_file():
        raise NmtError("checkpoint not found", str(path), "check the path (e.g. RUN_DIR/best.pt)")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many kinds on a file that is not a checkpoint
        raise NmtError(
            f"not a readable checkpoint (corrupt, truncated, or another kind of file): "
            f"{type(exc).__name__}",
            str(path),
            "use another checkpoint, e.g. RUN_DIR/best.pt",
        ) from None
    if not isinstance(checkpoint, dict) or "format_version" not in checkpoint:
        raise NmtError("not an nmt checkpoint", str(path), "pass a file written by `nmt train`")
    if checkpoint["format_version"] != FORMAT_VERSION:
        raise NmtError(
            f"checkpoint format {checkpoint['format_version']} (nmt "
            f"{checkpoint.get('nmt_version')}) is not the format {FORMAT_VERSION} that nmt "
            f"{__version__} reads",
            str(path),
            "use the nmt version that wrote it",
        )
    return checkpoint


def checkpoint_config(checkpoint: dict[str, Any], source: str = "checkpoint") -> Config:
    return config_from_dict(checkpoint["config"], source)


def average_checkpoints(paths: Sequence[Path], out: Path) -> dict[str, Any]:
    """Average the weights of checkpoints of one model; write a translation-only checkpoint."""
    if not paths:
        raise NmtError("no checkpoints to average", "nmt average", "name two or more .pt files")
    first = load_checkpoint(paths[0])
    total = {k: v.double() if v.is_floating_point() else v for k, v in first["model"].items()}
    for path in paths[1:]:
        other = load_checkpoint(path)
        if (
            other["vocab"]["tokenizers"] != first["vocab"]["tokenizers"]
            or other["model"].keys() != total.keys()
            or other["config"]["model"] != first["config"]["model"]
        ):
            raise NmtError(
                "checkpoints are of different models or vocabularies",
                str(path),
                f"average only checkpoints of the same run as {paths[0]}",
            )
        for key, value in other["model"].items():
            if value.is_floating_point():
                total[key] += value.double()
    averaged = {
        k: (v / len(paths)).to(first["model"][k].dtype) if v.is_floating_point() else v
        for k, v in total.items()
    }
    checkpoint = {**first, "model": averaged, "train": None}
    save_checkpoint(out, checkpoint)
    return checkpoint
