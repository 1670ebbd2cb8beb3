"""The search's hot path compiled by `torch.compile` (`nmt translate --compile`).

A beam step runs a few hundred small PyTorch operators (the GRU's gates, int8's quantising and
scaling, the attention's softmax); inductor fuses them into a few generated kernels and calls
them once per step. On the recipe's `luong` in int8 with the shortlist that made translation
1.11x faster, for a one-off compile of about 30 s on one core (a few seconds once inductor's
cache holds it); `rnnsearch` gained 1.06x (docs/notes/2026-12-05-search-speed-bound.md).
Shapes are dynamic: rows, source width and shortlist change at every step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch._dynamo.exc import BackendCompilerFailed

from nmt.model.seq2seq import Seq2Seq

BACKEND: Any = "inductor"  # torch.compile's backend (a test swaps in one that fails)


class Compiled:
    """`fn` compiled on its first call; if compiling fails (no C++ compiler, say), a warning
    and `fn` as it is from then on, so a translation never fails for want of a compiler."""

    def __init__(self, fn: Callable, name: str, warn: Callable[[str], None]):
        self.eager, self.name, self.warn = fn, name, warn
        self.compiled: Callable | None = torch.compile(fn, dynamic=True, backend=BACKEND)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.compiled is not None:
            try:
                return self.compiled(*args, **kwargs)
            except BackendCompilerFailed as error:  # raised before anything ran
                self.compiled = None
                self.warn(
                    f"warning: could not compile {self.name} ({error.inner_exception!r}); "
                    "translating without --compile"
                )
        return self.eager(*args, **kwargs)


def compile_search(model: Seq2Seq, warn: Callable[[str], None]) -> Seq2Seq:
    """`model` (in place) with its decoder's `step` compiled. For translation only: training
    does not go through it. (Not the output layer: with a shortlist its weights are the
    batch's union, whose size would be compiled anew for every batch.)"""
    decoder = model.decoder
    decoder.step = Compiled(decoder.step, "the decoder's step", warn)  # type: ignore[method-assign]
    return model
