"""The `nmt` command line: options in, Python API calls, results and errors out.

This is the only module that knows about the terminal. Option defaults shown in `--help` come
from `nmt.config` (None here means "the config's value"). Every command runs inside one error
boundary (`_command`): a user error (`NmtError`) or a fault of the machine (a read-only or full
disk, a missing permission: `OSError`) is printed as one `error:` line naming the file, without
a traceback, and exits with code 2; a failed `--min-bleu` gate exits with code 1.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from nmt import __version__
from nmt.config import Config, default, dump_config, load_config, reference_markdown, set_value
from nmt.errors import NmtError
from nmt.fileio import os_error, refuse_input_as_output

app = typer.Typer(
    help="Neural machine translation with GRU encoder-decoders "
    "(Cho et al. 2014; Bahdanau et al. 2015).\n\n"
    "Typical run: nmt preprocess → nmt train → nmt translate → nmt evaluate.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
SERVE_EXTRA = ("fastapi", "uvicorn", "prometheus_client")
bench_app = typer.Typer(help="Benchmarks: print a table and write JSON.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="YAML config file (see configs/ and docs/config.md)."),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="KEY=VALUE",
        help="Override a config key: --set section.key=value (repeatable).",
    ),
]


def _d(key: str) -> str:
    """The default of a config key, for `show_default`."""
    value = default(key)
    return str(value).lower() if isinstance(value, bool) else str(value)


AlphaOpt = Annotated[
    float | None,
    typer.Option(help="Length penalty exponent (--penalty wu).", show_default=_d("decode.alpha")),
]
PenaltyOpt = Annotated[
    str | None,
    typer.Option(help="wu, length or none.", show_default=_d("decode.length_penalty")),
]
ErrorsOpt = Annotated[
    str, typer.Option(help="Invalid UTF-8 in the input: strict (stop with an error) or replace.")
]
DeviceOpt = Annotated[str, typer.Option(help="auto (CUDA if present), cpu, cuda, cuda:N.")]
PrecisionOpt = Annotated[
    str,
    typer.Option(
        help="fp32, bf16, fp16 (GPU only), or auto: bf16 on GPUs that have it (else fp16) "
        "and on CPUs with native bf16, else fp32."
    ),
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"nmt {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    pass


def _fail(err: NmtError) -> typer.Exit:
    """Exit code 2 with the error (only rank 0 of a distributed run reports it)."""
    if os.environ.get("RANK", "0") == "0":
        typer.echo(f"error: {err}", err=True)
    return typer.Exit(2)


def _command(group: typer.Typer, name: str | None = None) -> Callable[[Callable], Callable]:
    """Register a command behind the error boundary (see the module docstring)."""

    def register(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except NmtError as err:
                raise _fail(err) from None
            except OSError as exc:
                raise _fail(os_error(exc)) from None

        group.command(name)(run)
        return fn

    return register


def _ints(text: str, flag: str) -> list[int]:
    """A comma-separated list of positive integers, e.g. `--pairs 1000,10000`."""
    try:
        values = [int(x) for x in text.split(",")]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise NmtError(f"expected positive integers separated by commas, got {text!r}", flag)
    return values


def _without_option(argv: list[str], name: str) -> list[str]:
    """argv without `name VALUE` / `name=VALUE`."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == name:
            skip = True
        elif not arg.startswith(name + "="):
            out.append(arg)
    return out


def _config(
    path: Path | None, overrides: list[str] | None, **options: tuple[str, object]
) -> Config:
    """Load the config, apply --set, then the command's own options (named in errors as --opt)."""
    cfg = load_config(path, overrides or [])
    for flag, (key, value) in options.items():
        if value is not None:
            set_value(cfg, key, value, f"--{flag.replace('_', '-')}")
    return cfg


