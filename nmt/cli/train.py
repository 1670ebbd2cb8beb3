"""`nmt train`: train a model into a run directory (`nmt.train`), alone or under torchrun."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from nmt.cli.app import (
    DeviceOpt,
    SetOpt,
    app,
    command,
)
from nmt.config import load_config


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


@command(app)
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
