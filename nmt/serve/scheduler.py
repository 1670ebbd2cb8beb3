"""The server's one decoder: the sentences of concurrent requests merged into shared batches.

Each request puts its prepared lines in one queue, bounded at `max_queue` sentences waiting or
being decoded (a request that would pass it is refused at once: `QueueFull`). One thread takes
the oldest waiting line and the other waiting lines that share its search options, oldest
first, up to `max_batch_tokens` (source subwords x beam), and decodes them as one batch with
`Translator.translate_prepared`, the code behind `nmt translate`. A request gets its answer as
soon as the batch that holds its last line is done. Lines that arrive during a batch wait for
the next one, so no line waits longer than one batch, and 64 clients sending one line each are
decoded together, as lines of a file would be. A batch waits up to `max_wait_ms` to hold as many
lines as were queued or just answered when the last batch ended (the clients it answered are
sending their next lines), as long as requests keep coming (a gap of `GAP` ends the wait): so
under load batches stay full, while a lone client never waits. The lines of a request whose
client has gone are dropped before they are decoded. The decoding runs on the thread that
calls `run` (the main thread: see there), the HTTP server on another.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from nmt.translate import DecodeOptions, Prepared, Result, Translator

GAP = 0.005  # a batch waiting for company stops once no request has come for this long


class QueueFull(Exception):
    """The queue cannot take a request's lines now; `retry_after`: seconds until it likely can."""

    def __init__(self, retry_after: int):
        super().__init__(f"the queue is full; retry in {retry_after} s")
        self.retry_after = retry_after


@dataclass
class Job:
    """One request's lines and where their results go."""

    items: list[Prepared]
    options: DecodeOptions
    future: asyncio.Future  # resolved with list[Result] on the request's event loop
    loop: asyncio.AbstractEventLoop
    results: list[Result | None] = field(default_factory=list)
    pending: int = 0  # lines not yet decoded
    cancelled: bool = False  # the client has gone

    def finish(self, value: list[Result] | BaseException) -> None:
        """Resolve the future from the decoder thread (the loop owns it)."""

        def resolve() -> None:
            if self.future.done():
                return
            if isinstance(value, BaseException):
                self.future.set_exception(value)
            else:
                self.future.set_result(value)

        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits for it
            self.loop.call_soon_threadsafe(resolve)


@dataclass
class Events:
    """What the scheduler reports (the server's metrics); each is called on the decoder
    thread."""

    batch: Callable[[int, float], None] = lambda lines, seconds: None
    dropped: Callable[[int], None] = lambda lines: None


