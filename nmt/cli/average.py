"""`nmt average`: one checkpoint holding the mean weights of several (`nmt.model.checkpoint`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nmt.cli.app import (
    app,
    command,
)
from nmt.fileio import refuse_input_as_output


@command(app)
def average(
    checkpoints: Annotated[list[Path], typer.Argument(help="Checkpoints of one run (.pt).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The averaged checkpoint to write.")],
) -> None:
    """Average the weights of several checkpoints (e.g. RUN_DIR/step-*.pt) into one."""
    from nmt.model.checkpoint import average_checkpoints

    refuse_input_as_output(out, checkpoints)
    average_checkpoints(checkpoints, out)
    typer.echo(f"wrote {out}: the average of {len(checkpoints)} checkpoints")
