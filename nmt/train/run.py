"""`train()`, what `nmt train` calls: a new, overwritten or resumed run in a run directory
(rundir.py says which files are the run's; the directory is locked while a run writes to it),
alone or as one process of torchrun's group (distributed.py)."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from nmt.config import Config, apply_overrides, dump_config
from nmt.data.store import read_manifest
from nmt.device import resolve_runtime
from nmt.distributed import Dist, setup, teardown
from nmt.errors import NmtError
from nmt.fileio import atomic_write_bytes, locked_dir
from nmt.model.checkpoint import checkpoint_config, load_checkpoint
from nmt.train import rundir
from nmt.train.trainer import Trainer


def train(
    cfg: Config,
    data_dir: Path,
    run_dir: Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    overrides: list[str] | None = None,
    device: str | None = None,
    progress_bar: bool = True,
    log: Callable[[str], None] = tqdm.write,
) -> tuple[Trainer, str]:
    """Train (or resume) a model; returns the trainer (model, progress) and why it stopped.

    With `resume`, the run's own config is used, with `overrides` applied on top (e.g. a larger
    train.max_steps); `cfg` is then ignored. Started by torchrun, the process joins its group.
    """
    run_dir = Path(run_dir)
    read_manifest(data_dir)  # a bad --data fails before the run directory is touched
    dist, device = setup(device)
    if not dist.is_main:
        log, progress_bar = _quiet, False
    trainer = None
    try:
        with locked_dir(run_dir) if dist.is_main else contextlib.nullcontext():
            trainer = _run(
                cfg,
                data_dir,
                run_dir,
                resume,
                overwrite,
                overrides,
                device,
                dist,
                log,
                progress_bar,
            )
            progress, reason = trainer.run()
            dist.barrier()  # no rank tears the group down while another still writes or talks
    finally:
        if trainer is not None:
            trainer.updater.unwrap()  # DDP holds the process group: it must go first
        teardown(dist)
    best = (
        f"best {trainer.cfg.train.valid_metric} {progress.best:.2f} at step {progress.best_step}"
        if progress.best is not None
        else "not validated yet"
    )
    log(f"stopped at step {progress.step}: {reason}; {best}")
    return trainer, reason


def _run(
    cfg: Config,
    data_dir: Path,
    run_dir: Path,
    resume: bool,
    overwrite: bool,
    overrides: list[str] | None,
    device: str | None,
    dist: Dist,
    log: Callable[[str], None],
    progress_bar: bool,
) -> Trainer:
    """The trainer of a new or resumed run, its directory prepared (rank 0 holds its lock)."""
    if dist.is_main:
        rundir.prepare(run_dir, resume, overwrite)
    dist.barrier()
    checkpoint = None
    if resume:
        checkpoint = load_checkpoint(run_dir / "last.pt")
        saved = checkpoint_config(checkpoint, str(run_dir / "last.pt"))
        cfg = apply_overrides(copy.deepcopy(saved), overrides or [])
        _check_same_model(saved, cfg, run_dir / "last.pt")
    runtime = resolve_runtime(device, cfg.train.precision, "train.precision", cfg.train.threads)
    trainer = Trainer(cfg, data_dir, run_dir, runtime, log, progress_bar, dist)
    if checkpoint is not None:
        trainer.load(checkpoint)
        if dist.is_main:
            rundir.truncate_metrics(run_dir, trainer.progress.step, log)
        log(f"resumed at step {trainer.progress.step} (epoch {trainer.sampler.epoch})")
    if dist.is_main:
        atomic_write_bytes(run_dir / "config.yaml", dump_config(cfg).encode("utf-8"))
    return trainer


def _check_same_model(saved: Config, cfg: Config, path: Path) -> None:
    """The model of a resumed run is the checkpoint's: its weights fit no other shape."""
    changed = [
        f"model.{f.name}"
        for f in dataclasses.fields(saved.model)
        if getattr(saved.model, f.name) != getattr(cfg.model, f.name)
    ]
    if changed:
        raise NmtError(
            f"{', '.join(changed)} cannot change when a run is resumed",
            str(path),
            "drop those --set overrides, or start a new run with another --out",
        )


def _quiet(message: str) -> None:
    """The log of ranks other than 0."""
