"""`nmt evaluate`: BLEU, chrF and TER of translations against references (`nmt.evaluate`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from nmt.cli.app import (
    app,
    command,
)


@command(app)
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
    from nmt.evaluate import bleu_gate, file_metrics

    names = [m.strip() for m in metrics.split(",") if m.strip()]
    scores = file_metrics(hyp, refs, list(dict.fromkeys(names)))  # each once
    failure = bleu_gate(scores, min_bleu) if min_bleu is not None else None
    if as_json:
        typer.echo(json.dumps([s.as_dict() for s in scores], indent=2))
    else:
        for s in scores:
            typer.echo(f"{s.text}\n  signature: {s.signature}")
    if failure:
        typer.echo(f"FAILED: {failure}", err=True)
        raise typer.Exit(1)