@_command(app)
def preprocess(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory (created).")],
    src: Annotated[
        str | None, typer.Option(metavar="LANG", help="Source language code, e.g. es.")
    ] = None,
    tgt: Annotated[
        str | None, typer.Option(metavar="LANG", help="Target language code, e.g. en.")
    ] = None,
    train: Annotated[
        str | None,
        typer.Option(
            metavar="CORPUS",
            help="Training corpus: TSV file, text prefix (PREFIX.SRC/PREFIX.TGT), or anything "
            "`datasets` loads (hub name, save_to_disk dir, JSON/CSV/Parquet; NAME:split).",
        ),
    ] = None,
    dev: Annotated[
        str | None,
        typer.Option(
            metavar="CORPUS", help="Validation corpus (same forms); never cleaned or filtered."
        ),
    ] = None,
    test: Annotated[
        str | None,
        typer.Option(
            metavar="CORPUS", help="Test corpus (same forms), optional; never cleaned or filtered."
        ),
    ] = None,
    vocab_size: Annotated[
        int | None,
        typer.Option(help="SentencePiece vocabulary size.", show_default=_d("data.vocab_size")),
    ] = None,
    joint: Annotated[
        bool | None,
        typer.Option(
            "--joint/--separate",
            help="One subword model for both languages, or one per side.",
            show_default=_d("data.joint"),
        ),
    ] = None,
    format: Annotated[
        str | None, typer.Option(help="auto, tsv, text or hf.", show_default=_d("data.format"))
    ] = None,
    dedup: Annotated[
        bool | None,
        typer.Option(
            "--dedup/--no-dedup",
            help="Drop exact duplicate training pairs.",
            show_default=_d("data.dedup"),
        ),
    ] = None,
    protect: Annotated[
        str | None,
        typer.Option(
            metavar="PATTERNS",
            help="Protected spans (placeholders, tags, URLs) that translation keeps whole: "
            "comma-separated printf, brace, shell, xml, url, email, or all.",
            show_default=_d("data.protect"),
        ),
    ] = None,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite",
            help="Replace an output directory that holds a different preprocessed corpus.",
        ),
    ] = False,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Clean a parallel corpus, train SentencePiece, and write binarised, memory-mapped splits.

    Only the training split is cleaned (NFC, control characters, empty, too long, length ratio,
    optional duplicates); dev and test are kept line for line. The output directory appears only
    when everything succeeded.
    """
    from nmt.preprocess import preprocess as run

    cfg = _config(
        config,
        set_,
        src=("data.src", src),
        tgt=("data.tgt", tgt),
        train=("data.train", train),
        dev=("data.dev", dev),
        test=("data.test", test),
        vocab_size=("data.vocab_size", vocab_size),
        joint=("data.joint", joint),
        format=("data.format", format),
        dedup=("data.dedup", dedup),
        protect=("data.protect", protect),
    )
    manifest = run(cfg.data, out, overwrite=overwrite)
    typer.echo(_preprocess_report(manifest, out))


def _preprocess_report(manifest: dict, out: Path) -> str:
    cleaning = manifest["cleaning"]
    lines = [f"cleaning train: {cleaning['read']} pairs read, {cleaning['kept']} kept"]
    lines += [f"  dropped {n:>8}  {rule}" for rule, n in cleaning["dropped"].items()]
    if "spans" in cleaning:
        spans = cleaning["spans"]
        lines.append(
            f"  protected spans: {spans['masked']} pairs masked, {spans['unmatched']} kept as "
            "they are (the two sides' spans differ)"
        )
    for lang, info in manifest["tokenizers"].items():
        lines.append(f"subwords {lang}: {info['file']}, {info['vocab_size']} pieces")
    for split, info in manifest["splits"].items():
        toks = ", ".join(f"{n} {lang} tokens" for lang, n in info["tokens"].items())
        lines.append(f"{split:>5}: {info['pairs']} pairs, {toks}")
    lines.append(f"wrote {out} in {manifest['seconds']} s")
    return "\n".join(lines)


@_command(app)
def evaluate(
    hyp: Annotated[Path, typer.Argument(help="Hypotheses, one per line ('-' for stdin).")],
    refs: Annotated[list[Path], typer.Argument(help="Reference file(s), line-aligned with HYP.")],
    metrics: Annotated[str, typer.Option(help="Comma-separated: bleu, chrf, ter.")] = "bleu,chrf",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (for dashboards).")] = False,
    min_bleu: Annotated[
        float | None,
        typer.Option(help="Exit with code 1 if BLEU is below this (a CI quality gate)."),
    ] = None,
) -> None:
    """Score detokenised hypotheses against references with sacrebleu (with signatures)."""
    from nmt.metrics import bleu_gate, score_files

    names = [m.strip() for m in metrics.split(",") if m.strip()]
    scores = score_files(hyp, refs, list(dict.fromkeys(names)))  # each once
    failure = bleu_gate(scores, min_bleu) if min_bleu is not None else None
    if as_json:
        typer.echo(json.dumps([s.as_dict() for s in scores], indent=2))
    else:
        for s in scores:
            typer.echo(f"{s.text}\n  signature: {s.signature}")
    if failure:
        typer.echo(f"FAILED: {failure}", err=True)
        raise typer.Exit(1)


@_command(app)
def config(
    path: Annotated[Path | None, typer.Argument(help="YAML config to load.")] = None,
    set_: SetOpt = None,
    reference: Annotated[
        bool, typer.Option(help="Print the documentation of every key (docs/config.md) instead.")
    ] = False,
) -> None:
    """Print the resolved configuration (defaults, then the file, then --set) as YAML."""
    if reference:
        typer.echo(reference_markdown(), nl=False)
        return
    typer.echo(dump_config(load_config(path, set_ or [])), nl=False)


BenchOut = Annotated[Path, typer.Option(help="Directory for the JSON report.")]


@_command(bench_app, "preprocess")
def bench_preprocess(
    corpus: Annotated[Path, typer.Option(help="TSV corpus (header names the languages last).")],
    pairs: Annotated[
        str,
        typer.Option(help="Comma-separated corpus sizes: the corpus's rows cycled (numbered)."),
    ] = "100000,1000000",
    out: BenchOut = Path("bench-out"),
    set_: SetOpt = None,
) -> None:
    """Preprocessing throughput (pairs/s) and peak memory at several corpus sizes."""
    from nmt import bench

    sizes = _ints(pairs, "--pairs")
    rows = bench.bench_preprocess(corpus, sizes, set_ or [])
    path = bench.write_report(out, "preprocess", rows, {"corpus": str(corpus), "set": set_ or []})
    typer.echo(f"{bench.table(rows)}\nwrote {path}")


@_command(bench_app, "batching")
def bench_batching(
    data: Annotated[Path, typer.Option(help="Preprocessed directory (nmt preprocess --out).")],
    caps: Annotated[str, typer.Option(help="Comma-separated token caps.")] = "1500,3000,6000",
    pools: Annotated[str, typer.Option(help="Comma-separated pool sizes.")] = "10000,100000",
    out: BenchOut = Path("bench-out"),
) -> None:
    """Padding share of the token-bucketed batch sampler on a preprocessed corpus."""
    from nmt import bench

    rows = bench.bench_batching(data, _ints(caps, "--caps"), _ints(pools, "--pools"))
    path = bench.write_report(out, "batching", rows, {"data": str(data)})
    typer.echo(f"{bench.table(rows)}\nwrote {path}")


@_command(bench_app, "train")
def bench_train(
    data: Annotated[Path, typer.Option(help="Preprocessed directory (nmt preprocess --out).")],
    archs: Annotated[str, typer.Option(help="Comma-separated architectures.")] = (
        "rnnenc,rnnsearch,luong"
    ),
    sizes: Annotated[str, typer.Option(help="Comma-separated EMBxHIDDEN sizes.")] = "256x512",
    precisions: Annotated[str, typer.Option(help="Comma-separated: fp32, bf16, fp16.")] = "fp32",
    steps: Annotated[int, typer.Option(min=1, help="Timed updates per configuration.")] = 20,
    warmup: Annotated[int, typer.Option(min=0, help="Untimed updates first.")] = 3,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N.")] = "auto",
    out: BenchOut = Path("bench-out"),
    set_: SetOpt = None,
    variant: Annotated[
        list[str] | None,
        typer.Option(
            "--variant",
            metavar="NAME[:KEY=VALUE,...]",
            help="A named set of config overrides measured beside the others, e.g. "
            "--variant base --variant ln:model.layer_norm=true (repeatable; a row each).",
        ),
    ] = None,
) -> None:
    """Training tokens/s, peak memory and model FLOP utilisation per architecture and size.

    Utilisation = analytic training FLOPs (3 x forward matrix products, from the layer sizes)
    per second, divided by the matrix-multiply rate of the same dtype measured in the same
    process. Each configuration runs in a fresh process on real batches from --data.
    """
    from nmt import bench

    dims = _ints(sizes.replace("x", ","), "--sizes")
    if len(dims) % 2 or sizes.count("x") != len(dims) // 2:
        raise NmtError(
            f"expected EMBxHIDDEN pairs, e.g. 256x512,512x1024; got {sizes!r}", "--sizes"
        )
    runs = [
        {"model.arch": a, "model.emb_size": e, "model.hidden_size": h, "train.precision": p} | extra
        for a in archs.split(",")
        for e, h in zip(dims[::2], dims[1::2])
        for p in precisions.split(",")
        for extra in _variants(variant)
    ]
    rows = bench.bench_train(data, runs, steps, warmup, device, set_ or [])
    settings = {"data": str(data), "steps": steps, "warmup": warmup, "set": set_ or []}
    path = bench.write_report(out, "train", rows, settings)
    typer.echo(f"{bench.table(rows)}\nwrote {path}")


def _variants(specs: list[str] | None) -> list[dict[str, str]]:
    """--variant NAME[:KEY=VALUE,...] → {"variant": NAME, KEY: VALUE, ...} each ([{}] if none);
    the keys and values are checked when each run's config is built."""
    variants = []
    for spec in specs or []:
        name, _, sets = spec.partition(":")
        pairs = [item.partition("=") for item in sets.split(",")] if sets else []
        if not name or any(not key or not eq for key, eq, _ in pairs):
            raise NmtError(
                f"expected NAME or NAME:KEY=VALUE,KEY=VALUE; got {spec!r}",
                "--variant",
                "e.g. --variant ln:model.layer_norm=true",
            )
        variants.append({"variant": name} | {key: value for key, _, value in pairs})
    return variants or [{}]


