"""One optimizer update, in the shape of nanoGPT's: forward and backward over the update's
batches, clip, step, zero the gradients.

An update takes `accum_steps` batches; under torchrun (see distributed.py) `world_size x
accum_steps` batches of the shared sampler, each rank its own share. It follows the gradient of
the loss summed over all of the group's target tokens, so it is the same update on any number
of processes.

An update whose gradient is not finite (NaN or overflow) is skipped with a warning, as fairseq
and Marian do: the weights and optimizer state stay as they were. `MAX_SKIPPED` of them in a row
stop the run with an error, so no checkpoint ever holds weights that are not finite.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch

from nmt.config import TrainConfig
from nmt.data.batching import Batch
from nmt.device import Runtime
from nmt.distributed import Dist
from nmt.errors import NmtError
from nmt.train.word_dropout import WordDropout

MAX_SKIPPED = 5  # updates in a row with a non-finite gradient before the run stops


class _Loss(torch.nn.Module):
    """The model's training loss as a forward(), the call DistributedDataParallel hooks into."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, *batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.loss(*batch)


class Sums(NamedTuple):
    """What one update trained on, for the log."""

    loss: torch.Tensor  # [] this rank's training loss, summed over its batches' tokens
    nll: torch.Tensor  # [] the same for the negative log-likelihood
    tokens: int  # target tokens of the whole group (every rank's)


class Updater:
    """A model's optimizer, gradient scaler and training loss (under torchrun, DDP-wrapped)."""

    def __init__(
        self,
        model: torch.nn.Module,
        cfg: TrainConfig,
        runtime: Runtime,
        dist: Dist,
        log: Callable[[str], None],
        run_dir: Path,
        word_dropout: WordDropout | None = None,
    ):
        self.model, self.cfg, self.runtime, self.dist = model, cfg, runtime, dist
        self.log, self.run_dir = log, run_dir
        self.loss_fn = dist.wrap(_Loss(model), runtime.device)  # DDP: rank 0's weights, everywhere
        optim = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
        self.optimizer = optim(
            model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True
        )
        self.scaler = runtime.grad_scaler()
        self.word_dropout = word_dropout or WordDropout(cfg.src_word_dropout, cfg.tgt_word_dropout)
        self.skipped = 0  # updates in a row skipped for a non-finite gradient

    def __call__(self, batches: list[Batch], lr: float, step: int) -> Sums | None:
        """Update number `step`, at rate `lr`, over the whole group's `batches` (every rank
        holds them all); None if it was skipped because the gradient is not finite.

        Scaled by world_size / tokens, each rank's loss makes DDP's gradient average the
        gradient of the group's loss summed over its tokens, exactly as one process with
        accum_steps = world_size x accum_steps computes it.
        """
        cfg, d, model, scaler = self.cfg, self.dist, self.model, self.scaler
        self.runtime.share_cores()  # on a CPU, the cores other processes leave free now
        model.train()
        tokens = sum(b.target_tokens for b in batches)  # the whole group's: the same on each rank
        mine = d.share(batches)  # this rank's batches, each with its loss weight
        loss_sum = nll_sum = 0.0
        for i, (batch, weight) in enumerate(mine):
            batch = self.word_dropout(batch.to(self.runtime.device))
            inputs = (batch.src, batch.src_lengths, batch.tgt_in, batch.tgt_out)
            with d.no_sync(self.loss_fn, i < len(mine) - 1):  # DDP averages after the last only
                with self.runtime.autocast():
                    loss, nll = self.loss_fn(*inputs, cfg.label_smoothing)  # [] sums over tokens
                scaler.scale(loss * weight * d.world_size / tokens).backward()
            loss_sum = loss_sum + loss.detach() * weight  # no device sync until logging
            nll_sum = nll_sum + nll * weight
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        if cfg.clip_norm:
            scaler.unscale_(self.optimizer)  # clip the true gradient, not fp16's scaled one
        # the norm of DDP's averaged gradient, so every rank skips the same updates (inf: no clip)
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm or math.inf)
        if not scaler.is_enabled() and not math.isfinite(float(norm)):
            self._skip(step)  # fp16's scaler skips such steps itself, and rescales
            return None
        self.skipped = 0
        scaler.step(self.optimizer)
        scaler.update()  # fp16: the loss scale for the next update
        self.optimizer.zero_grad(set_to_none=True)  # the next backward assigns, not adds
        return Sums(loss_sum, nll_sum, tokens)

    def _skip(self, step: int) -> None:
        """Drop a non-finite gradient (the weights and optimizer state stay as they were);
        stop the run when it keeps happening."""
        self.optimizer.zero_grad(set_to_none=True)
        self.skipped += 1
        self.log(
            f"warning: update {step} skipped ({self.skipped} in a row): the gradient is not "
            "finite (NaN or overflow)"
        )
        if self.skipped >= MAX_SKIPPED:
            saved = (self.run_dir / "last.pt").is_file()
            raise NmtError(
                f"training diverged: {MAX_SKIPPED} batches in a row at update {step} gave a "
                "gradient that is not finite; "
                + ("nothing was saved after the last good checkpoint" if saved else "no "
                   "checkpoint was saved yet"),
                str(self.run_dir),
                "lower train.lr (or raise train.warmup_steps, or use fp32), then "
                + ("--resume" if saved else "start again with --overwrite"),
            )  # fmt: skip

    def unwrap(self) -> None:
        """Drop the DDP wrapper: it holds the process group, so it must go before the group."""
        self.loss_fn = _Loss(self.model)
