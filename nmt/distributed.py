"""Data-parallel training: torch.distributed and DistributedDataParallel, launched by torchrun.

torchrun starts one process per device and sets RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous
address; `setup()` joins that process group (NCCL on GPUs, gloo on CPUs). Every rank builds the
same seeded batch sampler and takes its own share of each update's batches (`Dist.share`), so
no pair is seen twice in an epoch and none is skipped. DDP averages the
gradients; rank 0 alone validates and writes files, then broadcasts what it decided.

Control messages (stop votes and the clock, the progress after validation, RNG states) go
through a second, gloo group on the CPU, so that on GPUs they never wait for the device queue
to drain.
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from nmt.errors import NmtError

# Ranks other than 0 wait this long for rank 0's validation and checkpoint writes.
TIMEOUT = datetime.timedelta(hours=2)


def launched_by_torchrun() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ or (
        "RANK" in os.environ and "WORLD_SIZE" in os.environ and "LOCAL_RANK" in os.environ
    )


@dataclass
class Dist:
    """This process's place in the group; the default is a plain single-process run."""

    rank: int = 0
    world_size: int = 1
    control: Any = field(default=None, repr=False)  # the gloo group; None when not distributed

    @property
    def active(self) -> bool:
        return self.control is not None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def share(self, group: Sequence[Any]) -> list[tuple[Any, float]]:
        """This rank's batches of one update's `group` (which every rank holds), each with its
        loss weight. Ranks take every world_size-th batch, so each batch is trained on once. The
        last group of a run may leave a rank without one: it gets the first with weight 0, so
        that DDP's gradient all-reduce still meets every rank."""
        mine = [(batch, 1.0) for batch in group[self.rank :: self.world_size]]
        return mine or [(group[0], 0.0)]

    def maximum(self, values: Sequence[float]) -> list[float]:
        """Element-wise maximum over the ranks (a flag as 0.0/1.0 is then set on every rank
        when it is set on one)."""
        if not self.active:
            return list(values)
        top = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(top, op=dist.ReduceOp.MAX, group=self.control)
        return top.tolist()

    def sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sum over the ranks."""
        if not self.active:
            return list(values)
        total = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(total, group=self.control)
        return total.tolist()

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's `obj`, on every rank."""
        if not self.active:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0, group=self.control)
        return box[0]

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order, on every rank."""
        if not self.active:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj, group=self.control)
        return out

    def barrier(self) -> None:
        if self.active:
            dist.barrier(group=self.control)

    def no_sync(self, module: nn.Module, accumulate: bool) -> contextlib.AbstractContextManager:
        """While `accumulate`, DDP keeps gradients local (synced at the update's last batch)."""
        if accumulate and isinstance(module, nn.parallel.DistributedDataParallel):
            return module.no_sync()
        return contextlib.nullcontext()

    def wrap(self, module: nn.Module, device: torch.device) -> nn.Module:
        """`module` under DistributedDataParallel (which starts from rank 0's weights)."""
        if not self.active:
            return module
        ids = [device.index] if device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(
            module, device_ids=ids, gradient_as_bucket_view=True
        )


def setup(device: str | None) -> tuple[Dist, str | None]:
    """Join torchrun's process group if this process was started by torchrun.

    Returns the Dist and the device to use: under torchrun with CUDA, `cuda:LOCAL_RANK`.
    """
    if not launched_by_torchrun():
        return Dist(), device
    local_rank = int(os.environ["LOCAL_RANK"])
    wants_cuda = device in (None, "", "auto") or str(device).startswith("cuda")
    use_cuda = wants_cuda and torch.cuda.is_available()
    if use_cuda:
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", local_rank + 1))
        if local_world > torch.cuda.device_count():  # every rank of the machine says so
            raise NmtError(
                f"torchrun started {local_world} processes on this machine but only "
                f"{torch.cuda.device_count()} GPUs are visible",
                "--nproc-per-node / --distributed",
                "start at most one process per GPU, or pass --device cpu",
            )
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=TIMEOUT)
    control = dist.new_group(backend="gloo", timeout=TIMEOUT) if use_cuda else dist.group.WORLD
    return Dist(dist.get_rank(), dist.get_world_size(), control), device


def teardown(d: Dist) -> None:
    """Leave the group. What still refers to it (a dropped DDP wrapper, in reference cycles) is
    collected first: a gloo group that outlives destroy_process_group is freed during
    interpreter shutdown, where its threads abort the process ("terminate called without an
    active exception")."""
    if d.active and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


def torchrun_command(nproc: int, argv: Sequence[str]) -> list[str]:
    """The command that re-runs `nmt ARGV` on `nproc` processes of this machine via torchrun."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        "nmt",
        *argv,
    ]