@_command(bench_app, "distributed")
def bench_distributed(
    data: Annotated[Path, typer.Option(help="Preprocessed directory (nmt preprocess --out).")],
    config: Annotated[Path | None, typer.Option(help="YAML config to train with.")] = None,
    processes: Annotated[
        str, typer.Option(help="Comma-separated process counts to launch under torchrun.")
    ] = "1,2",
    steps: Annotated[int, typer.Option(min=4, help="Updates per run (4 logged windows).")] = 60,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda.")] = "auto",
    out: BenchOut = Path("bench-out"),
    set_: SetOpt = None,
) -> None:
    """Training tokens/s under torchrun (DDP) against a plain run, same global batch.

    On one GPU, `--processes 1` gives the overhead of DDP (NCCL, world size 1); on a CPU the
    processes split the cores between them.
    """
    from nmt import bench

    counts = _ints(processes, "--processes")
    rows = bench.bench_distributed(data, config, counts, steps, device, set_ or [])
    settings = {"data": str(data), "config": str(config), "steps": steps, "set": set_ or []}
    path = bench.write_report(out, "distributed", rows, settings)
    typer.echo(f"{bench.table(rows)}\nwrote {path}")


@_command(bench_app, "serve")
def bench_serve(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint to serve.")],
    input: Annotated[
        Path, typer.Option("--input", "-i", help="Source text, one sentence per line.")
    ],
    lines: Annotated[int, typer.Option(min=1, help="Non-empty lines to take from --input.")] = 500,
    clients: Annotated[
        str, typer.Option(help="Comma-separated concurrent clients.")
    ] = "1,8,64,256",
    workers: Annotated[str, typer.Option(help="Comma-separated server process counts.")] = "1",
    beam: Annotated[int, typer.Option(min=1, help="Beam width of every request.")] = 5,
    seconds: Annotated[
        float,
        typer.Option(
            help="Time limit per client level (each sends 10 requests per client, at least "
            "--lines)."
        ),
    ] = 60,
    precision: Annotated[str, typer.Option(help="fp32, bf16, fp16 or auto.")] = "auto",
    max_wait_ms: Annotated[float, typer.Option(help="The server's serve.max_wait_ms.")] = default(
        "serve.max_wait_ms"
    ),
    out: BenchOut = Path("bench-out"),
) -> None:
    """Server sentences/s and p50/p95/p99 latency per concurrent client count, against
    translating the same sentences as a file and one at a time (same run)."""
    _need_serve_extra("nmt bench serve")
    from nmt import bench
    from nmt.serve.loadgen import bench_serve as run_bench

    counts = _ints(clients, "--clients")
    rows = run_bench(
        checkpoint,
        input,
        lines,
        counts,
        _ints(workers, "--workers"),
        beam,
        seconds,
        precision,
        max_wait_ms,
    )
    settings = {
        "checkpoint": str(checkpoint),
        "input": str(input),
        "lines": lines,
        "beam": beam,
        "max_wait_ms": max_wait_ms,
    }
    path = bench.write_report(out, "serve", rows, settings)
    typer.echo(f"{bench.table(rows)}\nwrote {path}")


