"""The server's one decoder: the sentences of concurrent requests decoded in shared running
batches, taking turns.

Each request puts its prepared lines in one queue, bounded at `max_queue` sentences waiting or
being decoded (a request that would pass it is refused at once: `QueueFull`). One thread runs
beam searches (`Translator.batch`, the code behind `nmt translate`) whose batch sentences join
and leave at any step (continuous batching): a sentence leaves as soon as its search is done,
and its request is answered once all its lines are. So a long sentence does not hold back
short ones, and 64 clients sending one line each keep the batch full, as lines of a file would.

A search has one beam (and n-best, alpha, attention), so each set of search options has its
own running batch; together they hold at most `max_batch_tokens` (source subwords x beam; a
new batch's first line joins in any case). Two rules keep one large request from holding the
others (issue 35: 200 long lines at beam 32 held a one-line request for a minute):
- Its share: a request holds at most `REQUEST_SHARE` of that budget (its first line joins in
  any case), and the waiting lines of requests that hold less join first. So a newcomer with
  the same options finds room and joins within `max_wait_ms`.
- Turns: the decoder steps the batch that has decoded least of late (`_pick`), and a new batch
  starts with nothing. So a newcomer with other options starts at the next step and, being
  short, is decoded at about its speed on an idle server; batches that stay busy get equal
  time. Plain turns, a step each, would not do: a one-line batch's every step would wait for
  a large batch's step, and take their ratio longer.

Lines join in groups of at least `JOIN_SHARE` of their running batch (see `_worth`): each join
runs the encoder once (its sequential steps cost the same for one sentence as for ten) and
copies the batch's state. Under light load a smaller group joins once its oldest line has
waited `max_wait_ms`; a new batch starts its lines at once. The lines of a request whose client
has gone leave the queue and the batches. The decoding runs on the thread that calls `run` (the
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
# The most of `max_batch_tokens` one request holds: the rest stays open to newcomers. A lone
# request loses little by it on a CPU, where a step's time grows with its rows.
REQUEST_SHARE = 1 / 2
# How fast a batch's past decode time is forgotten (`_pick`): a newcomer may have the decoder
# to itself for about this long before busy batches share it equally again.
USAGE_HALF_LIFE = 1.0  # seconds


def line_cost(item: Prepared, beam: int) -> int:
    """What one line takes of `max_batch_tokens` and of `serve.max_request_cost`: its source
    subwords with each part's end of sentence, times the beam."""
    return (len(item.ids) + len(item.cuts) + 1) * beam


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
    waiting: deque[int] = field(default_factory=deque)  # its lines not yet in a batch, in order
    held: int = 0  # line_cost of its lines in a batch
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


