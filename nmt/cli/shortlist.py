"""`nmt shortlist`: a checkpoint with a lexical shortlist added (`nmt.model.checkpoint`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nmt.cli.app import app, command
from nmt.fileio import refuse_input_as_output


@command(app)
def shortlist(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint (.pt).")],
    data: Annotated[
        Path, typer.Option("--data", "-d", help="The preprocessed directory it was trained on.")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="The checkpoint to write.")],
) -> None:
    """Add a lexical shortlist to a checkpoint trained before `nmt train` built one: the same
    checkpoint, written to --out, whose translations score each line's likely target subwords
    alone (`nmt translate --no-shortlist` turns it off)."""
    from nmt.model.checkpoint import add_shortlist

    refuse_input_as_output(out, [checkpoint])
    written = add_shortlist(checkpoint, data, out)
    table = written["vocab"]["shortlist"]["table"]
    typer.echo(f"wrote {out}: {checkpoint} with a shortlist of {table.shape[1]} target subwords "
               f"per source subword")  # fmt: skip
