"""The server's one decoder: the sentences of concurrent requests decoded in one running batch.

Each request puts its prepared lines in one queue, bounded at `max_queue` sentences waiting or
being decoded (a request that would pass it is refused at once: `QueueFull`). One thread runs
a beam search (`Translator.batch`, the code behind `nmt translate`) whose batch sentences join
and leave at any step (continuous batching): a sentence leaves as soon as its search is done,
and its request is answered once all its lines are; waiting lines with the batch's search
options join it, oldest first, within `max_batch_tokens` (source subwords x beam). So a long
sentence does not hold back short ones, and 64 clients sending one line each keep the batch
full, as lines of a file would.

Lines join in groups of at least `JOIN_SHARE` of the running batch (see `_worth`): each join
runs the encoder once (its sequential steps cost the same for one sentence as for ten) and
copies the batch's state. Under light load a smaller group joins once its oldest line has
waited `max_wait_ms`; an idle server starts a line at once. When the oldest waiting line needs
other options, nothing joins until the batch has drained. The lines of a request whose client
has gone leave the queue and the batch. The decoding runs on the thread that calls `run` (the
main thread: see there), the HTTP server on another.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from nmt.translate import DecodeOptions, Prepared, Result, TranslationBatch, Translator

# Joining at every step costs throughput (small joins run products slowly); groups of an
# eighth of the batch sit on a plateau (docs/notes/2026-11-28-serving-under-load.md).
JOIN_SHARE = 1 / 8


class QueueFull(Exception):
    """The queue cannot take a request's lines now; `retry_after`: seconds until it likely can."""

    def __init__(self, retry_after: int):
        super().__init__(f"the queue is full; retry in {retry_after} s")
        self.retry_after = retry_after


class ShuttingDown(Exception):
    """The server's drain time ran out before the request's lines were decoded."""


@dataclass(eq=False)  # hashed by identity: (job, line) keys the batch's lines
class Job:
    """One request's lines and where their results go."""

    items: list[Prepared]
    options: DecodeOptions
    future: asyncio.Future  # resolved with list[Result] on the request's event loop
    loop: asyncio.AbstractEventLoop
    results: list[Result | None] = field(default_factory=list)
    pending: int = 0  # lines not yet decoded
    arrived: float = field(default_factory=time.monotonic)
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

    step: Callable[[int, int, float], None] = lambda lines, finished, seconds: None
    dropped: Callable[[int], None] = lambda lines: None
    depth: Callable[[int], None] = lambda lines: None  # lines waiting or being decoded, anew


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
        self._cond = threading.Condition()
        self._closing = False
        self._abandoned = False  # the drain time is up: answer what is left with ShuttingDown

    @property
    def depth(self) -> int:
        return self._depth

    def _add_depth(self, lines: int) -> None:
        """Count lines in (or out, lines < 0) of the queue; the caller holds the lock."""
        self._depth += lines
        self.events.depth(self._depth)

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
            self._add_depth(len(todo))
            self._lines.extend((job, i) for i in todo)
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

    def abandon(self) -> None:
        """The drain time is up: the lines still queued or being decoded are dropped at the
        next step, their requests answered with `ShuttingDown`, and `run` returns."""
        with self._cond:
            self._closing = self._abandoned = True
            self._cond.notify()

    def run(self) -> None:
        """Decode until closed. Call it on the main thread: torch's OpenMP threads work
        together only there (on another thread a decode runs markedly slower)."""
        while True:
            options = self._next_options()
            if options is None:
                return
            with self.translator.batch(options) as running:
                while self._admit(running):
                    self._step(running)

    def _next_options(self) -> DecodeOptions | None:
        """The oldest waiting line's options, once there is one; None once closing with
        nothing left."""
        with self._cond:
            while True:
                self._drop_cancelled(None)
                if self._lines:
                    return self._lines[0][0].options
                if self._closing:
                    return None
                self._cond.wait(0.5)  # a timeout lets signal handlers run

    def _admit(self, running: TranslationBatch) -> bool:
        """Let waiting lines with the running batch's options join it, oldest first, within
        its token budget (into an empty batch the oldest goes in any case), when they are
        worth a join (`_worth`); False once the batch is empty and nothing may join. While the
        oldest waiting line needs other options, nothing joins: the batch drains, and the
        next one is that line's."""
        options = running.options
        budget = options.batch_tokens // options.beam - running.tokens
        with self._cond:
            self._drop_cancelled(running)
            if not self._lines or self._lines[0][0].options != options:
                return bool(len(running))
            joining: list[tuple[Job, int]] = []
            rest: deque[tuple[Job, int]] = deque()
            for job, i in self._lines:
                size = len(job.items[i].ids) + 1
                fits = size <= budget or not (joining or len(running))
                if job.options == options and fits:
                    joining.append((job, i))
                    budget -= size
                else:
                    rest.append((job, i))
            room = not any(job.options == options for job, _ in rest)
            if self._worth(joining, running, room):
                self._lines = rest
            else:
                joining = []
        if joining:
            running.add(joining, [job.items[i] for job, i in joining])
        return bool(len(running))

    def _worth(self, joining: list[tuple[Job, int]], running: TranslationBatch, room: bool) -> bool:
        """Whether lines should join now: into an empty batch; as a group of at least
        `JOIN_SHARE` of the batch; or, when the batch has room for every waiting line, once
        the oldest has waited `max_wait_ms` (a lone line under light load). Without room (a
        long queue), they wait for enough to fit."""
        if not joining:
            return False
        if not len(running) or len(joining) >= JOIN_SHARE * len(running):
            return True
        return room and time.monotonic() - joining[0][0].arrived >= self.max_wait

    def _drop_cancelled(self, running: TranslationBatch | None) -> None:
        """Lines of requests whose client has gone leave the queue and the running batch;
        once abandoned, every line does, and its request is answered `ShuttingDown`."""
        if self._abandoned:
            keys = [*self._lines, *(running.items if running is not None else [])]
            for job in {id(job): job for job, _ in keys}.values():
                job.cancelled = True
                job.finish(ShuttingDown())
        kept = deque(line for line in self._lines if not line[0].cancelled)
        gone = [key for key in running.items if key[0].cancelled] if running is not None else []
        if gone:
            running.drop(gone)  # type: ignore[union-attr]
        dropped = len(self._lines) - len(kept) + len(gone)
        if dropped:
            self._lines = kept
            self._add_depth(-dropped)
            self.events.dropped(dropped)

    def _step(self, running: TranslationBatch) -> None:
        """One search step of the running batch; each request whose last line it finished
        gets its answer."""
        lines, start = len(running), time.perf_counter()
        try:
            done = running.step()
        except Exception as exc:  # noqa: BLE001 - every request in the batch is told
            jobs = {id(job): job for job, _ in running.items}
            running.drop(list(running.items))
            with self._cond:
                self._add_depth(-lines)
            for job in jobs.values():
                job.finish(exc)
            return
        seconds = time.perf_counter() - start
        with self._cond:
            self._add_depth(-len(done))
            self._rate = 0.95 * self._rate + 0.05 * len(done) / max(seconds, 1e-3)
        self.events.step(lines, len(done), seconds)
        for (job, i), result in done:
            job.results[i] = result
            job.pending -= 1
            if job.pending == 0:
                job.finish(job.results)  # type: ignore[arg-type]