@dataclass(eq=False)
class Group:
    """The running batch of one set of search options, and how much it decoded of late."""

    batch: TranslationBatch
    used: float = 0.0  # decode seconds, each halved every USAGE_HALF_LIFE s of decoding since

    @property
    def cost(self) -> int:
        return self.batch.tokens * self.batch.options.beam


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
        self._jobs: deque[Job] = deque()  # the jobs with lines waiting, oldest first
        self._groups: list[Group] = []  # the running batches (decoder thread), none empty
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
            if todo:
                job.waiting.extend(todo)
                self._jobs.append(job)
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
        together only there (on another thread a decode runs markedly slower). One autocast
        spans every batch (each would enter its own: several are open at once, and autocast
        contexts must close in the order they opened)."""
        with self.translator.runtime.autocast():
            while self._wait():
                self._admit()
                if self._groups:
                    self._step(self._pick())

    def _wait(self) -> bool:
        """Until a line waits or is being decoded; False once closing with none left."""
        with self._cond:
            while True:
                self._drop_cancelled()
                if self._jobs or self._groups:
                    return True
                if self._closing:
                    return False
                self._cond.wait(0.5)  # a timeout lets signal handlers run

    def _pick(self) -> Group:
        """The batch to step: the one that decoded least of late (`Group.used`). A new batch
        has the decoder until it has decoded as long as the others did, of late (at most about
        USAGE_HALF_LIFE); batches that stay busy then take equal time."""
        return min(self._groups, key=lambda group: group.used)

    def _admit(self) -> None:
        """Waiting lines join their options' running batch (`_plan` says which), those of
        each batch when they are worth a join (`_worth`); a batch opens for new options."""
        with self._cond:
            self._drop_cancelled()
            joins = []
            for group, lines, room in self._plan():
                if not self._worth(lines, group.batch, room):
                    continue
                for job, i in lines:
                    job.waiting.popleft()  # the lines joining are the first of their job's
                    job.held += line_cost(job.items[i], job.options.beam)
                joins.append((group, lines))
            self._jobs = deque(job for job in self._jobs if job.waiting)
        for group, lines in joins:
            group.batch.add(lines, [job.items[i] for job, i in lines])
            if group not in self._groups:
                self._groups.append(group)

    def _plan(self) -> list[tuple[Group, list[tuple[Job, int]], bool]]:
        """Per batch (a new one for new options), the lines that may join it now, and whether
        every waiting line of its options could. Requests holding least go first, then the
        oldest, each with its lines in order: within the budget (`max_batch_tokens` over all
        batches; a new batch's first line in any case), and within `REQUEST_SHARE` of it per
        request (its first line in any case). The caller holds the lock."""
        used = sum(group.cost for group in self._groups)
        plan: dict[int, tuple[Group, list[tuple[Job, int]]]] = {}
        crowded: set[int] = set()  # batches a line could not join for want of room
        for job in sorted(self._jobs, key=lambda job: job.held):  # stable: oldest first
            group = self._group(job.options, plan)
            lines = plan.setdefault(id(group), (group, []))[1]
            budget, held = job.options.batch_tokens, job.held
            for i in job.waiting:
                cost = line_cost(job.items[i], job.options.beam)
                if held and held + cost > REQUEST_SHARE * budget:
                    break  # its share is full: its next line waits for its turn
                if used + cost > budget and (len(group.batch) or lines):
                    crowded.add(id(group))
                    break
                lines.append((job, i))
                used, held = used + cost, held + cost
        return [(group, lines, id(group) not in crowded) for group, lines in plan.values()]

    def _group(self, options: DecodeOptions, plan: dict) -> Group:
        """The running (or planned) batch of these options, or a new one."""
        for group in [*self._groups, *(group for group, _ in plan.values())]:
            if group.batch.options == options:
                return group
        return Group(self.translator.batch(options))

    def _worth(self, joining: list[tuple[Job, int]], running: TranslationBatch, room: bool) -> bool:
        """Whether lines should join now: into an empty batch; as a group of at least
        `JOIN_SHARE` of the batch; or, when the batch has room for every waiting line it may
        take now, once the oldest has waited `max_wait_ms` (a lone line under light load).
        Without room (a long queue), they wait for enough to fit."""
        if not joining:
            return False
        if not len(running) or len(joining) >= JOIN_SHARE * len(running):
            return True
        oldest = min(job.arrived for job, _ in joining)
        return room and time.monotonic() - oldest >= self.max_wait

    def _drop_cancelled(self) -> None:
        """Lines of requests whose client has gone leave the queue and the running batches;
        once abandoned, every line does, and its request is answered `ShuttingDown`. The
        caller holds the lock."""
        if self._abandoned:
            running = [job for group in self._groups for job, _ in group.batch.items]
            for job in {id(job): job for job in [*self._jobs, *running]}.values():
                job.cancelled = True
                job.finish(ShuttingDown())
        dropped = sum(len(job.waiting) for job in self._jobs if job.cancelled)
        self._jobs = deque(job for job in self._jobs if not job.cancelled)
        for group in self._groups:
            gone = [key for key in group.batch.items if key[0].cancelled]
            if gone:
                group.batch.drop(gone)
                dropped += len(gone)
        self._groups = [group for group in self._groups if len(group.batch)]
        if dropped:
            self._add_depth(-dropped)
            self.events.dropped(dropped)

    def _step(self, group: Group) -> None:
        """One search step of a running batch; each request whose last line it finished gets
        its answer. Every batch's `used` decays by the step's time, and this one's grows."""
        running = group.batch
        lines, start = len(running), time.perf_counter()
        try:
            done = running.step()
        except Exception as exc:  # noqa: BLE001 - every request in the batch is told
            jobs = {id(job): job for job, _ in running.items}
            running.drop(list(running.items))
            self._groups.remove(group)
            with self._cond:
                self._add_depth(-lines)
            for job in jobs.values():
                job.finish(exc)
            return
        seconds = time.perf_counter() - start
        for other in self._groups:
            other.used *= 0.5 ** (seconds / USAGE_HALF_LIFE)
        group.used += seconds
        if not len(running):
            self._groups.remove(group)
        with self._cond:
            self._add_depth(-len(done))
            self._rate = 0.95 * self._rate + 0.05 * len(done) / max(seconds, 1e-3)
        self.events.step(lines, len(done), seconds)
        for (job, i), result in done:
            job.results[i] = result
            job.held -= line_cost(job.items[i], job.options.beam)
            job.pending -= 1
            if job.pending == 0:
                job.finish(job.results)  # type: ignore[arg-type]
