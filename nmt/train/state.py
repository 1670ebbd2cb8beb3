"""A run's checkpoints: what last.pt holds besides the weights, how a run resumes from it, and
the writing of last.pt, best.pt and the step checkpoints.

Resuming restores the weights, optimizer, gradient scaler, sampler (its position inside its
epoch), progress (the schedule's with it) and RNG states, so a run stopped and resumed ends
with the same weights as one that never stopped. last.pt holds every rank's RNG state: a run
resumes on any number of processes, exactly on the number it stopped with. Checkpoints are
written atomically (`save_checkpoint`), by rank 0 alone.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from nmt.config import Config
from nmt.data.batching import TokenBatchSampler
from nmt.distributed import Dist
from nmt.errors import NmtError
from nmt.model.checkpoint import (
    check_weights,
    make_checkpoint,
    new_run_id,
    save_checkpoint,
    vocabulary_id,
)
from nmt.train import rundir
from nmt.train.ema import WeightAverage
from nmt.train.progress import Progress


@dataclass(eq=False)
class Checkpoints:
    """Writes one run's checkpoints and resumes the run from its last.pt. The objects whose
    state last.pt holds are the run's for its whole life; its progress and average, which a
    resume replaces, come with each call."""

    cfg: Config
    vocab: dict[str, Any]
    run_dir: Path
    dist: Dist
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    sampler: TokenBatchSampler
    run_id: str = field(default_factory=new_run_id)  # in each of the run's checkpoints

    def train_state(self, progress: Progress, ema: WeightAverage | None) -> dict[str, Any]:
        """What `last.pt` holds besides the weights; "rng" lists every rank's RNG states."""
        rng = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "sampler": self.sampler.state_dict(),
            "rng": self.dist.gather(rng),
            "progress": asdict(progress),
            "ema": None if ema is None else ema.state_dict(),
        }

    def save(self, kind: str, progress: Progress, ema: WeightAverage | None) -> None:
        """`last` (resumable), `best` or `step` (weights only, for translation/averaging;
        with `train.ema_decay`, the averaged weights).

        Every rank calls `save("last")` (it gathers every rank's RNG state); rank 0 writes.
        """
        state = self.train_state(progress, ema) if kind == "last" else None
        if not self.dist.is_main:
            return
        if ema is not None and kind != "last":  # last.pt: the raw weights, to resume
            weights = ema.weights(self.model)
        else:
            weights = self.model.state_dict()
        checkpoint = make_checkpoint(self.cfg, self.vocab, weights, state, self.run_id)
        if kind in ("last", "best"):
            save_checkpoint(self.run_dir / f"{kind}.pt", checkpoint)
            return
        save_checkpoint(self.run_dir / f"step-{progress.step}.pt", checkpoint)
        rundir.rotate_step_checkpoints(self.run_dir, self.cfg.train.keep_last)

    def resume(
        self, checkpoint: dict[str, Any], ema: WeightAverage | None
    ) -> tuple[Progress, WeightAverage | None]:
        """Continue from a checkpoint written by `save("last")`: the run's objects take its
        state; returns its progress, and the average that goes on (None without one)."""
        where = str(self.run_dir / "last.pt")
        state = _train_state(checkpoint, self.vocab, where)
        check_weights(checkpoint["model"], self.model.state_dict(), where)
        self.model.load_state_dict(checkpoint["model"])
        self.run_id = checkpoint.get("run_id") or self.run_id
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.sampler.load_state_dict(state["sampler"])
        progress = Progress(**state["progress"])
        restore_rng(state["rng"], self.dist, self.cfg.train.seed, progress.step)
        if ema is not None:  # a run that had no average starts it from these weights
            ema = WeightAverage(self.model, ema.decay)
            if state.get("ema"):
                ema.load_state_dict(state["ema"])
        return progress, ema


def _train_state(checkpoint: dict[str, Any], vocab: dict[str, Any], where: str) -> dict[str, Any]:
    """The training state of a checkpoint this run can resume from (same vocabulary)."""
    if vocabulary_id(checkpoint["vocab"]) != vocabulary_id(vocab):
        raise NmtError(
            "the checkpoint's vocabulary is not the data's (different SentencePiece models)",
            where,
            "resume with the preprocessed directory the run started with",
        )
    state = checkpoint["train"]
    if state is None:
        raise NmtError(
            "this checkpoint holds weights only, no training state to resume from",
            where,
            "put back the last.pt that `nmt train` wrote, or start a new run",
        )
    return state


def restore_rng(
    saved: list[dict[str, Any]] | dict[str, Any], dist: Dist, seed: int, step: int
) -> None:
    """Each rank's own RNG state when the number of processes is unchanged (exact resume);
    otherwise a fresh seed per (seed, step, rank)."""
    saved = saved if isinstance(saved, list) else [saved]  # nmt 0.1: rank 0 only
    if len(saved) != dist.world_size:
        torch.manual_seed(hash((seed, step, dist.rank)) & 0xFFFFFFFF)
        return
    rng = saved[dist.rank]
    torch.set_rng_state(rng["cpu"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
