"""Typed configuration: one schema, defaults defined once, YAML in, `--set` overrides out.

A config is five sections (`data`, `model`, `train`, `decode`, `serve`), each a dataclass whose
fields carry their help text and their valid range in `field(metadata=...)`. Everything that
reads settings (the CLI's option defaults and help, `docs/config.md`, validation) reads them
from here, so a default is written exactly once. Every value that enters a config (YAML file,
`--set`, a CLI option) goes through `set_value`, which validates it and names the file, line
and key when it is wrong.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import json
import math
import re
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nmt.errors import NmtError
from nmt.protect import PATTERNS, check_pattern_names, check_regex


def option(
    default: Any,
    help: str,
    *,
    choices: Sequence[str] | None = None,
    min: float | None = None,
    max: float | None = None,
    pattern: str | None = None,
    check: Callable[[Any], str | None] | None = None,
) -> Any:
    """A dataclass field with its documentation and valid values attached (a float is finite:
    NaN and infinities are invalid for every key); `check` says why a value is invalid, or
    None."""
    meta = {
        "help": help,
        "choices": tuple(choices) if choices else None,
        "min": min,
        "max": max,
        "pattern": pattern,
        "check": check,
    }
    return field(default=default, metadata=meta)


# A language code names files (SPLIT.LANG.bin) and columns: letters, digits, `-` and `_`.
LANG_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_-]*"


@dataclass
class DataConfig:
    """Corpus, cleaning and subword settings (read by `nmt preprocess`)."""

    src: str = option(
        "",
        "Source language code, e.g. `es`: the TSV column, text suffix or field.",
        pattern=LANG_PATTERN,
    )
    tgt: str = option("", "Target language code, e.g. `en`.", pattern=LANG_PATTERN)
    train: str = option("", "Training corpus: TSV file, text prefix (PREFIX.src/.tgt) or dataset.")
    dev: str = option("", "Validation corpus, same forms as `train`; never cleaned or filtered.")
    test: str = option(
        "", "Optional test corpus, same forms as `train`; never cleaned or filtered."
    )
    format: str = option(
        "auto",
        "Corpus format: `tsv` (header names the columns), `text` (PREFIX.src + PREFIX.tgt), "
        "`hf` (anything `datasets` loads: hub name, save_to_disk dir, JSON/CSV/Parquet; "
        "append `:split` to choose a split), or `auto` to tell from the path.",
        choices=("auto", "tsv", "text", "hf"),
    )
    hf_subset: str = option(
        "", "Subset (config name) passed to `datasets.load_dataset`, e.g. `de-en`."
    )
    vocab_size: int = option(8000, "SentencePiece vocabulary size (per side if not joint).", min=8)
    joint: bool = option(True, "One SentencePiece model shared by both sides (else one per side).")
    spm_model_type: str = option("unigram", "SentencePiece algorithm.", choices=("unigram", "bpe"))
    character_coverage: float = option(
        1.0, "Share of characters the subword model covers (0.9995 suits CJK).", min=0.9, max=1.0
    )
    byte_fallback: bool = option(
        False, "Spell characters outside the vocabulary as UTF-8 bytes (needs vocab_size > 260)."
    )
    spm_sample_size: int = option(
        1_000_000,
        "Sentences sampled (uniformly) to train SentencePiece; bounds its memory. 0 = all.",
        min=0,
    )
    max_words: int = option(
        250, "Cleaning: drop training pairs with a side longer than this many words.", min=1
    )
    max_ratio: float = option(
        3.0, "Cleaning: drop training pairs whose word-count ratio exceeds this.", min=1.0
    )
    dedup: bool = option(False, "Cleaning: drop exact duplicate training pairs (first one kept).")
    protect: str = option(
        "",
        "Protected spans, kept whole through translation: comma-separated pattern names ("
        + ", ".join(f"`{n}`" for n in PATTERNS)
        + "), `all`, or empty for none. Spans found on both sides of a training pair become "
        "placeholders ｟0｠, ｟1｠, ... that the search must each emit exactly once.",
        check=check_pattern_names,
    )
    protect_regex: str = option(
        "",
        "An extra protected-span pattern (a Python regular expression; | for several; flags "
        "scoped, as (?i:...); no back-references), on top of `protect`; e.g. "
        "`\\b[A-Z]{2,}_[A-Z_]+\\b` for constant names.",
        check=check_regex,
    )
    sampling_alpha: float = option(
        0.0,
        "Subword regularisation (read by `nmt train`): each training batch is segmented anew "
        "by SentencePiece sampling from the training text the store keeps (Kudo 2018; for a "
        "BPE model, BPE-dropout with this dropout rate). For unigram models the smoothing of "
        "the sampling distribution: smaller is more varied, and longer: on the Bible corpus "
        "drawn segmentations have 1.84x the fixed one's subwords at 0.1, 1.29x at 0.2, 1.03x at "
        "0.5 (with nbest_size 64, 1.04x at 0.1), and batches grow with them past "
        "train.batch_tokens. 0 = off (the store's fixed segmentation). Validation always uses "
        "the fixed one.",
        min=0.0,
        max=1.0,
    )
    nbest_size: int = option(
        -1,
        "Subword regularisation: sample from the `nbest_size` best segmentations of a "
        "unigram model, or from all of them (-1). Must be -1 or at least 2.",
        check=lambda n: None if n == -1 or n >= 2 else "must be -1 (all) or at least 2",
    )
    threads: int = option(
        0,
        "Cores for preprocessing: worker processes that clean and encode (corpora of 50k pairs "
        "or more) and SentencePiece training threads; 0 = all cores. The vocabulary is the same "
        "from run to run for one thread count, but may differ between counts: set it to get the "
        "same vocabulary on machines with different core counts.",
        min=0,
    )


@dataclass
class ModelConfig:
    """Model architecture and sizes (read by `nmt train`)."""

    arch: str = option(
        "rnnsearch",
        "`rnnenc` (Cho et al. 2014), `rnnsearch` (Bahdanau et al. 2015) or `luong` attention.",
        choices=("rnnenc", "rnnsearch", "luong"),
    )
    emb_size: int = option(256, "Word embedding size.", min=1)
    hidden_size: int = option(512, "GRU hidden size.", min=1)
    layers: int = option(1, "GRU layers in the encoder and the decoder.", min=1)
    dropout: float = option(
        0.2, "Dropout on embeddings, between layers and before the output.", min=0.0, max=0.99
    )
    share_embeddings: bool = option(
        True, "Share source and target embeddings when the vocabulary is joint."
    )
    tie_output: bool = option(True, "Tie the output layer to the target embeddings.")
    input_feeding: bool = option(
        False, "`luong` only: feed the last attentional state to the next step (sequential)."
    )
    layer_norm: bool = option(
        False,
        "Layer-normalised GRUs (Ba et al. 2016, as Nematus and Marian use them) in the encoder "
        "and the decoder: each GRU's input and recurrent projections are normalised over their "
        "3H units, with a learned gain, before the gates. Runs nmt's own GRU kernels everywhere "
        "(PyTorch's and cuDNN's have no norm).",
    )
    residual: bool = option(
        False,
        "Residual connections between stacked GRU layers (Marian's --skip, Sockeye): with "
        "model.layers > 1, every encoder and decoder layer above the first adds its input to "
        "its output (no effect with one layer). Runs nmt's own GRU kernels everywhere.",
    )
    enc_transition_depth: int = option(
        1,
        "GRU cells per encoder step (deep transition, Miceli Barone et al. 2017; Nematus' and "
        "Marian's --enc-cell-depth): each step's GRU is followed by depth - 1 GRU cells without "
        "input, each with its own weights. 1 = the plain GRU. Runs nmt's own GRU kernels.",
        min=1,
    )
    dec_transition_depth: int = option(
        1,
        "GRU cells per decoder step (deep transition; Nematus' and Marian's "
        "--dec-cell-base-depth): as model.enc_transition_depth, for every decoder layer of "
        "every arch (rnnsearch: after the attention GRU, before the readout).",
        min=1,
    )


@dataclass
class TrainConfig:
    """Batching and optimisation (read by `nmt train`)."""

    seed: int = option(1, "Random seed for batching, initialisation and dropout.", min=0)
    batch_tokens: int = option(
        3000,
        "Tokens per batch on each side, padding included (the cap the sampler keeps). Per "
        "process: one update sees batch_tokens x accum_steps x processes (the global batch).",
        min=1,
    )
    pool_size: int = option(
        100_000,
        "Sentences per shuffled pool that is sorted by length before cutting batches: larger "
        "pools give less padding, smaller ones more randomness.",
        min=1,
    )
    max_len: int = option(
        200, "Training pairs with a side longer than this many subwords are skipped.", min=1
    )
    optimizer: str = option("adam", "Optimiser.", choices=("adam", "adamw"))
    lr: float = option(1e-3, "Peak learning rate.", min=0.0)
    weight_decay: float = option(0.0, "Weight decay (decoupled with adamw).", min=0.0)
    ema_decay: float = option(
        0.0,
        "Exponential moving average of the weights (0: off; e.g. 0.9999): after update t, "
        "average = d * average + (1 - d) * weights with d = min(ema_decay, (1 + t) / (10 + t)). "
        "Validation, best.pt and step checkpoints hold the average; last.pt the raw weights "
        "(and the average, so that --resume is exact).",
        min=0.0,
        max=0.999999,
    )
    schedule: str = option(
        "constant",
        "Learning-rate schedule after warm-up: `constant`, `inverse_sqrt` (decay with "
        "1/sqrt(step)), or `plateau` (multiply by lr_decay when the validation metric stalls).",
        choices=("constant", "inverse_sqrt", "plateau"),
    )
    warmup_steps: int = option(0, "Linear warm-up from 0 to lr over this many steps.", min=0)
    lr_decay: float = option(
        0.5, "`plateau`: factor applied when the metric stalls.", min=0.01, max=1.0
    )
    lr_patience: int = option(2, "`plateau`: validations without improvement before decay.", min=0)
    min_lr: float = option(1e-6, "`plateau`: the learning rate never goes below this.", min=0.0)
    clip_norm: float = option(1.0, "Clip the gradient norm to this; 0 turns clipping off.", min=0.0)
    label_smoothing: float = option(
        0.1, "Label smoothing of the cross-entropy loss.", min=0.0, max=0.99
    )
    accum_steps: int = option(
        1,
        "Batches per process whose gradients are summed before one update (global batch = "
        "batch_tokens x accum_steps x processes; lr applies to that global batch).",
        min=1,
    )
    max_steps: int = option(0, "Stop after this many updates; 0 = no limit.", min=0)
    max_epochs: int = option(0, "Stop after this many epochs; 0 = no limit.", min=0)
    max_minutes: float = option(0.0, "Stop after this much training time; 0 = no limit.", min=0.0)
    valid_every: int = option(1000, "Validate every this many updates (and at the end).", min=1)
    valid_metric: str = option(
        "bleu",
        "Metric that picks the best checkpoint and drives early stopping.",
        choices=("bleu", "chrf", "loss"),
    )
    patience: int = option(
        10, "Stop after this many validations without improvement; 0 = never.", min=0
    )
    keep_last: int = option(3, "Step checkpoints kept besides best.pt and last.pt.", min=0)
    log_every: int = option(
        50, "Write training loss to metrics.jsonl every this many updates.", min=1
    )
    threads: int = option(
        0,
        "CPU threads per process; 0 follows the cores other processes leave free, re-checked "
        "every 2 s (beside one busy process on 2 cores, 1 thread trains 2.5x faster than 2). "
        "OMP_NUM_THREADS, when set, fixes it too. Only a fixed count makes a run bit-for-bit "
        "reproducible: a product summed by 1 thread and by 2 can differ in the last bit.",
        min=0,
    )
    precision: str = option(
        "auto",
        "`fp32`, `bf16` (autocast), `fp16` (autocast + gradient scaling, CUDA only), or `auto`: "
        "bf16 on a GPU that has it, else fp16 on a GPU; on a CPU bf16 where the CPU has it "
        "natively (AVX512-BF16, AMX), else fp32.",
        choices=("auto", "fp32", "bf16", "fp16"),
    )


@dataclass
class DecodeConfig:
    """Search settings (read by `nmt translate` and validation)."""

    beam_size: int = option(5, "Beam width; 1 is greedy search.", min=1)
    alpha: float = option(
        0.6, "Length penalty exponent of Wu et al. (2016); 0 turns it off.", min=0.0
    )
    max_len_a: float = option(
        1.5, "Output length limit: a * source length + b (this is a).", min=0.0
    )
    max_len_b: int = option(10, "Output length limit: a * source length + b (this is b).", min=0)
    length_penalty: str = option(
        "wu",
        "How finished hypotheses are compared: `wu` divides the log-probability by "
        "((5+|y|)/6)^alpha, `length` by |y| (the mean), `none` uses it as is.",
        choices=("wu", "length", "none"),
    )
    batch_tokens: int = option(
        20000,
        "Translation batch size in source subwords times beam size (sentences are sorted by "
        "length first, so there is little padding).",
        min=1,
    )
    max_input_len: int = option(
        0,
        "Input lines longer than this many subwords are truncated (with a warning); "
        "0 means the training limit `train.max_len`.",
        min=0,
    )


@dataclass
class ServeConfig:
    """The translation server (read by `nmt serve`; search settings come from `decode`)."""

    host: str = option(
        "127.0.0.1",
        "Address to listen on; the default answers this machine alone. 0.0.0.0 opens the "
        "server to the network: set an API key (`nmt serve --api-key-file`) first.",
    )
    port: int = option(8000, "TCP port to listen on (0: any free port).", min=0, max=65535)
    workers: int = option(
        1,
        "Server processes on the port, each with its own copy of the model and socket. On a "
        "CPU each takes its share of the cores (cores / workers threads, fewer beside busy "
        "processes): one per core gives the most sentences/s (on 2 cores, 64 clients: "
        "0.83-1.08x the file rate against 0.56-0.93x for 1), one answers a lone request "
        "soonest. A worker that dies is replaced (up to 3 starts a minute per place).",
        min=1,
    )
    max_batch_tokens: int = option(
        0,
        "Most source subwords x beam decoded in one batch, summed over the requests merged "
        "into it; 0 means `decode.batch_tokens`. Smaller batches answer sooner under load.",
        min=0,
    )
    max_wait_ms: float = option(
        100.0,
        "How long a sentence may wait to join the running batch in a group: sentences join "
        "it in groups of at least an eighth of it, or once the oldest has waited this long "
        "(each join runs the encoder and copies the batch's state). An idle server starts a "
        "sentence at once.",
        min=0.0,
        max=10_000.0,
    )
    max_queue: int = option(
        1024,
        "Most sentences waiting or being decoded; a request that would exceed it is answered "
        "503 with Retry-After instead of waiting without bound.",
        min=1,
    )
    max_sentences: int = option(
        256, "Most sentences in one request (`texts`); more is a 413 error.", min=1
    )
    max_chars: int = option(
        5000,
        "Longer sentences are cut to this many characters, with a warning in the response "
        "(as `decode.max_input_len` cuts subwords).",
        min=1,
    )
    max_body_bytes: int = option(
        1 << 20, "Largest request body accepted; larger is a 413 error.", min=1
    )
    max_beam: int = option(32, "Largest beam a request may ask for.", min=1)
    drain_seconds: float = option(
        30.0,
        "On SIGTERM or Ctrl-C the server stops accepting connections and finishes the "
        "requests in flight, for at most this long, then exits.",
        min=0.0,
    )


@dataclass
class Config:
    """The whole configuration; stored in every preprocessed directory and checkpoint."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)


