"""The learning rate of each update: a linear warm-up over `train.warmup_steps`, then
`train.schedule`: `constant`, `inverse_sqrt` (1/√step once warm), or `plateau` (the rate times a
scale that `train.lr_decay` shrinks when validations stall, never below `train.min_lr`).

`learning_rate` is a pure function of the config, the update and plateau's scale, so a resumed
run recomputes the rate it stopped at from the progress its checkpoint carries.
"""

from __future__ import annotations

import math

from nmt.config import TrainConfig


def learning_rate(cfg: TrainConfig, step: int, scale: float) -> float:
    """The rate of update `step` (1-based): warm-up, then the schedule (`plateau` enters
    through `scale`)."""
    warm = min(1.0, step / cfg.warmup_steps) if cfg.warmup_steps else 1.0
    decay = 1.0
    if cfg.schedule == "inverse_sqrt":
        decay = math.sqrt(max(cfg.warmup_steps, 1) / max(step, cfg.warmup_steps, 1))
    return max(cfg.lr * warm * decay * scale, cfg.min_lr if cfg.schedule == "plateau" else 0.0)


def plateau(cfg: TrainConfig, scale: float, bad: int, improved: bool) -> tuple[float, int]:
    """`plateau`'s scale and its count of validations without improvement, after a validation:
    more than `lr_patience` of them in a row multiply the scale by `lr_decay` and restart the
    count. The count runs whatever the schedule; only `plateau` acts on it."""
    if improved:
        return scale, 0
    bad += 1
    if cfg.schedule == "plateau" and bad > cfg.lr_patience:
        return scale * cfg.lr_decay, 0
    return scale, bad
