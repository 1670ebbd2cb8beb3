"""Starting a real `nmt serve` process on a free loopback port, for the server's tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from nmt.serve.server import announced_url


class Server:
    """A running server: its process, base URL and a client."""

    def __init__(self, proc: subprocess.Popen, url: str, log: list[str]):
        self.proc, self.url, self.log = proc, url, log
        self.client = httpx.Client(base_url=url, timeout=120)

    def post(self, body: object, **kwargs) -> httpx.Response:
        return self.client.post("/v1/translate", json=body, **kwargs)

    def metric(self, name: str) -> float:
        """The value of one unlabelled series of /metrics."""
        return series(self.client.get("/metrics").text, name)

    def wait_for(self, name: str, at_least: float, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.metric(name) < at_least:
            assert time.monotonic() < deadline, (name, at_least, self.metric(name))
            time.sleep(0.01)


def series(text: str, name: str) -> float:
    """The value of one unlabelled series in a Prometheus text exposition."""
    values = [float(line.split()[1]) for line in text.splitlines() if line.split()[:1] == [name]]
    assert len(values) == 1, (name, text)
    return values[0]


def start_server(
    checkpoint: Path, *args: str, timeout: float = 60, env: dict[str, str] | None = None
) -> Server:
    """`nmt serve CHECKPOINT --port 0 ARGS` (fp32: exact against the Translator), once it
    listens; `env` adds to this process's environment."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "nmt", "serve", str(checkpoint), "--port", "0",
         "--precision", "fp32", *args],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    log: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            raise AssertionError(f"the server exited: {''.join(log)}")
        log.append(line)
        if url := announced_url(line):
            # keep reading its log, so that a full pipe never blocks the server
            threading.Thread(target=lambda: log.extend(proc.stderr), daemon=True).start()
            return Server(proc, url, log)
    proc.kill()
    raise AssertionError(f"the server did not start: {''.join(log)}")


@contextlib.contextmanager
def running(checkpoint: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[Server]:
    server = start_server(checkpoint, *args, env=env)
    try:
        yield server
    finally:
        server.client.close()
        if server.proc.poll() is None:
            server.proc.send_signal(signal.SIGTERM)
            try:
                server.proc.wait(60)
            except subprocess.TimeoutExpired:
                server.proc.kill()