SECTIONS: dict[str, type] = dict(typing.get_type_hints(Config))


def _fields(section: str) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(SECTIONS[section])}


def _unknown(kind: str, name: str, valid: Sequence[str], where: str) -> NmtError:
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f"did you mean `{close[0]}`? " if close else ""
    return NmtError(f"unknown {kind} `{name}`", where, f"{hint}valid {kind}s: {', '.join(valid)}")


def _check(key: str, f: dataclasses.Field, typ: type, value: Any, where: str) -> Any:
    """Return `value` converted to the field's type, or raise an NmtError that says why not."""
    meta = f.metadata
    if typ is float and isinstance(value, str):  # PyYAML reads 5e-4 (no dot) as a string
        with contextlib.suppress(ValueError):
            value = float(value)
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
    }[typ]
    if not ok:
        name = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[typ]
        fix = "quote it to make it a string" if typ is str else f"give {name}"
        raise NmtError(f"`{key}` must be {name}, got {value!r}", where, fix)
    value = typ(value)
    if typ is float and not math.isfinite(value):
        raise NmtError(f"`{key}` must be a finite number, got {value!r}", where, "give a number")
    if meta["pattern"] and value and not re.fullmatch(meta["pattern"], value):
        raise NmtError(
            f"`{key}` may hold only letters, digits, `-` and `_` (it names files); got {value!r}",
            where,
            "use a plain code such as `en`, `pt-BR` or `zh_Hant`",
        )
    if meta["choices"] and value not in meta["choices"]:
        raise NmtError(
            f"`{key}` must be one of {', '.join(meta['choices'])}; got {value!r}",
            where,
            f"choose one of: {', '.join(meta['choices'])}",
        )
    problem = meta["check"] and meta["check"](value)
    if problem:
        raise NmtError(
            f"`{key}`: {problem}; got {value!r}", where, f"see `{key}` in docs/config.md"
        )
    lo, hi = meta["min"], meta["max"]
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        bounds = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
        raise NmtError(f"`{key}` must be {bounds}; got {value!r}", where, f"give a value {bounds}")
    return value