class Scheduler:
    """A queue of lines, decoded in shared batches by whichever thread calls `run`."""

    def __init__(
        self,
        translator: Translator,
        max_wait_ms: float,
        max_queue: int,
        events: Events | None = None,
    ):
        self.translator, self.max_wait = translator, max_wait_ms / 1000
        self.max_queue, self.events = max_queue, events or Events()
        self._lines: deque[tuple[Job, int]] = deque()  # (job, index of the line in it)
        self._depth = 0  # lines waiting or being decoded
        self._rate = 50.0  # lines decoded per second, smoothed (for Retry-After)
        self._expect = 1  # lines the next batch may expect: queued + just answered
        self._arrivals = 0  # requests submitted so far
        self._cond = threading.Condition()
        self._closing = False

    @property
    def depth(self) -> int:
        return self._depth

    def submit(self, items: list[Prepared], options: DecodeOptions) -> Job:
        """Queue a request's lines (empty ones are answered at once); raises QueueFull."""
        loop = asyncio.get_running_loop()
        job = Job(items, options, loop.create_future(), loop, [None] * len(items))
        todo = [i for i, item in enumerate(items) if item.ids]
        for i in set(range(len(items))) - set(todo):  # empty lines: nothing to decode
            job.results[i] = self.translator.translate_prepared([items[i]], options)[0]
        with self._cond:
            if self._depth + len(todo) > self.max_queue:
                raise QueueFull(max(1, round((self._depth + len(todo)) / self._rate)))
            job.pending = len(todo)
            self._depth += len(todo)
            self._lines.extend((job, i) for i in todo)
            self._arrivals += 1
            self._cond.notify()
        if not todo:
            job.finish(job.results)  # type: ignore[arg-type]
        return job

    def cancel(self, job: Job) -> None:
        """The client has gone: its lines not yet decoded are dropped."""
        with self._cond:
            job.cancelled = True

    def close(self) -> None:
        """Let `run` return once what is queued is decoded."""
        with self._cond:
            self._closing = True
            self._cond.notify()

    def run(self) -> None:
        """Decode batches until closed. Call it on the main thread: torch's OpenMP threads
        work together only there (measured on the demo model, 2 threads: one sentence 43 ms
        on the main thread, 97 ms on another; 200 sentences 97 against 71 sentences/s)."""
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            self._decode(batch)

    def _next_batch(self) -> list[tuple[Job, int]] | None:
        """The oldest line and the waiting lines with its options, oldest first, within the
        token budget (the oldest goes in any case); None once closing with nothing left."""
        with self._cond:
            while True:
                self._drop_cancelled()
                if self._lines:
                    break
                if self._closing:
                    return None
                self._cond.wait(0.5)  # a timeout lets signal handlers run
            options = self._lines[0][0].options
            budget = options.batch_tokens // options.beam  # source subwords with eos
            deadline = time.monotonic() + self.max_wait
            while self._short_of(options, budget) and not self._closing:
                seen, left = self._arrivals, deadline - time.monotonic()
                self._cond.wait(min(left, GAP))
                if left <= GAP or self._arrivals == seen:  # out of time, or nobody is coming
                    break
            self._drop_cancelled()
            batch: list[tuple[Job, int]] = []
            rest: deque[tuple[Job, int]] = deque()
            used = 0
            for job, i in self._lines:
                size = len(job.items[i].ids) + 1
                if job.options == options and (not batch or used + size <= budget):
                    batch.append((job, i))
                    used += size
                else:
                    rest.append((job, i))
            self._lines = rest
            return batch

    def _short_of(self, options: DecodeOptions, budget: int) -> bool:
        """Fewer lines wait than were queued or answered when the last batch ended, and they
        leave room in the budget: the clients just answered are likely sending their next
        lines (answering 64 clients and reading their next requests takes the HTTP thread
        longer than 20 ms; without waiting for them, batches alternated between 64 and 6-9
        lines: docs/benchmarks.md)."""
        lines = [len(job.items[i].ids) + 1 for job, i in self._lines if job.options == options]
        return len(lines) < self._expect and sum(lines) < budget

    def _drop_cancelled(self) -> None:
        kept = deque(line for line in self._lines if not line[0].cancelled)
        dropped = len(self._lines) - len(kept)
        if dropped:
            self._lines, self._depth = kept, self._depth - dropped
            self.events.dropped(dropped)

    def _decode(self, batch: list[tuple[Job, int]]) -> None:
        """Decode one batch and hand each finished request its results."""
        if not batch:
            return
        start = time.perf_counter()
        options = batch[0][0].options
        try:
            results = self.translator.translate_prepared(
                [job.items[i] for job, i in batch], options
            )
        except Exception as exc:  # noqa: BLE001 - every request of the batch is told
            for job in {id(job): job for job, _ in batch}.values():
                job.finish(exc)
            results = None
        seconds = time.perf_counter() - start
        with self._cond:  # before any answer goes out, so no client is counted twice
            self._depth -= len(batch)
            self._rate = 0.8 * self._rate + 0.2 * len(batch) / max(seconds, 1e-3)
            self._expect = len(self._lines) + len(batch)
        self.events.batch(len(batch), seconds)
        if results is None:
            return
        for (job, i), result in zip(batch, results):
            job.results[i] = result
            job.pending -= 1
            if job.pending == 0:
                job.finish(job.results)  # type: ignore[arg-type]
