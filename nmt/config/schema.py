"""The configuration schema: five sections (`data`, `model`, `train`, `decode`, `serve`), each a
dataclass whose fields carry their default, help text and valid range (`option`). A key is
added here, and only here: the CLI's defaults and help, `docs/config.md` and validation all read
it from this schema.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from nmt.data.protect import PATTERNS, check_pattern_names, check_regex


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
# Bounds on the model's sizes, far above any model trained here: a typo (hidden_size=1000000)
# is an error naming the key, not an attempt to allocate terabytes.
MAX_WIDTH, MAX_DEPTH = 16384, 32


def _rate_or_follow(rate: float) -> str | None:
    """Why `rate` is neither a dropout rate nor -1 (follow model.dropout), or None."""
    return None if rate == -1 or 0 <= rate <= 0.99 else "must be -1 or between 0 and 0.99"


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
        "the sampling distribution: smaller is more varied, and longer, so batches grow "
        "past train.batch_tokens (by how much: docs/notes/). 0 = off (the store's fixed "
        "segmentation). Validation always uses the fixed one.",
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
    emb_size: int = option(256, "Word embedding size.", min=1, max=MAX_WIDTH)
    hidden_size: int = option(512, "GRU hidden size.", min=1, max=MAX_WIDTH)
    layers: int = option(1, "GRU layers in the encoder and the decoder.", min=1, max=MAX_DEPTH)
    dropout: float = option(
        0.2,
        "Dropout between stacked GRU layers, and on the embeddings and before the output "
        "layer unless model.emb_dropout / model.output_dropout say otherwise. (No dropout on "
        "the recurrent state: the fused GRU kernels have none.)",
        min=0.0,
        max=0.99,
    )
    emb_dropout: float = option(
        -1.0,
        "Dropout on the source and target embeddings; -1 = model.dropout.",
        check=_rate_or_follow,
    )
    output_dropout: float = option(
        -1.0,
        "Dropout on the decoder's output features, before the output layer; -1 = model.dropout.",
        check=_rate_or_follow,
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
        max=MAX_DEPTH,
    )
    dec_transition_depth: int = option(
        1,
        "GRU cells per decoder step (deep transition; Nematus' and Marian's "
        "--dec-cell-base-depth): as model.enc_transition_depth, for every decoder layer of "
        "every arch (rnnsearch: after the attention GRU, before the readout).",
        min=1,
        max=MAX_DEPTH,
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
        "1/sqrt(step)), `plateau` (multiply by lr_decay when the validation metric stalls), or "
        "one that anneals into the end of the budget (`train.max_steps` or `train.max_minutes`, "
        "whichever runs out first; minutes as max_minutes counts them, validation included): "
        "`linear` from lr to min_lr, `cosine`, or `rex` (high for longer, then down). Raising "
        "the budget on --resume stretches the decay.",
        choices=("constant", "inverse_sqrt", "plateau", "linear", "cosine", "rex"),
    )
    warmup_steps: int = option(0, "Linear warm-up from 0 to lr over this many steps.", min=0)
    lr_decay: float = option(
        0.5, "`plateau`: factor applied when the metric stalls.", min=0.01, max=1.0
    )
    lr_patience: int = option(2, "`plateau`: validations without improvement before decay.", min=0)
    min_lr: float = option(
        1e-6,
        "`plateau`: the learning rate never goes below this; `linear`, `cosine`, `rex`: the "
        "rate the schedule reaches at the end of the budget.",
        min=0.0,
    )
    src_word_dropout: float = option(
        0.0,
        "Word dropout on the source: the share of source tokens replaced by `<unk>` in each "
        "training batch (Sennrich & Zhang 2019 use 0.1-0.3 on small corpora); padding, `<s>`, "
        "`</s>` and placeholders are never replaced. 0 = off.",
        min=0.0,
        max=0.9,
    )
    tgt_word_dropout: float = option(
        0.0,
        "Word dropout on the target: the share of the decoder's input tokens (the previous "
        "words it conditions on, never the words it predicts) replaced by `<unk>`. 0 = off.",
        min=0.0,
        max=0.9,
    )
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
        "every 2 s (beside a busy process, fewer threads train faster than spinning ones). "
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
        "Input lines longer than this many subwords are split or truncated (with a "
        "warning; `decode.long_lines`); 0 means the training limit `train.max_len`.",
        min=0,
    )
    long_lines: str = option(
        "split",
        "A line over `decode.max_input_len`: `split` translates it whole, in parts cut at "
        "sentence ends (else clause ends, commas, spaces) that each fit, their translations "
        "joined with a space (no attention weights; `nmt score` always truncates); "
        "`truncate` translates its first `max_input_len` subwords only.",
        choices=("split", "truncate"),
    )
    shortlist: bool = option(
        False,
        "Score only each sentence's lexical shortlist in the output layer where the checkpoint "
        "has one (`nmt train` builds it, `nmt shortlist` adds it); `nmt score` scores all. "
        "Off by default: 1.2-1.3x faster at beam 5 on the Bible models, it costs them 0.0-0.45 "
        "BLEU (docs/performance.md).",
    )
    shortlist_k: int = option(50, "Shortlist: target subwords per source subword (≤ 100).", min=1)
    shortlist_frequent: int = option(200, "Shortlist: frequent target subwords added.", min=0)


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
        "processes): one per core gives the most sentences/s under load, one answers a "
        "lone request soonest (docs/performance.md). A worker that dies is replaced (up to 3 "
        "starts a minute per place).",
        min=1,
    )
    max_batch_tokens: int = option(
        0,
        "Most source subwords x beam decoded at once, over all requests and search options; "
        "one request holds at most half. 0 means `decode.batch_tokens`. Smaller batches "
        "answer sooner under load (a newcomer waits for the step under way).",
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
    max_request_cost: int = option(
        250_000,
        "Most source subwords (with each sentence's end) x beam in one request; more is a 413 "
        "error. 256 sentences of 30 subwords fit at beam 32; 200 of 130 words at beam 32 "
        "(1.2M) decode for minutes on 2 cores, past drain_seconds and proxies' timeouts.",
        min=1,
    )
    drain_seconds: float = option(
        30.0,
        "On SIGTERM or Ctrl-C the server stops accepting connections and finishes the "
        "requests in flight, for at most this long, then exits: what is not translated by "
        "then is dropped and answered with a JSON 503.",
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
