"""`nmt serve`: load the model, bind the port, and run uvicorn in one process or several.

The model is loaded (and the API key read) before the port is bound, so a broken checkpoint
is an error at start-up, not on the first request. With `serve.workers` > 1, uvicorn's
supervisor starts that many processes on the one listening socket; each builds its own app
from the settings passed in the environment (`app_from_environment`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from nmt.config import ServeConfig, apply_overrides
from nmt.errors import NmtError
from nmt.serve.app import create_app
from nmt.translate import Translator

ENV = "NMT_SERVE_SETTINGS"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass
class ServeSettings:
    """Everything a server process needs to build its app (JSON-serialisable)."""

    checkpoints: list[str]
    serve: dict = field(default_factory=lambda: dataclasses.asdict(ServeConfig()))
    decode: list[str] = field(default_factory=list)  # decode.* overrides, e.g. beam_size=4
    device: str | None = None
    precision: str = "auto"
    api_key_file: str | None = None

    @property
    def cfg(self) -> ServeConfig:
        return ServeConfig(**self.serve)


def load_translator(settings: ServeSettings) -> Translator:
    translator = Translator.from_checkpoint(
        settings.checkpoints, settings.device, settings.precision
    )
    translator.cfg = apply_overrides(translator.cfg, settings.decode)
    return translator


def read_api_key(path: str | None) -> str | None:
    """The key in `path` (its first line), or None without a file."""
    if path is None:
        return None
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise NmtError(f"cannot read the API key file: {exc}", path) from None
    key = lines[0].strip() if lines else ""
    if len(key) < 16:
        raise NmtError(
            "the API key must be at least 16 characters, on the file's first line",
            path,
            "write one, e.g. `python -c 'import secrets; print(secrets.token_urlsafe())' > FILE`",
        )
    return key


def build_app(settings: ServeSettings) -> FastAPI:
    return create_app(load_translator(settings), settings.cfg, read_api_key(settings.api_key_file))


def app_from_environment() -> FastAPI:
    """uvicorn's app factory in each worker process."""
    return build_app(ServeSettings(**json.loads(os.environ[ENV])))


def bind(host: str, port: int) -> socket.socket:
    """The listening socket; a port in use or an address not of this machine is an error."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise NmtError(
            f"cannot listen on {host}:{port}: {exc.strerror}",
            "--host/--port",
            "choose another port (or stop the process that holds it)",
        ) from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve(settings: ServeSettings, access_log: bool = False) -> None:
    """Run until SIGTERM or Ctrl-C, then drain the requests in flight and return."""
    cfg = settings.cfg
    app: FastAPI | str
    if cfg.workers == 1:
        app = build_app(settings)
    else:  # each worker loads its own copy; load one here so that errors come now
        load_translator(settings)
        read_api_key(settings.api_key_file)
        os.environ[ENV] = json.dumps(dataclasses.asdict(settings))
        app = "nmt.serve.server:app_from_environment"
    sock = bind(cfg.host, cfg.port)
    host, port = sock.getsockname()[:2]
    where = f"[{host}]" if ":" in host else host
    print(
        f"serving {', '.join(settings.checkpoints)} at http://{where}:{port}/ "
        f"({cfg.workers} process{'es' if cfg.workers > 1 else ''}; API: POST /v1/translate, "
        "docs: /docs); Ctrl-C stops",
        file=sys.stderr,
        flush=True,
    )
    config = uvicorn.Config(
        app,
        factory=cfg.workers > 1,
        workers=cfg.workers,
        timeout_graceful_shutdown=max(1, round(cfg.drain_seconds)),
        access_log=access_log,
        log_level="info",
    )
    with _stop_signals_end_cleanly():
        if cfg.workers == 1:
            server = uvicorn.Server(config)
            server.run(sockets=[sock])
            if not server.started:
                raise NmtError("the server did not start (see the log above)", f"{host}:{port}")
        else:
            uvicorn.supervisors.Multiprocess(config, sockets=[sock]).run()


@contextlib.contextmanager
def _stop_signals_end_cleanly() -> Iterator[None]:
    """uvicorn drains on SIGTERM/SIGINT, then raises the signal again for the handler it found:
    a drained server has stopped as asked, so that handler does nothing (exit status 0)."""
    previous = {sig: signal.signal(sig, lambda signum, frame: None) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
