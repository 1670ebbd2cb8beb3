"""Where a run stands and what decides its course: `Progress` (the counters last.pt carries),
what a validation changes (`after_validation`: best score, early stopping, plateau's scale) and
when the run is over (`limit_reached`). Plain functions of the progress and the config, so that
tests can call them alone."""

from __future__ import annotations

from dataclasses import dataclass

from nmt.config import TrainConfig
from nmt.train.schedule import plateau


@dataclass
class Progress:
    """Counters that a checkpoint carries so that a resumed run continues where it stopped."""

    step: int = 0  # optimizer updates
    tokens: int = 0  # target tokens trained on
    seconds: float = 0.0  # training time, summed over resumed runs
    best: float | None = None  # best validation score (valid_metric)
    best_step: int = 0
    bad_validations: int = 0  # validations since the best one
    lr_scale: float = 1.0  # `plateau` schedule's current factor
    lr_bad: int = 0  # validations since the last improvement, for `plateau`
    validated_step: int = -1  # step of the last validation


def improves(metric: str, score: float, best: float | None) -> bool:
    """Whether `score` beats `best`: lower for the loss, higher for BLEU and chrF."""
    if best is None:
        return True
    return score < best if metric == "loss" else score > best


def after_validation(progress: Progress, score: float, cfg: TrainConfig) -> bool:
    """Take a validation's score (of `cfg.valid_metric`) into `progress`: the best score and
    its step, the count of validations since (early stopping), plateau's scale. True if it is
    the best so far (the caller then keeps best.pt)."""
    p = progress
    improved = improves(cfg.valid_metric, score, p.best)
    if improved:
        p.best, p.best_step, p.bad_validations = score, p.step, 0
    else:
        p.bad_validations += 1
    p.lr_scale, p.lr_bad = plateau(cfg, p.lr_scale, p.lr_bad, improved)
    p.validated_step = p.step
    return improved


def out_of_time(progress: Progress, cfg: TrainConfig) -> bool:
    """Whether the run has trained for `train.max_minutes` (over all its resumed parts)."""
    return bool(cfg.max_minutes) and progress.seconds >= 60 * cfg.max_minutes


def limit_reached(progress: Progress, cfg: TrainConfig, out_of_time: bool) -> str | None:
    """Why the run is over (steps, time or patience used up), or None. `out_of_time` comes
    from the caller: under torchrun it reads the slowest rank's clock, as their clocks differ."""
    if cfg.max_steps and progress.step >= cfg.max_steps:
        return f"max_steps ({cfg.max_steps})"
    if out_of_time:
        return f"max_minutes ({cfg.max_minutes})"
    if cfg.patience and progress.bad_validations >= cfg.patience:
        return f"no improvement in {cfg.patience} validations (early stopping)"
    return None
