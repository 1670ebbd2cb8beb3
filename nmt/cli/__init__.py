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

from nmt.cli.app import app, terminate

__all__ = ["app", "main"]

# importing a command's module registers it; `nmt --help` lists them in this order
COMMANDS = ("preprocess", "train", "average", "translate", "score", "evaluate", "serve", "config")
for _name in (*COMMANDS, "bench"):
    importlib.import_module(f"nmt.cli.{_name}")


def main() -> None:
    """Console-script entry point."""
    signal.signal(signal.SIGTERM, terminate)
    app(prog_name="nmt")


if __name__ == "__main__":
    sys.exit(main())