@_command(bench_app, "translate")
def bench_translate(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint to decode with.")],
    input: Annotated[
        Path, typer.Option("--input", "-i", help="Source text, one sentence per line.")
    ],
    lines: Annotated[int, typer.Option(min=1, help="Non-empty lines to take from --input.")] = 1000,
    beams: Annotated[str, typer.Option(help="Comma-separated beam sizes.")] = "1,5",
    batch_tokens: Annotated[
        str, typer.Option(help="Comma-separated batch sizes (source subwords x beam).")
    ] = "2000,6000,20000,60000",
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N.")] = "auto",
    precision: Annotated[str, typer.Option(help="fp32, bf16, fp16 or auto.")] = "auto",
    out: BenchOut = Path("bench-out"),
) -> None:
    """Translation sentences/s and tokens/s: batched at several sizes, and one at a time."""
    from nmt import bench

    rows = bench.bench_translate(
        checkpoint,
        input,
        lines,
        _ints(beams, "--beams"),
        _ints(batch_tokens, "--batch-tokens"),
        device,
        precision,
    )
    settings = {"checkpoint": str(checkpoint), "input": str(input), "lines": lines}
    path = bench.write_report(out, "translate", rows, settings)
    typer.echo(f"{bench.table(rows)}\nwrote {path}")


