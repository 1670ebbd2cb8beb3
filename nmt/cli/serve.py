"""`nmt serve`: a model behind an HTTP API (`nmt.serve`, the `nmt[serve]` extra)."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path
from typing import Annotated

import typer

from nmt.cli.app import (
    ConfigOpt,
    DeviceOpt,
    PrecisionOpt,
    SetOpt,
    ShortlistOpt,
    app,
    command,
    config_with,
    shown,
)
from nmt.errors import NmtError

SERVE_EXTRA = ("fastapi", "uvicorn", "prometheus_client")


@command(app)
def serve(
    checkpoints: Annotated[
        list[Path], typer.Argument(help="Checkpoint(s); several decode as an ensemble.")
    ],
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    host: Annotated[
        str | None, typer.Option(help="Address to listen on.", show_default=shown("serve.host"))
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port (0: any free one).", show_default=shown("serve.port"))
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(help="Server processes on the port.", show_default=shown("serve.workers")),
    ] = None,
    beam: Annotated[
        int | None,
        typer.Option(min=1, help="Default beam width.", show_default=shown("decode.beam_size")),
    ] = None,
    max_batch_tokens: Annotated[
        int | None,
        typer.Option(
            help="Most source subwords x beam per decoded batch (0: decode.batch_tokens).",
            show_default=shown("serve.max_batch_tokens"),
        ),
    ] = None,
    max_wait_ms: Annotated[
        float | None,
        typer.Option(
            help="How long a batch may wait for the clients just answered.",
            show_default=shown("serve.max_wait_ms"),
        ),
    ] = None,
    max_queue: Annotated[
        int | None,
        typer.Option(
            help="Most sentences queued; beyond, 503 + Retry-After.",
            show_default=shown("serve.max_queue"),
        ),
    ] = None,
    api_key_file: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            help="Require `Authorization: Bearer <key>` (the file's first line) on every "
            "route but /health.",
        ),
    ] = None,
    access_log: Annotated[bool, typer.Option("--access-log", help="Log every request.")] = False,
    shortlist: ShortlistOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
) -> None:
    """Serve a trained model over HTTP: a JSON API, a page to try it at /, and metrics.

    POST /v1/translate with {"text": "..."} or {"texts": [...]}; the sentences of concurrent
    requests are decoded in shared batches by the search `nmt translate` uses, so the answers
    are the same. GET /health, /v1/model, /metrics; the OpenAPI schema at /docs. Listens on
    127.0.0.1 unless --host says otherwise; SIGTERM or Ctrl-C finishes the requests in flight,
    then exits. Limits (body size, sentences per request, characters per sentence, queue) are
    the serve.* config keys (docs/config.md). Needs the serve extra: pip install 'nmt[serve]'.
    """
    need_serve_extra("nmt serve")
    from nmt.serve.server import ServeSettings
    from nmt.serve.server import serve as run_server

    cfg = config_with(
        config,
        overrides,
        host=("serve.host", host),
        port=("serve.port", port),
        workers=("serve.workers", workers),
        max_batch_tokens=("serve.max_batch_tokens", max_batch_tokens),
        max_wait_ms=("serve.max_wait_ms", max_wait_ms),
        max_queue=("serve.max_queue", max_queue),
    )
    decode = [s for s in overrides or [] if s.strip().startswith("decode.")]
    if beam is not None:
        decode.append(f"decode.beam_size={beam}")
    if shortlist is not None:
        decode.append(f"decode.shortlist={str(shortlist).lower()}")
    settings = ServeSettings(
        checkpoints=[str(c) for c in checkpoints],
        serve=dataclasses.asdict(cfg.serve),
        decode=decode,
        device=device,
        precision=precision,
        api_key_file=None if api_key_file is None else str(api_key_file),
    )
    run_server(settings, access_log=access_log)


def need_serve_extra(command: str) -> None:
    """The server's packages are an extra (`nmt[serve]`): say so instead of an ImportError."""
    missing = [m for m in SERVE_EXTRA if importlib.util.find_spec(m) is None]
    if missing:
        raise NmtError(
            f"the server needs packages that are not installed: {', '.join(missing)}",
            command,
            "pip install 'nmt[serve]'",
        )
