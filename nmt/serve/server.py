"""`nmt serve`: load the model, bind the port, and run uvicorn in one process or several.

The model is loaded (and the API key read) before the port is bound, so a broken checkpoint
is an error at start-up, not on the first request. In each server process the decoder runs on
the main thread and uvicorn on another (see `Scheduler.run` for why). With `serve.workers` > 1,
this process binds that many sockets on the port (`bind`) and starts a worker process on each,
with its own copy of the model, passes them its signals and replaces one that dies; /metrics
sums over them (`prometheus`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
import uvicorn
from prometheus_client.multiprocess import mark_process_dead

from nmt.config import ServeConfig, apply_overrides
from nmt.errors import NmtError
from nmt.serve.app import create_app
from nmt.serve.prometheus import MULTIPROC_ENV
from nmt.translate import Translator

ENV = "NMT_SERVE_SETTINGS"
ANNOUNCED = re.compile(r"^serving .* at (http://\S+:(\d+))/ ")  # the line `serve` prints
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
BACKLOG = 2048  # connections a socket holds before they are accepted (uvicorn's default)


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
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise NmtError(
            f"cannot read the API key file: {reason}", path,
            "name a readable UTF-8 file whose first line is the key (--api-key-file)",
        ) from None  # fmt: skip
    key = lines[0].strip() if lines else ""
    if len(key) < 16:
        raise NmtError(
            "the API key must be at least 16 characters, on the file's first line",
            path,
            "write one, e.g. `python -c 'import secrets; print(secrets.token_urlsafe())' > FILE`",
        )
    return key


def announced_url(line: str) -> str | None:
    """The server's base URL, if `line` of its stderr is the start-up announcement (the
    socket is listening once it is printed)."""
    match = ANNOUNCED.match(line)
    return match.group(1) if match else None


def bind(host: str, port: int, count: int = 1) -> list[socket.socket]:
    """`count` listening sockets on one port, one per server process; a port in use or an
    address not of this machine is an error.

    Several are bound with SO_REUSEPORT, so the kernel spreads new connections over them by
    their addresses. Workers sharing one socket instead take connections as they wake: an idle
    one accepted a whole burst (8 clients, all on one of 2 workers, in `nmt bench serve`), and
    keep-alive connections stay where they land. A plain socket is bound first and closed:
    a second server started on the port is refused as before, where with SO_REUSEPORT alone
    it would join the group and take a share of the connections."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if count == 1:
        return [_listening(family, host, port, reuse_port=False)]
    if not hasattr(socket, "SO_REUSEPORT"):
        raise NmtError(
            "serve.workers > 1 needs SO_REUSEPORT, which this system lacks", "--workers",
            "run one worker (--workers 1), or several servers behind a proxy",
        )  # fmt: skip
    with _listening(family, host, port, reuse_port=False) as probe:
        port = probe.getsockname()[1]  # the free one, for port 0
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            socks.append(_listening(family, host, port, reuse_port=True))
    except NmtError:
        for sock in socks:
            sock.close()
        raise
    return socks


def _listening(family: int, host: str, port: int, reuse_port: bool) -> socket.socket:
    sock = _bound(family, host, port, reuse_port)
    sock.listen(BACKLOG)
    return sock


def _bound(family: int, host: str, port: int, reuse_port: bool) -> socket.socket:
    """A socket bound to the address, not yet listening: the kernel hands a port's
    connections only to its listening sockets, and uvicorn (asyncio) makes it one when its
    server starts, after the model has loaded."""
    # IPPROTO_TCP named, not 0: asyncio sets TCP_NODELAY only on sockets that say TCP, and
    # without it each answer waited ~40 ms for a delayed ACK (Nagle) on keep-alive connections
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise NmtError(
            f"cannot listen on {host}:{port}: {exc.strerror}", *_bind_advice(exc)
        ) from None
    return sock


def _bind_advice(exc: OSError) -> tuple[str, str]:
    """Which option to change, and how, for a failed bind: a port in use is the port's fault;
    a name that does not resolve, or an address of another machine, is the host's."""
    if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
        return "--host", "give an address of this machine (127.0.0.1, 0.0.0.0 for all, or ::)"
    if exc.errno == errno.EACCES:
        return "--port", "use a port above 1023 (ports below need root)"
    return "--port", "choose another port (or stop the process that holds it)"