@_command(app)
def train(
    config: Annotated[
        Path | None, typer.Argument(help="YAML config (model, train, decode sections).")
    ] = None,
    data: Annotated[
        Path, typer.Option(help="Preprocessed directory (nmt preprocess --out).")
    ] = ...,
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory (created).")] = ...,
    set_: SetOpt = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume", help="Continue the run in --out from last.pt (its own config, plus --set)."
        ),
    ] = False,
    overwrite: Annotated[
        bool,
        typer.Option("--overwrite", help="Start over in a run directory that holds another run."),
    ] = False,
    device: DeviceOpt = "auto",
    distributed: Annotated[
        int,
        typer.Option(
            help="Train on N processes of this machine (one per GPU; gloo on CPU): re-runs this "
            "command under `torchrun --standalone --nproc-per-node N`. For several machines, "
            "start `torchrun ... -m nmt train ...` yourself (README, Scaling up).",
            min=0,
            metavar="N",
        ),
    ] = 0,
) -> None:
    """Train a GRU encoder-decoder; writes best.pt, last.pt and metrics.jsonl to --out.

    Validates every train.valid_every updates (dev loss, greedy BLEU/chrF), keeps the best
    checkpoint, stops early when the metric stalls. Ctrl-C or SIGTERM saves last.pt and exits
    (code 130 or 143); --resume continues exactly where it stopped, on any number of processes.
    """
    from nmt import distributed as ddp
    from nmt.train import train as run

    if distributed and not ddp.launched_by_torchrun():
        command = ddp.torchrun_command(distributed, _without_option(sys.argv[1:], "--distributed"))
        os.execv(command[0], command)
    main_rank = os.environ.get("RANK", "0") == "0"
    cfg = load_config(config, set_ or [])
    trainer, reason = run(
        cfg, data, out, resume=resume, overwrite=overwrite, overrides=set_ or [], device=device
    )
    if reason == "signal":  # saved, but not finished: a failure to `nmt train ... && next`
        if main_rank:
            typer.echo(
                f"stopped by {trainer.stop_signal}; continue with: nmt train --data {data} "
                f"--out {out} --resume",
                err=True,
            )
        signum = getattr(signal.Signals, trainer.stop_signal or "", signal.SIGINT)
        raise typer.Exit(128 + signum)


@_command(app)
def average(
    checkpoints: Annotated[list[Path], typer.Argument(help="Checkpoints of one run (.pt).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The averaged checkpoint to write.")],
) -> None:
    """Average the weights of several checkpoints (e.g. RUN_DIR/step-*.pt) into one."""
    from nmt.checkpoint import average_checkpoints

    refuse_input_as_output(out, checkpoints)
    average_checkpoints(checkpoints, out)
    typer.echo(f"wrote {out}: the average of {len(checkpoints)} checkpoints")


