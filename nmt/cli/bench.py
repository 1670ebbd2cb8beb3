"""`nmt bench ...`: the measurements of `nmt.bench`, one command each; a table and a JSON report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nmt.cli.app import (
    SetOpt,
    bench_app,
    command,
    ints,
)
from nmt.cli.serve import need_serve_extra
from nmt.config import default
from nmt.errors import NmtError


def _report(out: Path, name: str, rows: list[dict], settings: dict) -> None:
    """Print the rows as a table and write them, with the settings and the machine, as JSON."""
    from nmt.bench.report import table, write_report

    path = write_report(out, name, rows, settings)
    typer.echo(f"{table(rows)}\nwrote {path}")


BenchOut = Annotated[Path, typer.Option(help="Directory for the JSON report.")]


@command(bench_app, "preprocess")
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
    from nmt.bench.preprocess import bench_preprocess as run

    sizes = ints(pairs, "--pairs")
    rows = run(corpus, sizes, set_ or [])
    _report(out, "preprocess", rows, {"corpus": str(corpus), "set": set_ or []})


@command(bench_app, "batching")
def bench_batching(
    data: Annotated[Path, typer.Option(help="Preprocessed directory (nmt preprocess --out).")],
    caps: Annotated[str, typer.Option(help="Comma-separated token caps.")] = "1500,3000,6000",
    pools: Annotated[str, typer.Option(help="Comma-separated pool sizes.")] = "10000,100000",
    out: BenchOut = Path("bench-out"),
) -> None:
    """Padding share of the token-bucketed batch sampler on a preprocessed corpus."""
    from nmt.bench.batching import bench_batching as run

    rows = run(data, ints(caps, "--caps"), ints(pools, "--pools"))
    _report(out, "batching", rows, {"data": str(data)})


@command(bench_app, "train")
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
    from nmt.bench.train import bench_train as run

    dims = ints(sizes.replace("x", ","), "--sizes")
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
    rows = run(data, runs, steps, warmup, device, set_ or [])
    settings = {"data": str(data), "steps": steps, "warmup": warmup, "set": set_ or []}
    _report(out, "train", rows, settings)


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


@command(bench_app, "distributed")
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
    from nmt.bench.distributed import bench_distributed as run

    counts = ints(processes, "--processes")
    rows = run(data, config, counts, steps, device, set_ or [])
    settings = {"data": str(data), "config": str(config), "steps": steps, "set": set_ or []}
    _report(out, "distributed", rows, settings)


@command(bench_app, "serve")
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
    precision: Annotated[str, typer.Option(help="fp32, bf16, fp16, int8 or auto.")] = "auto",
    shortlist: Annotated[
        bool,
        typer.Option("--shortlist/--no-shortlist", help="Decode with the lexical shortlist."),
    ] = False,
    max_wait_ms: Annotated[float, typer.Option(help="The server's serve.max_wait_ms.")] = default(
        "serve.max_wait_ms"
    ),
    out: BenchOut = Path("bench-out"),
) -> None:
    """Server sentences/s and p50/p95/p99 latency per concurrent client count, against
    translating the same sentences as a file and one at a time (same run)."""
    need_serve_extra("nmt bench serve")
    from nmt.bench.serve import bench_serve as run_bench

    counts = ints(clients, "--clients")
    rows = run_bench(
        checkpoint,
        input,
        lines,
        counts,
        ints(workers, "--workers"),
        beam,
        seconds,
        precision,
        max_wait_ms,
        shortlist,
    )
    settings = {
        "checkpoint": str(checkpoint),
        "input": str(input),
        "lines": lines,
        "beam": beam,
        "max_wait_ms": max_wait_ms,
        "precision": precision,
        "shortlist": shortlist,
    }
    _report(out, "serve", rows, settings)


@command(bench_app, "translate")
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
    precision: Annotated[
        str,
        typer.Option(
            help="Comma-separated: fp32, bf16, fp16, int8 (a CPU's int8 products) or auto; "
            "each a setting measured side by side."
        ),
    ] = "auto",
    shortlist: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated: off (the full softmax), on (the checkpoint's lexical "
            "shortlist). Default: both where the checkpoint has one, measured side by side."
        ),
    ] = None,
    compile: Annotated[
        str,
        typer.Option(
            help="Comma-separated: off, on (the search's step compiled, as `nmt translate "
            "--compile`); each a setting measured side by side."
        ),
    ] = "off",
    reference: Annotated[
        Path | None,
        typer.Option("--reference", "-r", help="Reference of --input: a BLEU column per row."),
    ] = None,
    out: BenchOut = Path("bench-out"),
) -> None:
    """Translation sentences/s and tokens/s, batched at several sizes and one at a time, per
    search setting; with --reference, the BLEU each setting bought its speed with."""
    from nmt.bench.translate import bench_translate as run

    rows = run(
        checkpoint,
        input,
        lines,
        ints(beams, "--beams"),
        ints(batch_tokens, "--batch-tokens"),
        device,
        [p.strip() for p in precision.split(",")],
        None if shortlist is None else on_off(shortlist, "--shortlist"),
        reference,
        on_off(compile, "--compile"),
    )
    settings = {"checkpoint": str(checkpoint), "input": str(input), "lines": lines}
    settings |= {"reference": str(reference)} if reference else {}
    _report(out, "translate", rows, settings)


def on_off(text: str, flag: str) -> list[bool]:
    """A comma-separated list of on/off settings, e.g. `--shortlist off,on`."""
    words = [w.strip() for w in text.split(",")]
    if not words or any(w not in ("on", "off") for w in words):
        raise NmtError(f"expected on and off separated by commas, got {text!r}", flag)
    return [w == "on" for w in words]
