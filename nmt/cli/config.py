"""`nmt config`: the resolved configuration, or the reference of every key (`nmt.config`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nmt.cli.app import (
    SetOpt,
    app,
    command,
)
from nmt.config import dump_config, load_config, reference_markdown


@command(app)
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