@_command(app)
def translate(
    checkpoints: Annotated[
        list[Path], typer.Argument(help="Checkpoint(s); several decode as an ensemble.")
    ],
    input: Annotated[
        str,
        typer.Option("--input", "-i", help="Text to translate, one sentence per line; - is stdin."),
    ] = "-",
    output: Annotated[
        str, typer.Option("--output", "-o", help="Where to write; - is stdout.")
    ] = "-",
    beam: Annotated[
        int | None,
        typer.Option(min=1, help="Beam width (1: greedy).", show_default=_d("decode.beam_size")),
    ] = None,
    alpha: AlphaOpt = None,
    penalty: PenaltyOpt = None,
    nbest: Annotated[
        int, typer.Option(min=1, help="Hypotheses per line (≤ beam; needs --format tsv or jsonl).")
    ] = 1,
    batch_tokens: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Batch size: source subwords x beam.",
            show_default=_d("decode.batch_tokens"),
        ),
    ] = None,
    format: Annotated[
        str,
        typer.Option(
            help="text: the best translation; tsv: translation<TAB>score per hypothesis; "
            "jsonl: a JSON object per line with every hypothesis, its score and subwords."
        ),
    ] = "text",
    attention: Annotated[
        bool, typer.Option("--attention", help="Add attention weights to --format jsonl.")
    ] = False,
    plot_attention: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR", help="Write attention heatmaps (line-N.png) for the first lines."
        ),
    ] = None,
    plot_lines: Annotated[
        int, typer.Option(min=1, help="How many lines --plot-attention draws.")
    ] = 10,
    errors: ErrorsOpt = "strict",
    glossary: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            help="Terms to translate as given: a TSV file of source<TAB>target lines. A term is "
            "found as whole words, longest first, and carried like a placeholder (needs a model "
            "preprocessed with --protect); jsonl output lists the terms applied per line.",
        ),
    ] = None,
    glossary_ignore_case: Annotated[
        bool, typer.Option("--glossary-ignore-case", help="Match glossary terms in any case.")
    ] = False,
    markup: Annotated[
        str | None,
        typer.Option(
            help="xml: the input holds inline XML (e.g. help pages); its tags and entities are "
            "carried through, nested as in the input, and the rest is escaped, so the output "
            "is well-formed XML with the same tags (needs a model preprocessed with --protect)."
        ),
    ] = None,
    sampling: Annotated[
        str | None,
        typer.Option(
            metavar="full|topk:K|topp:P",
            help="Draw one translation per line from the model instead of searching: from the "
            "whole distribution, the K most probable tokens, or the smallest set holding "
            "probability P (e.g. for back-translation). A line gets the same draw for a --seed "
            "whatever its batch.",
        ),
    ] = None,
    temperature: Annotated[
        float, typer.Option(help="Divides the log-probabilities before --sampling draws.")
    ] = 1.0,
    prefix_file: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            help="Target-language text each translation must begin with, one line per input "
            "line (empty: none), as interactive translation needs: the prefix is forced, the "
            "rest searched (or sampled).",
        ),
    ] = None,
    seed: Annotated[int, typer.Option(min=0, help="The draws of --sampling.")] = 1,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
) -> None:
    """Translate a file or stdin with trained checkpoint(s): exactly one output line per line.

    Lines are batched by length and decoded with beam search; empty lines stay empty, overlong
    lines are truncated with a warning. A model preprocessed with --protect keeps every
    placeholder, tag and URL of the input, exactly once each. Reading from a pipe, each
    translation is written as soon as its line has arrived. Writing to a file shows a progress
    bar, and the file appears only when complete.
    """
    from nmt import textfiles
    from nmt.protect import read_glossary
    from nmt.translate import Translator

    _check_translate_options(format, nbest, attention, errors)
    _check_needed(
        ("--temperature", temperature != 1.0, "--sampling", sampling),
        ("--seed", seed != 1, "--sampling", sampling),
        ("--plot-lines", plot_lines != 10, "--plot-attention", plot_attention),
        ("--glossary-ignore-case", glossary_ignore_case, "--glossary", glossary),
    )
    refuse_input_as_output(output, [input, prefix_file, glossary, *checkpoints])
    if markup not in (None, "xml"):
        raise NmtError(
            f"unknown markup {markup!r}", "--markup", "use --markup xml, or leave it out"
        )
    _not_both_stdin(("--input", input), ("--prefix-file", prefix_file))
    terms = read_glossary(glossary) if glossary else None
    prefixes = textfiles.read_prefixes(prefix_file, errors) if prefix_file else None
    translator = Translator.from_checkpoint(checkpoints, device, precision)
    translator.warn = lambda message: typer.echo(message, err=True)
    if terms is not None or markup:
        translator.protect(terms, glossary_ignore_case, markup)
    translator.decode_options(  # every option checked before any line is read
        beam, nbest, alpha, penalty, batch_tokens, attention, sampling, temperature, seed
    )
    if (attention or plot_attention) and not translator.has_attention:
        raise NmtError(
            "this model has no attention weights to show (rnnenc reads a fixed summary)",
            "--attention" if attention else "--plot-attention",
            "leave the option out, or use an rnnsearch or luong model",
        )
    if plot_attention:
        textfiles.plot_directory(plot_attention)
    textfiles.run_files(
        translator,
        input,
        output,
        fmt=format,
        errors=errors,
        attention=attention,
        plot_dir=plot_attention,
        plot_lines=plot_lines,
        beam=beam,
        nbest=nbest,
        alpha=alpha,
        penalty=penalty,
        batch_tokens=batch_tokens,
        sampling=sampling,
        temperature=temperature,
        seed=seed,
        prefixes=prefixes,
    )