def set_value(cfg: Config, key: str, value: Any, where: str) -> None:
    """Validate `value` and store it at `key` ("section.name"); `where` is named in errors."""
    section, _, name = key.partition(".")
    if section not in SECTIONS or not name:
        raise _unknown("section", section, list(SECTIONS), where)
    fields_ = _fields(section)
    if name not in fields_:
        raise _unknown(f"`{section}` key", name, list(fields_), where)
    typ = typing.get_type_hints(SECTIONS[section])[name]
    setattr(getattr(cfg, section), name, _check(key, fields_[name], typ, value, where))


def _yaml_lines(text: str) -> dict[str, int]:
    """Line number (1-based) of every `section` and `section.key` in a YAML text, for errors;
    one that appears twice is a YAMLError (YAML would keep the last one silently)."""
    lines: dict[str, int] = {}
    root = yaml.compose(text)
    if not isinstance(root, yaml.MappingNode):
        return lines

    def note(name: str, node: yaml.Node) -> None:
        if name in lines:
            raise yaml.constructor.ConstructorError(
                problem=f"{name} appears twice (also on line {lines[name]})",
                problem_mark=node.start_mark,
            )
        lines[name] = node.start_mark.line + 1

    for sec_key, sec_val in root.value:
        note(sec_key.value, sec_key)
        if isinstance(sec_val, yaml.MappingNode):
            for key, _ in sec_val.value:
                note(f"{sec_key.value}.{key.value}", key)
    return lines


