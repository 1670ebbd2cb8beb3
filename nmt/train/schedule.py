"""The learning rate of each update: a linear warm-up over `train.warmup_steps`, then
`train.schedule`: `constant`, `inverse_sqrt` (1/√step once warm), `plateau` (the rate times a
scale that `train.lr_decay` shrinks when validations stall, never below `train.min_lr`), or one
that knows the run's budget and anneals into its end: `linear`, `cosine` or `rex` decay from
`train.lr` to `train.min_lr` over `train.max_steps` updates or `train.max_minutes` of training.

Budgeted training (Li, Yumer & Ramanan, ICLR 2020) finds a decay that reaches its floor exactly
when the budget runs out better than one that does not know the budget; REX (Chen et al.,
arXiv 2107.04197) stays high longer than linear and drops at the end. The time budget reads the
clock that `max_minutes` reads (validation and checkpoint writes included), so the rate reaches
`min_lr` when the run stops, whatever share of it validation took.

`learning_rate` is a pure function of the config, the update, plateau's scale and the training
time so far, so a resumed run recomputes the rate it stopped at from the progress its
checkpoint carries.
"""

from __future__ import annotations

import math

from nmt.config import TrainConfig
from nmt.errors import NmtError

BUDGETED = ("linear", "cosine", "rex")  # the schedules that decay over the run's budget


def learning_rate(cfg: TrainConfig, step: int, scale: float, seconds: float = 0.0) -> float:
    """The rate of update `step` (1-based) after `seconds` of training: warm-up, then the
    schedule (`plateau` enters through `scale`)."""
    warm = min(1.0, step / cfg.warmup_steps) if cfg.warmup_steps else 1.0
    if cfg.schedule in BUDGETED:
        decay = _anneal(cfg.schedule, budget_share(cfg, step, seconds))
        return warm * (cfg.min_lr + (cfg.lr - cfg.min_lr) * decay)
    decay = 1.0
    if cfg.schedule == "inverse_sqrt":
        decay = math.sqrt(max(cfg.warmup_steps, 1) / max(step, cfg.warmup_steps, 1))
    return max(cfg.lr * warm * decay * scale, cfg.min_lr if cfg.schedule == "plateau" else 0.0)


def budget_share(cfg: TrainConfig, step: int, seconds: float) -> float:
    """The share of the budget spent before update `step` (0 for the first, 1 once spent):
    of `max_steps` updates or of `max_minutes` of training, whichever runs out first."""
    shares = [0.0]
    if cfg.max_steps:
        shares.append((step - 1) / cfg.max_steps)
    if cfg.max_minutes:
        shares.append(seconds / (60 * cfg.max_minutes))
    return min(1.0, max(shares))


def _anneal(schedule: str, share: float) -> float:
    """The factor that takes the rate from lr (1) to min_lr (0) as the budget is spent."""
    left = 1.0 - share
    if schedule == "linear":
        return left
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * share))
    return left / (0.5 + 0.5 * left)  # rex


def check_schedule(cfg: TrainConfig) -> None:
    """A budgeted schedule needs a budget to decay over."""
    if cfg.schedule in BUDGETED and not (cfg.max_steps or cfg.max_minutes):
        raise NmtError(
            f"train.schedule={cfg.schedule} decays the learning rate over the run's budget, "
            "but neither train.max_steps nor train.max_minutes is set",
            "train.schedule",
            "set a budget (e.g. --set train.max_steps=4000 or --set train.max_minutes=40), "
            "or choose the constant, inverse_sqrt or plateau schedule",
        )
    if cfg.schedule in BUDGETED and cfg.min_lr > cfg.lr:
        raise NmtError(
            f"train.min_lr ({cfg.min_lr}) is above train.lr ({cfg.lr}): the schedule would "
            "raise the learning rate as it decays",
            "train.min_lr",
            "give a train.min_lr below train.lr (e.g. 0 or 1e-6)",
        )


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