@_command(app)
def score(
    checkpoints: Annotated[
        list[Path], typer.Argument(help="Checkpoint(s); several score as an ensemble.")
    ],
    source: Annotated[
        str,
        typer.Option("--source", "-s", help="Source sentences, one per line; - is stdin."),
    ],
    target: Annotated[
        str,
        typer.Option(
            "--target", "-t", help="Their translations, one per line, line for line; - is stdin."
        ),
    ],
    output: Annotated[
        str, typer.Option("--output", "-o", help="Where to write; - is stdout.")
    ] = "-",
    format: Annotated[
        str,
        typer.Option(
            help="text: the score alone; tsv: source<TAB>target<TAB>score; jsonl: a JSON object "
            "per pair with the score, the target's subwords and each one's log-probability."
        ),
    ] = "text",
    alpha: AlphaOpt = None,
    penalty: PenaltyOpt = None,
    batch_tokens: Annotated[
        int | None,
        typer.Option(
            min=1, help="Batch size in target subwords (default: decode.batch_tokens / beam)."
        ),
    ] = None,
    errors: ErrorsOpt = "strict",
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
) -> None:
    """The model's score of given translations (forced decoding): one line per pair.

    A score is the sum of the log-probabilities of the target's subwords and eos, divided by
    the length penalty as the search does (same --penalty and --alpha), so the best
    hypothesis of `nmt translate` gets its search score. Use it to filter a noisy corpus
    (drop the lowest) or to rerank n-best lists. Writing to a file shows a progress bar, and
    the file appears only when complete.
    """
    from nmt import score as api
    from nmt.translate import Translator

    _check_translate_options(format, 1, False, errors)
    _not_both_stdin(("--source", source), ("--target", target))
    refuse_input_as_output(output, [source, target, *checkpoints])
    translator = Translator.from_checkpoint(checkpoints, device, precision)
    translator.warn = lambda message: typer.echo(message, err=True)
    api.run_files(
        translator,
        source,
        target,
        output,
        fmt=format,
        errors=errors,
        penalty=penalty,
        alpha=alpha,
        batch_tokens=batch_tokens,
    )


