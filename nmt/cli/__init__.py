"""The `nmt` command line: options in, Python API calls, results and errors out.

This is the only package that knows about the terminal, and no other package imports it.
`app` holds the Typer app, the error boundary and the shared options; each command is a module
of its own (registered in pipeline order, the order `nmt --help` lists them), a thin layer over
the Python API: it reads options, calls the API, and prints.
"""

from __future__ import annotations

import importlib
import signal
import sys

import typer

from nmt.cli.app import app, terminate
from nmt.errors import NmtError

__all__ = ["app", "main"]
# Click's exceptions, from the Click that Typer runs on (recent Typers ship their own copy)
CLICK = importlib.import_module(typer.BadParameter.__module__)
# `nmt` alone shows the help through this exception from Click 8.2 on (before, Click shows it)
NO_ARGS = getattr(CLICK, "NoArgsIsHelpError", ())

# importing a command's module registers it; `nmt --help` lists them in this order
COMMANDS = (
    "preprocess",
    "train",
    "average",
    "shortlist",
    "translate",
    "score",
    "evaluate",
    "serve",
    "config",
)
for _name in (*COMMANDS, "bench"):
    importlib.import_module(f"nmt.cli.{_name}")


def main() -> None:
    """Console-script entry point. An option Click itself refuses (a value out of range, an
    unknown option) is reported as every other user error is: `error:`, `fix:`, exit code 2."""
    signal.signal(signal.SIGTERM, terminate)
    try:
        code = app(prog_name="nmt", standalone_mode=False)
    except NO_ARGS as exc:  # `nmt` or `nmt bench` alone: the help
        exc.show()
        code = exc.exit_code
    except CLICK.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx else "nmt"
        err = NmtError(exc.format_message(), None, f"see `{where} --help`")
        typer.echo(f"error: {err}", err=True)
        code = 2
    except typer.Abort:  # Ctrl-C outside a command's own handling, as Click reports it
        typer.echo("Aborted!", err=True)
        code = 1
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    sys.exit(main())
