"""Self-contained checkpoints: save (atomically), load (with clear errors), average.

A checkpoint holds everything needed to translate (weights, the full config, the SentencePiece
models) and, for `last.pt` and step checkpoints, everything needed to resume training exactly
(optimizer, schedule, gradient scaler, RNG and sampler state, progress counters):

    {"format_version", "nmt_version", "config": {...}, "vocab": {...}, "model": state_dict,
     "train": {...} or None}

Files are loaded with `torch.load(weights_only=True)`: no pickled code runs on load. A
checkpoint carries the sha256 of its whole content (`"sha256"`, every tensor's bytes included),
checked on load, so a corrupted file is an error rather than a model that translates garbage;
its structure and every weight's shape are checked against its config before a model is built.
"""

from __future__ import annotations

import hashlib
import io
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from nmt import __version__
from nmt.config import Config, config_from_dict, config_to_dict
from nmt.data.shortlist import STORED_K, build_shortlist
from nmt.data.store import load_tokenizers, read_manifest
from nmt.data.tokenizer import Tokenizer, vocabulary_sha256
from nmt.errors import NmtError
from nmt.fileio import atomic_write_bytes
from nmt.model.seq2seq import Seq2Seq, build_model

FORMAT_VERSION = 1
_VOCAB_KEYS = ("src", "tgt", "joint", "src_size", "tgt_size", "tokenizers")


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
        "protect": {  # how preprocessing masked spans; translation masks them the same way
            "patterns": manifest["config"].get("protect", ""),
            "regex": manifest["config"].get("protect_regex", ""),
        },
    }


def vocabulary_id(vocab: dict[str, Any]) -> dict[str, str]:
    """The vocabulary's identity: each language's SentencePiece model by content (hashed, not
    loaded: comparing vocabularies needs no processor)."""
    try:
        return {lang: vocabulary_sha256(e["proto"]) for lang, e in vocab["tokenizers"].items()}
    except (ValueError, TypeError, KeyError):
        raise NmtError(
            "not a readable SentencePiece model (corrupt or truncated)",
            "the checkpoint's vocabulary",
            "preprocess the corpus again (or use an intact checkpoint)",
        ) from None


def new_run_id() -> str:
    """An identifier shared by every checkpoint of one training run (kept on resume)."""
    return uuid.uuid4().hex


def make_checkpoint(
    cfg: Config,
    vocab: dict[str, Any],
    model_state: dict[str, torch.Tensor],
    train_state: dict[str, Any] | None,
    run_id: str,
) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "nmt_version": __version__,
        "run_id": run_id,
        "config": config_to_dict(cfg),
        "vocab": vocab,
        "model": model_state,
        "train": train_state,
    }


def _digest(obj: Any, h: Any) -> None:
    """Feed a checkpoint's content, tensors' bytes included, into the hash `h` (dicts in
    their stored order, which torch.save/torch.load keep)."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    elif isinstance(obj, dict):
        h.update(b"D%d" % len(obj))
        for key, value in obj.items():
            _digest(key, h)
            _digest(value, h)
    elif isinstance(obj, (list, tuple)):
        h.update(b"L%d" % len(obj))
        for value in obj:
            _digest(value, h)
    elif isinstance(obj, bytes):
        h.update(b"B%d:" % len(obj) + obj)
    else:
        h.update(f"{type(obj).__name__}:{obj!r};".encode())


def content_sha256(checkpoint: dict[str, Any]) -> str:
    h = hashlib.sha256()
    _digest({k: v for k, v in checkpoint.items() if k != "sha256"}, h)
    return h.hexdigest()


def save_checkpoint(path: Path, checkpoint: dict[str, Any]) -> None:
    """Serialize in memory with the content's sha256, then write via a temporary file and a
    rename: the file at `path` is always either the previous checkpoint or the new one, never
    a partial write. Weights that are not finite are never written."""
    fix = "not saved, the earlier checkpoints are intact: lower train.lr or use fp32, then --resume"
    _check_finite(checkpoint, path, fix)
    buffer = io.BytesIO()
    torch.save({**checkpoint, "sha256": content_sha256(checkpoint)}, buffer)
    atomic_write_bytes(Path(path), buffer.getvalue())


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and check a checkpoint; anything that is not one is an NmtError."""
    path = Path(path)
    if path.is_dir():
        raise NmtError(
            "this is a directory, not a checkpoint", str(path), f"name a .pt file in it, e.g. "
            f"{path / 'best.pt'}",
        )  # fmt: skip
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
    _check_structure(checkpoint, str(path))
    return checkpoint


def _check_structure(checkpoint: dict[str, Any], where: str) -> None:
    """The parts a checkpoint must have, and its checksum (files from before nmt wrote one
    are not checked)."""
    fix = "use another checkpoint, e.g. RUN_DIR/best.pt or a step-N.pt"
    vocab, model = checkpoint.get("vocab"), checkpoint.get("model")
    if not isinstance(checkpoint.get("config"), dict):
        raise NmtError("the checkpoint has no config", where, fix)
    if not isinstance(vocab, dict) or any(k not in vocab for k in _VOCAB_KEYS):
        raise NmtError("the checkpoint has no (complete) vocabulary", where, fix)
    if not isinstance(model, dict) or not all(isinstance(v, torch.Tensor) for v in model.values()):
        raise NmtError("the checkpoint has no model weights", where, fix)
    if not isinstance(checkpoint.get("train"), (dict, type(None))):
        raise NmtError("the checkpoint's training state is not readable", where, fix)
    if "sha256" in checkpoint and checkpoint["sha256"] != content_sha256(checkpoint):
        raise NmtError("checksum mismatch: the checkpoint is corrupt", where, fix)