def serve(settings: ServeSettings, access_log: bool = False) -> None:
    """Run until SIGTERM or Ctrl-C, then drain the requests in flight and return."""
    cfg = settings.cfg
    translator = load_translator(settings)  # errors come now, before the port is bound
    key = read_api_key(settings.api_key_file)
    socks = bind(cfg.host, cfg.port, cfg.workers)
    host, port = socks[0].getsockname()[:2]
    where = f"[{host}]" if ":" in host else host
    print(
        f"serving {', '.join(settings.checkpoints)} at http://{where}:{port}/ "
        f"({cfg.workers} process{'es' if cfg.workers > 1 else ''}; API: POST /v1/translate, "
        "docs: /docs); Ctrl-C stops",
        file=sys.stderr,
        flush=True,
    )
    if cfg.workers == 1:
        serve_on(socks[0], translator, cfg, key, access_log)
    else:
        del translator  # each worker loads its own
        _supervise(socks, settings, access_log)


def serve_on(
    sock: socket.socket, translator: Translator, cfg: ServeConfig, key: str | None, log: bool
) -> None:
    """One server process: uvicorn on a thread of its own, the decoder on this (main) thread;
    SIGTERM or Ctrl-C stops accepting, the requests in flight are answered, then it returns.
    What is still being decoded when `serve.drain_seconds` is nearly up is dropped and answered
    with a JSON 503, so that the process exits within about that time."""
    app, scheduler = create_app(translator, cfg, key)
    config = uvicorn.Config(
        app,
        timeout_graceful_shutdown=max(1, round(cfg.drain_seconds)),
        access_log=log,
        log_level="info",
    )
    server = uvicorn.Server(config)

    def http() -> None:
        try:
            server.run(sockets=[sock])
        finally:
            scheduler.close()  # also when uvicorn could not start

    def stop(signum: int, frame: object) -> None:
        if not app.state.draining:  # the drain ends early enough for its 503s to go out
            deadline = cfg.drain_seconds - min(1.0, 0.2 * cfg.drain_seconds)
            timer = threading.Timer(deadline, scheduler.abandon)
            timer.daemon = True  # a drain that ends sooner does not wait for it
            timer.start()
        app.state.draining = True
        server.force_exit = server.should_exit  # a second Ctrl-C: now
        server.should_exit = True

    thread = threading.Thread(target=http, name="nmt-http")
    with _handlers(stop):
        thread.start()
        scheduler.run()
        thread.join()
    if not server.started:
        raise NmtError("the server did not start (see the log above)", str(sock.getsockname()))


def _supervise(socks: list[socket.socket], settings: ServeSettings, access_log: bool) -> None:
    """A worker process on each of `socks` (sockets on one port, see `bind`), until a signal
    has stopped them all. They keep their metrics in one fresh directory, so that each answers
    /metrics for all."""
    with tempfile.TemporaryDirectory(prefix="nmt-serve-metrics-") as metrics:
        env = {**os.environ, ENV: json.dumps(dataclasses.asdict(settings)), MULTIPROC_ENV: metrics}
        command = [sys.executable, "-m", "nmt.serve.server"]
        supervisor = _Supervisor(socks, command + (["--access-log"] if access_log else []), env)
        with _handlers(supervisor.forward):
            codes = supervisor.run(metrics)
    if any(codes) or supervisor.given_up:
        raise NmtError(f"a server process failed (exit codes {codes})", "nmt serve")