def config_from_dict(
    raw: Any, source: str = "<dict>", lines: dict[str, int] | None = None
) -> Config:
    """Build a validated Config from nested dicts; unknown sections or keys are errors."""
    lines = lines or {}
    cfg = Config()
    if raw is None:
        return cfg
    if not isinstance(raw, dict):
        raise NmtError(
            "a config must be a mapping of sections",
            source,
            f"write sections at the top level: {', '.join(SECTIONS)}",
        )
    for section, values in raw.items():
        where = f"{source}:{lines[section]}" if section in lines else source
        if section not in SECTIONS:
            raise _unknown("section", str(section), list(SECTIONS), where)
        if values is None:
            continue
        if not isinstance(values, dict):
            raise NmtError(
                f"section `{section}` must be a mapping of keys to values", where,
                f"write `{section}:` and under it indented `key: value` lines",
            )  # fmt: skip
        for name, value in values.items():
            key = f"{section}.{name}"
            set_value(cfg, key, value, f"{source}:{lines[key]}" if key in lines else source)
    return cfg


def apply_overrides(cfg: Config, overrides: Sequence[str]) -> Config:
    """Apply `section.key=value` strings (values parsed as YAML scalars: 5e-4, true, 'text')."""
    for item in overrides:
        key, eq, text = item.partition("=")
        where = f"--set {item}"
        if not eq:
            raise NmtError(
                "an override must look like section.key=value",
                where,
                "for example: --set train.batch_tokens=4000",
            )
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError as exc:
            raise NmtError(f"cannot parse the value: {exc}", where) from None
        set_value(cfg, key.strip(), value, where)
    return cfg


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> Config:
    """Load a YAML config (or the defaults when `path` is None), then apply `--set` overrides."""
    cfg = Config()
    if path is not None:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise NmtError(
                "config file not found", str(path), "check the path; examples are in configs/"
            ) from None
        except IsADirectoryError:
            raise NmtError(
                "this config path is a directory", str(path), "name a YAML file, e.g. in configs/"
            ) from None
        except UnicodeDecodeError as exc:
            line = text_line(path.read_bytes(), exc.start)
            raise NmtError(
                "not UTF-8 text (corrupt, or another kind of file)", f"{path}:{line}",
                "name a YAML config saved as UTF-8",
            ) from None  # fmt: skip
        except OSError as exc:
            raise NmtError(f"cannot read it: {exc.strerror}", str(path)) from None
        try:
            raw, lines = yaml.safe_load(text), _yaml_lines(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark else str(path)
            raise NmtError(
                f"not valid YAML: {getattr(exc, 'problem', exc)}", where,
                "check the indentation, colons and quotes on that line and the one before",
            ) from None  # fmt: skip
        cfg = config_from_dict(raw, str(path), lines)
    return apply_overrides(cfg, overrides)


def text_line(data: bytes, offset: int) -> int:
    """The 1-based line number of byte `offset` in `data`."""
    return data.count(b"\n", 0, offset) + 1


def config_to_dict(cfg: Config) -> dict[str, dict[str, Any]]:
    """Plain nested dicts, for YAML/JSON and checkpoints."""
    return dataclasses.asdict(cfg)


def dump_config(cfg: Config) -> str:
    """The config as YAML, in schema order."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False, allow_unicode=True)


def checked(key: str, value: Any, where: str) -> Any:
    """`value` validated as the config key `key` would be (for options that override a key
    for one call, e.g. `translate --alpha`)."""
    cfg = Config()
    set_value(cfg, key, value, where)
    section, _, name = key.partition(".")
    return getattr(getattr(cfg, section), name)


def default(key: str) -> Any:
    """The default value of `section.name`; the CLI shows it in `--help`."""
    section, _, name = key.partition(".")
    return getattr(SECTIONS[section](), name)


def reference_markdown() -> str:
    """Every config key with its type, default, valid values and meaning (docs/config.md)."""
    out = [
        "# Configuration reference",
        "",
        "Generated by `nmt config --reference` from `nmt/config.py`; do not edit by hand.",
        "A config file is YAML with these sections; any key can be overridden on the command",
        "line with `--set section.key=value`. Numbers must be finite: NaN and infinities are",
        "invalid for every key.",
    ]
    hints_by_section = {s: typing.get_type_hints(cls) for s, cls in SECTIONS.items()}
    for section, cls in SECTIONS.items():
        out += [
            "",
            f"## `{section}`",
            "",
            (cls.__doc__ or "").strip(),
            "",
            "| key | type | default | valid | meaning |",
            "|---|---|---|---|---|",
        ]
        for f in dataclasses.fields(cls):
            meta = f.metadata
            if meta["choices"]:
                valid = ", ".join(f"`{c}`" for c in meta["choices"])
            elif meta["min"] is not None or meta["max"] is not None:
                lo = "" if meta["min"] is None else meta["min"]
                hi = "" if meta["max"] is None else meta["max"]
                valid = f"{lo} … {hi}".strip()
            elif meta["pattern"]:
                valid = "letters, digits, `-`, `_`"
            else:
                valid = ""
            typ = hints_by_section[section][f.name].__name__
            dflt = json.dumps(f.default)
            text = meta["help"].replace("|", "\\|")  # a bare | would end the table cell
            out.append(f"| `{f.name}` | {typ} | `{dflt}` | {valid} | {text} |")
    return "\n".join(out) + "\n"