def checkpoint_config(checkpoint: dict[str, Any], source: str = "checkpoint") -> Config:
    return config_from_dict(checkpoint["config"], source)


def model_from_checkpoint(checkpoint: dict[str, Any], cfg: Config, where: str) -> Seq2Seq:
    """The model of `cfg`, with the checkpoint's weights: every name and shape is checked on
    a model without storage first, so a config that does not fit its weights (or asks for
    480 GB) is an error before anything is allocated."""
    vocab = checkpoint["vocab"]
    sizes = (vocab["src_size"], vocab["tgt_size"], vocab["joint"])
    with torch.device("meta"):
        expected = build_model(cfg.model, *sizes).state_dict()
    check_weights(checkpoint["model"], expected, where)
    model = build_model(cfg.model, *sizes)
    model.load_state_dict(checkpoint["model"])
    return model


def check_weights(
    weights: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], where: str
) -> None:
    """Weights with exactly the names and shapes of `expected`, or an NmtError naming one that
    differs."""
    fix = "use a checkpoint written with this config (the file may be corrupt)"
    missing, unexpected = expected.keys() - weights.keys(), weights.keys() - expected.keys()
    if missing:
        raise NmtError(f"the weights lack `{min(missing)}`", where, fix)
    if unexpected:
        raise NmtError(f"unexpected weights `{min(unexpected)}` for this model", where, fix)
    for name, tensor in weights.items():
        if tensor.shape != expected[name].shape:
            raise NmtError(
                f"`{name}` has shape {tuple(tensor.shape)}, the config needs "
                f"{tuple(expected[name].shape)}",
                where,
                fix,
            )


def average_checkpoints(paths: Sequence[Path], out: Path) -> dict[str, Any]:
    """Average the weights of two or more checkpoints of one run; write a translation-only
    checkpoint. Checkpoints of different runs, models or vocabularies, and weights that are
    not finite, are refused."""
    if len(paths) < 2:
        raise NmtError(
            f"averaging needs two or more checkpoints, got {len(paths)}",
            "nmt average",
            "name the step checkpoints of one run, e.g. RUN_DIR/step-*.pt",
        )
    first = load_checkpoint(paths[0])
    fix = "leave this checkpoint out of the average"
    _check_finite(first, paths[0], fix)
    total = {k: v.double() if v.is_floating_point() else v for k, v in first["model"].items()}
    for path in paths[1:]:
        other = load_checkpoint(path)
        _check_same_run(first, other, paths[0], path)
        _check_finite(other, path, fix)
        for key, value in other["model"].items():
            if value.is_floating_point():
                total[key] += value.double()
    averaged = {
        k: (v / len(paths)).to(first["model"][k].dtype) if v.is_floating_point() else v
        for k, v in total.items()
    }
    checkpoint = {**first, "model": averaged, "train": None}
    checkpoint.pop("sha256", None)
    save_checkpoint(out, checkpoint)
    return checkpoint


def add_shortlist(path: Path, data_dir: Path, out: Path) -> dict[str, Any]:
    """Write to `out` the checkpoint at `path` with a lexical shortlist built from the
    preprocessed directory it was trained on (as `nmt train` builds it), replacing any it had;
    a directory with another vocabulary is refused."""
    checkpoint = load_checkpoint(path)
    vocab, manifest = checkpoint["vocab"], read_manifest(data_dir)
    tokenizers = load_tokenizers(data_dir, manifest)
    if (manifest["src"], manifest["tgt"]) != (vocab["src"], vocab["tgt"]) or {
        lang: tok.sha256 for lang, tok in tokenizers.items()
    } != vocabulary_id(vocab):
        raise NmtError(
            "this preprocessed directory has another vocabulary than the checkpoint",
            str(data_dir),
            f"pass the directory {path} was trained on (its `nmt train --data`)",
        )
    cfg = checkpoint_config(checkpoint, str(path))
    k = max(STORED_K, cfg.decode.shortlist_k)
    shortlist = build_shortlist(data_dir, k, seed=cfg.train.seed)
    checkpoint = {**checkpoint, "vocab": {**vocab, "shortlist": shortlist.entry()}}
    checkpoint.pop("sha256", None)
    save_checkpoint(out, checkpoint)
    return checkpoint


def _check_same_run(first: dict[str, Any], other: dict[str, Any], p0: Path, path: Path) -> None:
    fix = f"average only checkpoints of the run that wrote {p0}"
    ids = first.get("run_id"), other.get("run_id")
    if None not in ids and ids[0] != ids[1]:  # checkpoints from before nmt kept run ids: no id
        raise NmtError("this checkpoint is of another training run", str(path), fix)
    if (
        vocabulary_id(other["vocab"]) != vocabulary_id(first["vocab"])
        or other["model"].keys() != first["model"].keys()
        or other["config"]["model"] != first["config"]["model"]
        or any(other["model"][k].shape != v.shape for k, v in first["model"].items())
    ):
        raise NmtError("checkpoints are of different models or vocabularies", str(path), fix)


def _check_finite(checkpoint: dict[str, Any], path: Path, fix: str) -> None:
    """An NmtError naming the first weight that holds NaN or an infinity, if one does."""
    bad = next(
        (
            k
            for k, v in checkpoint["model"].items()
            if v.is_floating_point() and not v.isfinite().all()
        ),
        None,
    )
    if bad is not None:
        raise NmtError(f"weights `{bad}` are not finite (NaN or infinity)", str(path), fix)
