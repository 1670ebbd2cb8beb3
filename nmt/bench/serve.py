"""`nmt bench serve`: a real server under N concurrent clients, beside `nmt translate`'s rates.

In one run: the same sentences translated as a file (one `translate_nbest` call, as `nmt
translate` does; once before the server starts and once after it stops, as the machine's speed
drifts) and one at a time, in this process; then `nmt serve`
in a process of its own, and for each client count an asyncio load generator on 127.0.0.1 whose
clients each send one sentence per request, each waiting for its answer before sending the
next, until a number of requests (10 rounds of every client, at least the
input's lines) or a time limit is reached. The generator speaks minimal
HTTP/1.1 over keep-alive connections (a few microseconds per request, so the server has the
CPU), and reads the server's resident memory after each level. Before the server, the same
clients drive the server's scheduler and decoder in this process without HTTP: the ceiling of
the decoding itself, against which the server's HTTP costs show.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from nmt.bench.report import bench_sentences
from nmt.config import default
from nmt.errors import NmtError
from nmt.serve.server import announced_url


class Connection:
    """One keep-alive HTTP/1.1 connection that POSTs JSON and reads JSON answers."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        return cls(*await asyncio.open_connection(host, port))

    async def post(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        data = json.dumps(body).encode()
        head = f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        self.writer.write(f"{head}Content-Length: {len(data)}\r\n\r\n".encode() + data)
        status = int((await self.reader.readline()).split()[1])
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
        return status, json.loads(await self.reader.readexactly(length))

    def close(self) -> None:
        self.writer.close()


async def _load(
    host: str, port: int, lines: list[str], clients: int, requests: int, seconds: float, beam: int
) -> tuple[list[float], float, int]:
    """`clients` connections sending lines (cycled) one request each, until `requests` are
    answered or `seconds` pass; returns the latencies, the elapsed time and the errors."""
    latencies: list[float] = []
    errors = 0
    sent = 0
    start = time.perf_counter()
    deadline = start + seconds

    async def client() -> None:
        nonlocal sent, errors
        connection = await Connection.open(host, port)
        try:
            while sent < requests and time.perf_counter() < deadline:
                line = lines[sent % len(lines)]
                sent += 1
                t0 = time.perf_counter()
                status, _ = await connection.post("/v1/translate", {"text": line, "beam": beam})
                latencies.append(time.perf_counter() - t0)
                errors += status != 200
        finally:
            connection.close()

    await asyncio.gather(*(client() for _ in range(clients)))
    return latencies, time.perf_counter() - start, errors


def _without_http(
    translator: Any,
    lines: list[str],
    clients: int,
    requests: int,
    seconds: float,
    beam: int,
    max_wait_ms: float,
    shortlist: bool,
) -> tuple[list[float], float, float]:
    """The server's scheduler and decoder in this process, with no HTTP: `clients` asyncio
    clients on a thread of their own submit one line each and wait for its answer, while the
    decoder runs on the main thread, as in `nmt serve`. Returns the latencies, the elapsed
    time and the mean number of sentences per search step."""
    from nmt.serve.scheduler import Events, Scheduler

    steps: list[int] = []
    scheduler = Scheduler(
        translator, max_wait_ms, max(requests, 1), Events(step=lambda n, _, __: steps.append(n))
    )
    options = translator.decode_options(beam=beam, shortlist=shortlist)
    items = translator.prepare(lines)
    latencies: list[float] = []
    elapsed = 0.0

    async def load() -> None:
        nonlocal elapsed
        sent, start = 0, time.perf_counter()

        async def client() -> None:
            nonlocal sent
            while sent < requests and time.perf_counter() < start + seconds:
                item = items[sent % len(items)]
                sent += 1
                t0 = time.perf_counter()
                await scheduler.submit([item], options).future
                latencies.append(time.perf_counter() - t0)

        await asyncio.gather(*(client() for _ in range(clients)))
        elapsed = time.perf_counter() - start

    def clients_thread() -> None:
        try:
            asyncio.run(load())
        finally:
            scheduler.close()

    thread = threading.Thread(target=clients_thread)
    thread.start()
    scheduler.run()
    thread.join()
    return latencies, elapsed, sum(steps) / max(len(steps), 1)


def _percentile(values: list[float], q: int) -> float:
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def _rss_mib(pid: int) -> int:
    """Resident memory of a process and its children (the processes of --workers), in MiB."""
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    total = 0
    for p in pids:
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total // 1024


def _file_rate(translator: Any, lines: list[str], beam: int, shortlist: bool) -> float:
    """Sentences/s of the lines translated as a file."""
    start = time.perf_counter()
    translator.translate(lines, beam=beam, shortlist=shortlist)
    return len(lines) / (time.perf_counter() - start)


def _one_at_a_time_ms(
    translator: Any, lines: list[str], beam: int, shortlist: bool
) -> dict[int, float]:
    """The p50/p95/p99 time of each line translated alone, as the server's single client
    sends them."""
    alone = []
    for line in lines:
        t0 = time.perf_counter()
        translator.translate([line], beam=beam, shortlist=shortlist)
        alone.append(time.perf_counter() - t0)
    return {q: 1000 * _percentile(alone, q) for q in (50, 95, 99)}


def _steps(port: int) -> tuple[float, float]:
    """The sum of the server's running batch sizes over its search steps, and the number of
    steps so far (of all its workers)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    values = dict(
        line.split()[:2] for line in text.splitlines() if line.startswith("nmt_step_sentences_")
    )
    return float(values["nmt_step_sentences_sum"]), float(values["nmt_step_sentences_count"])


def _start_server(
    checkpoint: Path, workers: int, precision: str, max_wait_ms: float, shortlist: bool
) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "nmt", "serve", str(checkpoint), "--port", "0",
         "--workers", str(workers), "--precision", precision, "--max-queue", "100000",
         "--max-wait-ms", str(max_wait_ms), "--shortlist" if shortlist else "--no-shortlist"],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    for line in proc.stderr:
        if url := announced_url(line):
            threading.Thread(target=proc.stderr.read, daemon=True).start()  # never a full pipe
            return proc, int(url.rsplit(":", 1)[1])
    raise NmtError(f"the server did not start: {proc.wait()}", str(checkpoint))


def bench_serve(
    checkpoint: Path,
    input_path: Path,
    n_lines: int,
    clients: list[int],
    workers: list[int],
    beam: int,
    seconds: float,
    precision: str = "auto",
    max_wait_ms: float = default("serve.max_wait_ms"),
    shortlist: bool = False,
) -> list[dict[str, Any]]:
    """Rows: translate as a file, one sentence alone, the scheduler without HTTP at each
    client count, then each (workers, clients) level of a real server."""
    from nmt.translate import Translator

    lines = bench_sentences(input_path, n_lines)
    translator = Translator.from_checkpoint(checkpoint, None, precision)
    translator.translate(lines[:8], beam=beam)  # warm-up
    file_before = _file_rate(translator, lines, beam, shortlist)
    one_ms = _one_at_a_time_ms(translator, lines, beam, shortlist)
    levels: list[dict[str, Any]] = []

    def level(mode: str, c: int, latencies: list[float], elapsed: float, **more: Any) -> None:
        rate, p99 = len(latencies) / elapsed, 1000 * _percentile(latencies, 99)
        levels.append(
            {"mode": mode, "clients": c, "requests": len(latencies)}
            | more
            | {
                "sentences_per_s": round(rate, 1),
                "vs file": rate,  # divided by the file rate once it is known
                "p50_ms": round(1000 * _percentile(latencies, 50), 1),
                "p95_ms": round(1000 * _percentile(latencies, 95), 1),
                "p99_ms": round(p99, 1),
                "p99 vs one alone": f"{p99 / one_ms[99]:.2f}x",
            }
        )

    for c in clients:
        requests = max(len(lines), 10 * c)
        latencies, elapsed, per_step = _without_http(
            translator, lines, c, requests, seconds, beam, max_wait_ms, shortlist
        )
        level("scheduler alone, no HTTP", c, latencies, elapsed, errors=0)
        levels[-1]["sentences_per_step"] = round(per_step, 1)
    for count in workers:
        proc, port = _start_server(checkpoint, count, precision, max_wait_ms, shortlist)
        try:
            asyncio.run(_load("127.0.0.1", port, lines, 4, 16, seconds, beam))  # warm-up
            for c in clients:
                before = _steps(port)
                latencies, elapsed, errors = asyncio.run(
                    _load("127.0.0.1", port, lines, c, max(len(lines), 10 * c), seconds, beam)
                )
                after = _steps(port)
                per_step = (after[0] - before[0]) / max(after[1] - before[1], 1)
                mode = f"serve, {count} worker{'s' if count > 1 else ''}"
                level(mode, c, latencies, elapsed, errors=errors)
                levels[-1]["sentences_per_step"] = round(per_step, 1)
                levels[-1]["server_rss_mib"] = _rss_mib(proc.pid)
        finally:
            proc.terminate()
            proc.wait(60)
    # this machine's speed drifts within minutes: the file rate is the mean of one measurement
    # before the server levels and one after them
    file_after = _file_rate(translator, lines, beam, shortlist)
    file_rate = (file_before + file_after) / 2
    for level in levels:
        level["vs file"] = f"{level['vs file'] / file_rate:.2f}x"
    rows: list[dict[str, Any]] = [
        {
            "mode": f"translate, the lines as a file (before {file_before:.1f}, after "
            f"{file_after:.1f})",
            "sentences_per_s": round(file_rate, 1),
        },
        {"mode": "translate, one line alone"}
        | {f"p{q}_ms": round(ms, 1) for q, ms in one_ms.items()},
        *levels,
    ]
    keys = list(rows[-1])
    return [{k: row.get(k, "") for k in keys} for row in rows]
