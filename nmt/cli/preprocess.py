"""`nmt preprocess`: a parallel corpus in, a training-ready directory out (`nmt.preprocess`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nmt.cli.app import (
    ConfigOpt,
    SetOpt,
    app,
    command,
    config_with,
    shown,
)


@command(app)
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
        typer.Option(help="SentencePiece vocabulary size.", show_default=shown("data.vocab_size")),
    ] = None,
    joint: Annotated[
        bool | None,
        typer.Option(
            "--joint/--separate",
            help="One subword model for both languages, or one per side.",
            show_default=shown("data.joint"),
        ),
    ] = None,
    format: Annotated[
        str | None, typer.Option(help="auto, tsv, text or hf.", show_default=shown("data.format"))
    ] = None,
    dedup: Annotated[
        bool | None,
        typer.Option(
            "--dedup/--no-dedup",
            help="Drop exact duplicate training pairs.",
            show_default=shown("data.dedup"),
        ),
    ] = None,
    protect: Annotated[
        str | None,
        typer.Option(
            metavar="PATTERNS",
            help="Protected spans (placeholders, tags, URLs) that translation keeps whole: "
            "comma-separated printf, brace, shell, xml, url, email, or all.",
            show_default=shown("data.protect"),
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

    cfg = config_with(
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
