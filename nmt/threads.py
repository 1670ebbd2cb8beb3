"""Intra-op threads that follow the CPU cores other processes leave free.

A torch process with one thread per core loses far more than its share when another process
runs beside it: its OpenMP threads spin-wait for each other at every operation, and one
descheduled thread stalls the whole step; fewer threads beside a busy process run faster than
all of them, and passive waiting (OMP_WAIT_POLICY=PASSIVE) would cost speed when alone
(measured: docs/notes/2026-11-27-shared-machine-threads.md).

So `CoreShare` re-counts, every few seconds, the CPU time that other processes took on the
cores this process may run on (/proc/stat, less this process's own time) and sets torch's
thread count to the cores left: all of them on an idle machine, fewer beside busy neighbours,
all again when they are gone.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable

import torch

CHECK_SECONDS = 2.0  # how often the thread count is reconsidered
FIRST_CHECK_SECONDS = 0.5  # the first time: a short job should not run its course on a guess
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _busy_seconds(cpus: set[int], stat: str = "/proc/stat") -> float:
    """CPU seconds spent busy (all but idle and iowait) on `cpus` since boot."""
    busy = 0
    with open(stat, encoding="ascii") as fh:
        for line in fh:
            name, *fields = line.split()
            if name[:3] == "cpu" and name[3:].isdigit() and int(name[3:]) in cpus:
                ticks = [int(x) for x in fields[:8]]
                busy += sum(ticks) - ticks[3] - ticks[4]
    return busy / _TICK


def _own_seconds() -> float:
    times = os.times()
    return times.user + times.system


class CoreShare:
    """Chooses torch's intra-op thread count from the cores other processes leave free."""

    def __init__(
        self,
        max_threads: int,
        cpus: set[int] | None = None,
        busy: Callable[[set[int]], float] = _busy_seconds,
        own: Callable[[], float] = _own_seconds,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.max_threads = max_threads
        self.cpus = cpus if cpus is not None else os.sched_getaffinity(0)
        self._busy, self._own, self._clock = busy, own, clock
        self._last = self._sample()
        self._next = self._last[0] + FIRST_CHECK_SECONDS

    def _sample(self) -> tuple[float, float, float]:
        return self._clock(), self._busy(self.cpus), self._own()

    def others(self) -> float:
        """Cores' worth of CPU that other processes used since the last call."""
        now = self._sample()
        (t0, busy0, own0), self._last = self._last, now
        wall = max(now[0] - t0, 1e-9)
        return max(0.0, (now[1] - busy0) - (now[2] - own0)) / wall

    def threads(self) -> int:
        """Threads to use now: the cores not kept busy by others, at most `max_threads`."""
        return max(1, min(self.max_threads, len(self.cpus) - round(self.others())))

    def adjust(self) -> None:
        """Set torch's thread count when a check is due (every `CHECK_SECONDS`)."""
        if self._clock() >= self._next:
            n = self.threads()
            self._next = self._last[0] + CHECK_SECONDS
            if n != torch.get_num_threads():
                torch.set_num_threads(n)


def core_share(threads: int) -> CoreShare | None:
    """A `CoreShare` for `threads` = 0 (follow the free cores, up to the threads torch started
    with), or None: a fixed count (`threads` > 0, which is then set, or OMP_NUM_THREADS), or
    no /proc/stat to read (not Linux)."""
    if threads > 0:
        torch.set_num_threads(threads)
        return None
    if "OMP_NUM_THREADS" in os.environ or not os.path.exists("/proc/stat"):
        return None
    return CoreShare(_started_with())


@functools.cache
def _started_with() -> int:
    """The threads torch chose (one per physical core), before any CoreShare lowered them."""
    return torch.get_num_threads()
