"""CPU threads that follow the cores other processes leave free (nmt/threads.py)."""

import os
import subprocess
import sys
import time

import pytest
import torch

from nmt import threads
from nmt.threads import CoreShare, core_share


class FakeCpu:
    """/proc/stat and os.times as functions of time: `others` cores busy besides this process,
    which itself uses `own` cores."""

    def __init__(self, others: float, own: float = 2.0):
        self.t, self.others, self.own = 0.0, others, own

    def share(self, max_threads: int = 2, cpus: int = 2) -> CoreShare:
        return CoreShare(
            max_threads,
            set(range(cpus)),
            busy=lambda _: self.t * (self.others + self.own),
            own=lambda: self.t * self.own,
            clock=lambda: self.t,
        )


@pytest.mark.parametrize(
    ("others", "cpus", "max_threads", "expected"),
    [(0.0, 2, 2, 2), (0.3, 2, 2, 2), (0.7, 2, 2, 1), (1.0, 2, 2, 1), (3.0, 2, 2, 1),
     (1.0, 8, 4, 4), (5.0, 8, 4, 3), (0.0, 4, 1, 1)],
)  # fmt: skip
def test_threads_are_the_cores_others_leave(others, cpus, max_threads, expected):
    cpu = FakeCpu(others)
    share = cpu.share(max_threads, cpus)
    cpu.t = 10.0
    assert share.others() == pytest.approx(others)
    cpu.t = 20.0
    assert share.threads() == expected


def test_adjust_sets_torch_threads_every_few_seconds_and_back(monkeypatch):
    calls = []
    monkeypatch.setattr(threads.torch, "set_num_threads", calls.append)
    monkeypatch.setattr(threads.torch, "get_num_threads", lambda: 2)
    cpu = FakeCpu(others=1.0)
    share = cpu.share(max_threads=2)
    cpu.t = threads.FIRST_CHECK_SECONDS / 2
    share.adjust()
    assert calls == []  # too soon to tell
    cpu.t = threads.FIRST_CHECK_SECONDS
    share.adjust()
    assert calls == [1]
    monkeypatch.setattr(threads.torch, "get_num_threads", lambda: 1)
    cpu.others = 0.0  # the neighbour has gone
    cpu.t += threads.CHECK_SECONDS / 2
    share.adjust()
    assert calls == [1]  # the next check is CHECK_SECONDS after the first
    cpu.t += threads.CHECK_SECONDS / 2
    share.adjust()
    assert calls == [1, 2]


def test_a_fixed_count_is_left_alone(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert core_share(0) is None
    monkeypatch.delenv("OMP_NUM_THREADS")
    before = torch.get_num_threads()
    try:
        assert core_share(1) is None and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert isinstance(core_share(0), CoreShare)


def _cpu_seconds(pid: int) -> float:
    """CPU time a process has used (user + system), from /proc."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="reads /proc/stat (Linux)")
def test_others_work_is_counted_and_our_own_is_not_on_the_real_machine():
    """On the real /proc/stat, beside whatever else runs (make test runs beside a busy process
    too): a process spinning on our CPU counts as others' work, at least as much as the CPU
    it got; this process's own spinning does not."""
    cpu = min(os.sched_getaffinity(0))
    spin = f"import os\nos.sched_setaffinity(0, {{{cpu}}})\nwhile True:\n    pass"
    neighbour = subprocess.Popen([sys.executable, "-c", spin])
    try:
        time.sleep(0.5)  # started and pinned
        share = CoreShare(1, {cpu})
        used, start = _cpu_seconds(neighbour.pid), time.monotonic()
        time.sleep(1.0)
        others = share.others()
        used = (_cpu_seconds(neighbour.pid) - used) / (time.monotonic() - start)
        assert used > 0.2 and others >= used - 0.15, (others, used)
    finally:
        neighbour.kill()
        neighbour.wait()
    share.others()
    own, start = time.process_time(), time.monotonic()
    while time.monotonic() - start < 1.0:
        pass
    own = (time.process_time() - own) / (time.monotonic() - start)
    assert share.others() <= 1.0 - own + 0.15, own
