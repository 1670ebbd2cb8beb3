"""The Typer app, its error boundary and the options several commands share.

Every command runs inside one error boundary (`command`): a user error (`NmtError`) or a fault
of the machine (a read-only or full disk, a missing permission: `OSError`; memory run out) is
printed as one `error:` line naming the file, without a traceback, and exits with code 2.
Option defaults shown in `--help` come from `nmt.config` (None in a signature means "the
config's value"). Commands import the library inside their bodies, so `nmt --help` loads no
torch.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from nmt import __version__
from nmt.config import Config, default, load_config, set_value
from nmt.errors import NmtError
from nmt.fileio import os_error

app = typer.Typer(
    help="Neural machine translation with GRU encoder-decoders "
    "(Cho et al. 2014; Bahdanau et al. 2015).\n\n"
    "Typical run: nmt preprocess → nmt train → nmt translate → nmt evaluate.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


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


def shown(key: str) -> str:
    """The default of a config key, for `show_default`."""
    value = default(key)
    return str(value).lower() if isinstance(value, bool) else str(value)


AlphaOpt = Annotated[
    float | None,
    typer.Option(
        help="Length penalty exponent (--penalty wu).", show_default=shown("decode.alpha")
    ),
]


PenaltyOpt = Annotated[
    str | None,
    typer.Option(help="wu, length or none.", show_default=shown("decode.length_penalty")),
]


ErrorsOpt = Annotated[
    str, typer.Option(help="Invalid UTF-8 in the input: strict (stop with an error) or replace.")
]


DeviceOpt = Annotated[str, typer.Option(help="auto (CUDA if present), cpu, cuda, cuda:N.")]


PrecisionOpt = Annotated[
    str,
    typer.Option(
        help="fp32, bf16, fp16 (GPU only), int8 (translating on a CPU: int8 products in the "
        "decoder step and the output layer, the rest as auto), or auto: bf16 on GPUs that "
        "have it (else fp16) and on CPUs with native bf16, else fp32."
    ),
]


CompileOpt = Annotated[
    bool,
    typer.Option(
        "--compile",
        help="Compile the search's step with torch.compile (inductor; needs a C++ compiler, "
        "else a warning and no compiling): a one-off 25 s or so on one core, about 6 s once "
        "cached, then 1.05-1.08x faster batched and up to 1.16x one line at a time (beam 5, "
        "the Bible models in int8; docs/performance.md). For long files; the outputs are "
        "those without it, up to rounding.",
    ),
]


ShortlistOpt = Annotated[
    bool | None,
    typer.Option(
        "--shortlist/--no-shortlist",
        help="Score only each line's lexical shortlist in the output layer (its source "
        "subwords' likely translations, the frequent target subwords, its placeholders and "
        "prefix), where the checkpoint has one: 1.2-1.3x faster at beam 5, 0.0-0.45 BLEU "
        "lower (docs/performance.md). Default: decode.shortlist (off); --no-shortlist scores "
        "the whole vocabulary.",
        show_default=False,
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


def command(group: typer.Typer, name: str | None = None) -> Callable[[Callable], Callable]:
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
            except RuntimeError as exc:  # out of GPU or host memory: what to lower
                from nmt.device import memory_error  # here: `nmt --help` loads no torch

                err = memory_error(exc)
                if err is None:
                    raise
                raise _fail(err) from None

        group.command(name)(run)
        return fn

    return register


def ints(text: str, flag: str) -> list[int]:
    """A comma-separated list of positive integers, e.g. `--pairs 1000,10000`."""
    try:
        values = [int(x) for x in text.split(",")]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise NmtError(f"expected positive integers separated by commas, got {text!r}", flag)
    return values


def config_with(
    path: Path | None, overrides: list[str] | None, **options: tuple[str, object]
) -> Config:
    """Load the config, apply --set, then the command's own options (named in errors as --opt)."""
    cfg = load_config(path, overrides or [])
    for flag, (key, value) in options.items():
        if value is not None:
            set_value(cfg, key, value, f"--{flag.replace('_', '-')}")
    return cfg


def terminate(signum: int, frame: object) -> None:
    """SIGTERM unwinds like Ctrl-C, so that no half-written output is left behind (`nmt train`
    installs its own handler: it saves a checkpoint first)."""
    raise SystemExit(128 + signum)