class _Supervisor:
    """The workers of one port. Signals are passed on to them. A worker that dies while no
    signal was given (killed, out of memory) takes its socket with it, and the others serve its
    share until a fresh worker on a fresh socket replaces it, as gunicorn replaces its workers.
    A place whose workers keep dying (RESTARTS starts within RESTART_WINDOW seconds) is given
    up, and the server's exit status says so when it stops."""

    RESTARTS, RESTART_WINDOW = 3, 60.0

    def __init__(self, socks: list[socket.socket], command: list[str], env: dict[str, str]):
        self.command, self.env = command, env
        self.family, self.address = socks[0].family, socks[0].getsockname()[:2]
        self.workers = [self._start(sock) for sock in socks]
        self.starts = [[time.monotonic()] for _ in socks]
        self.signal: int | None = None  # the stop signal, once given
        self.given_up: list[int] = []  # places not restarted

    def _start(self, sock: socket.socket) -> subprocess.Popen:
        """A worker on `sock`, in a session of its own (a Ctrl-C reaches it once, from here);
        the socket is then the worker's alone: open here, a dead worker's socket would still
        be handed connections that nobody accepts."""
        with sock:
            return subprocess.Popen(
                [*self.command, str(sock.fileno())],
                env=self.env,
                pass_fds=[sock.fileno()],
                start_new_session=True,
            )

    def forward(self, signum: int, frame: object) -> None:
        self.signal = signum
        for worker in self.workers:
            worker.send_signal(signum)

    def run(self, metrics: str) -> list[int]:
        """The last workers' exit codes, once all have exited. Each that exits leaves the
        metrics' live gauges at once (`nmt_workers` counts one fewer until its replacement
        has loaded the model)."""
        live = set(range(len(self.workers)))
        while live:
            for place in sorted(live):
                if self.workers[place].poll() is not None:
                    mark_process_dead(self.workers[place].pid, metrics)
                    if self.signal is not None or not self._restart(place):
                        live.discard(place)
            time.sleep(0.1)
        return [worker.returncode for worker in self.workers]

    def _restart(self, place: int) -> bool:
        """A fresh worker in the dead one's place, unless the place's workers keep dying."""
        dead, now = self.workers[place], time.monotonic()
        self.starts[place] = [t for t in self.starts[place] if now - t < self.RESTART_WINDOW]
        what = f"nmt serve: worker {place + 1} (pid {dead.pid}) {_exit_reason(dead.returncode)}"
        if len(self.starts[place]) >= self.RESTARTS:
            why = f"{self.RESTARTS} started in its place within {self.RESTART_WINDOW:.0f} s"
            return self._give_up(place, f"{what}; {why}, so no more")
        try:
            # listening once the worker has loaded the model: until then the others take all
            sock = _bound(self.family, *self.address, reuse_port=True)
        except NmtError as err:  # all workers dead, and the port taken since
            return self._give_up(place, f"{what}; cannot start another: {err}")
        print(f"{what}; starting another", file=sys.stderr, flush=True)
        self.workers[place] = self._start(sock)
        self.starts[place].append(now)
        if self.signal is not None:  # given while it started
            self.workers[place].send_signal(self.signal)
        return True

    def _give_up(self, place: int, why: str) -> bool:
        self.given_up.append(place)
        print(f"{why}: the others serve on without it", file=sys.stderr, flush=True)
        return False


def _exit_reason(code: int) -> str:
    return f"was killed ({signal.Signals(-code).name})" if code < 0 else f"exited with {code}"


@contextlib.contextmanager
def _handlers(handler: Callable[[int, object], None]) -> Iterator[None]:
    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _worker(fd: int, access_log: bool) -> None:
    """One of `serve.workers` processes: the settings from the environment, its socket
    inherited from the supervisor."""
    for sig in STOP_SIGNALS:  # told to stop while starting: nothing is in flight yet
        signal.signal(sig, lambda signum, frame: sys.exit(0))
    settings = ServeSettings(**json.loads(os.environ[ENV]))
    sock = socket.socket(fileno=fd)
    key = read_api_key(settings.api_key_file)
    supervisor = os.getppid()

    def orphaned() -> None:  # the supervisor was killed: stop as if told to
        while os.getppid() == supervisor:
            time.sleep(1)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=orphaned, daemon=True).start()
    # each worker's share of the cores, before the runtime counts them (`threads.core_share`):
    # N workers that each took every core would spin-wait on each other at every operation
    torch.set_num_threads(max(1, torch.get_num_threads() // settings.cfg.workers))
    serve_on(sock, load_translator(settings), settings.cfg, key, access_log)


if __name__ == "__main__":
    try:
        _worker(int(sys.argv[1]), "--access-log" in sys.argv)
    except NmtError as err:  # e.g. the checkpoint gone when a worker is replaced
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