@_command(app)
def serve(
    checkpoints: Annotated[
        list[Path], typer.Argument(help="Checkpoint(s); several decode as an ensemble.")
    ],
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    host: Annotated[
        str | None, typer.Option(help="Address to listen on.", show_default=_d("serve.host"))
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port (0: any free one).", show_default=_d("serve.port"))
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(help="Server processes on the port.", show_default=_d("serve.workers")),
    ] = None,
    beam: Annotated[
        int | None,
        typer.Option(min=1, help="Default beam width.", show_default=_d("decode.beam_size")),
    ] = None,
    max_batch_tokens: Annotated[
        int | None,
        typer.Option(
            help="Most source subwords x beam per decoded batch (0: decode.batch_tokens).",
            show_default=_d("serve.max_batch_tokens"),
        ),
    ] = None,
    max_wait_ms: Annotated[
        float | None,
        typer.Option(
            help="How long a batch may wait for the clients just answered.",
            show_default=_d("serve.max_wait_ms"),
        ),
    ] = None,
    max_queue: Annotated[
        int | None,
        typer.Option(
            help="Most sentences queued; beyond, 503 + Retry-After.",
            show_default=_d("serve.max_queue"),
        ),
    ] = None,
    api_key_file: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            help="Require `Authorization: Bearer <key>` (the file's first line) on every "
            "route but /health.",
        ),
    ] = None,
    access_log: Annotated[bool, typer.Option("--access-log", help="Log every request.")] = False,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
) -> None:
    """Serve a trained model over HTTP: a JSON API, a page to try it at /, and metrics.

    POST /v1/translate with {"text": "..."} or {"texts": [...]}; the sentences of concurrent
    requests are decoded in shared batches by the search `nmt translate` uses, so the answers
    are the same. GET /health, /v1/model, /metrics; the OpenAPI schema at /docs. Listens on
    127.0.0.1 unless --host says otherwise; SIGTERM or Ctrl-C finishes the requests in flight,
    then exits. Limits (body size, sentences per request, characters per sentence, queue) are
    the serve.* config keys (docs/config.md). Needs the serve extra: pip install 'nmt[serve]'.
    """
    _need_serve_extra("nmt serve")
    from nmt.serve.server import ServeSettings
    from nmt.serve.server import serve as run_server

    cfg = _config(
        config,
        overrides,
        host=("serve.host", host),
        port=("serve.port", port),
        workers=("serve.workers", workers),
        max_batch_tokens=("serve.max_batch_tokens", max_batch_tokens),
        max_wait_ms=("serve.max_wait_ms", max_wait_ms),
        max_queue=("serve.max_queue", max_queue),
    )
    decode = [s for s in overrides or [] if s.strip().startswith("decode.")]
    if beam is not None:
        decode.append(f"decode.beam_size={beam}")
    settings = ServeSettings(
        checkpoints=[str(c) for c in checkpoints],
        serve=dataclasses.asdict(cfg.serve),
        decode=decode,
        device=device,
        precision=precision,
        api_key_file=None if api_key_file is None else str(api_key_file),
    )
    run_server(settings, access_log=access_log)


def _need_serve_extra(command: str) -> None:
    """The server's packages are an extra (`nmt[serve]`): say so instead of an ImportError."""
    missing = [m for m in SERVE_EXTRA if importlib.util.find_spec(m) is None]
    if missing:
        raise NmtError(
            f"the server needs packages that are not installed: {', '.join(missing)}",
            command,
            "pip install 'nmt[serve]'",
        )


def _check_translate_options(fmt: str, nbest: int, attention: bool, errors: str) -> None:
    if fmt not in ("text", "tsv", "jsonl"):
        raise NmtError(f"unknown format {fmt!r}", "--format", "use text, tsv or jsonl")
    if errors not in ("strict", "replace"):
        raise NmtError(f"unknown error mode {errors!r}", "--errors", "use strict or replace")
    if nbest > 1 and fmt == "text":
        raise NmtError(
            "--nbest lists need a format that holds them",
            "--nbest",
            "add --format tsv or --format jsonl",
        )
    if attention and fmt != "jsonl":
        raise NmtError(
            "attention weights are written in jsonl only", "--attention", "add --format jsonl"
        )


def _not_both_stdin(
    first: tuple[str, str | Path | None], second: tuple[str, str | Path | None]
) -> None:
    """Two inputs given as "-" (flag, value each) would both read one stdin."""
    (flag_a, a), (flag_b, b) = first, second
    if str(a) == "-" and str(b) == "-":
        raise NmtError(f"{flag_a} and {flag_b} cannot both be stdin", f"{flag_a}/{flag_b}",
                       "name a file for one of them")  # fmt: skip


def _check_needed(*rules: tuple[str, bool, str, object]) -> None:
    """(option, given, the option it works with, that option's value): an option given
    without the one it works with would be ignored silently."""
    for option, given, needed, value in rules:
        if given and value is None:
            raise NmtError(
                f"{option} only applies with {needed}",
                option,
                f"add {needed}, or leave {option} out",
            )


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM unwinds like Ctrl-C, so that no half-written output is left behind (`nmt train`
    installs its own handler: it saves a checkpoint first)."""
    raise SystemExit(128 + signum)


def main() -> None:
    """Console-script entry point."""
    signal.signal(signal.SIGTERM, _terminate)
    app(prog_name="nmt")


if __name__ == "__main__":
    sys.exit(main())
