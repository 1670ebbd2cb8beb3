"""An exponential moving average of a model's weights during training (`train.ema_decay`), as
Marian's `--exponential-smoothing`, Nematus, OpenNMT-py's `average_decay` and fairseq's EMA.

After every update, average ← d·average + (1 - d)·weights, with d = min(ema_decay,
(1 + t) / (10 + t)) at update t (Marian's warm-up: early on, when the weights move fastest, the
average follows them closely instead of remembering the random initialisation). Validation,
best.pt and the step checkpoints hold the average; last.pt holds the raw weights and the
average beside them, so that a resumed run continues exactly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


class WeightAverage:
    """The averaged copy of a model's floating-point parameters."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.shadow = {
            name: p.detach().clone()
            for name, p in model.named_parameters()
            if p.is_floating_point()
        }

    def rate(self, step: int) -> float:
        """The decay used at update `step` (1-based): the configured one after the warm-up."""
        return min(self.decay, (1 + step) / (10 + step))

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Fold in the weights after update `step`."""
        params = dict(model.named_parameters())
        names = list(self.shadow)
        weight = 1.0 - self.rate(step)
        torch._foreach_lerp_([self.shadow[n] for n in names], [params[n] for n in names], weight)

    def weights(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The model's state dict with the averaged parameters in place of its own, under
        every name they have: a tied weight (embeddings, output layer) appears under several
        names in a state dict but once in `named_parameters`."""
        first: dict[int, str] = {}
        alias = {
            name: first.setdefault(id(p), name)
            for name, p in model.named_parameters(remove_duplicate=False)
        }
        return {
            name: self.shadow[alias[name]] if alias.get(name) in self.shadow else value
            for name, value in model.state_dict().items()
        }

    @contextlib.contextmanager
    def applied(self, model: nn.Module) -> Iterator[None]:
        """Inside the block the model holds the averaged weights; its own come back after."""
        params = dict(model.named_parameters())
        own = {name: params[name].detach().clone() for name in self.shadow}
        with torch.no_grad():
            for name, value in self.shadow.items():
                params[name].copy_(value)
        try:
            yield
        finally:
            with torch.no_grad():
                for name, value in own.items():
                    params[name].copy_(value)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.shadow)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name, value in state.items():
            self.shadow[name].copy_(value)
