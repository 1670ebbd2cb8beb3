"""The search's step compiled by `torch.compile` (`nmt translate --compile`).

A beam step runs a few hundred small PyTorch operators (the GRU's gates, int8's quantising and
scaling, the attention's softmax); inductor fuses them into a few generated kernels, called
once per step. On the Bible models in int8 with the shortlist, one core: `luong` 1.07x at
batches of 20,000 tokens and 1.16x one sentence at a time, `rnnsearch` 1.08x batched, after
a one-off compile of 23-27 s (about 6 s once inductor's cache holds it;
docs/notes/2026-12-05-search-speed-bound.md). Shapes are dynamic (rows and source width change
at every step): three graphs, the first step's and one on each side of `fast_tanh`'s switch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from nmt.model.seq2seq import Seq2Seq

BACKEND: Any = "inductor"  # torch.compile's backend (a test swaps in one that fails)


class Compiled:
    """`fn` compiled on its first call; if compiling fails (no C++ compiler, a full disk under
    inductor's cache), a warning and `fn` as it is from then on: a translation never fails for
    want of a compiler."""

    def __init__(self, fn: Callable, name: str, warn: Callable[[str], None]):
        self.eager, self.name, self.warn = fn, name, warn
        self.compiled: Callable | None = torch.compile(fn, dynamic=True, backend=BACKEND)
        # loaded by torch.compile (not at this module's import, which every translation makes)
        from torch._dynamo.exc import BackendCompilerFailed

        # raised before anything ran: the compiler failed, or writing inductor's cache did
        self.failures = (BackendCompilerFailed, OSError)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.compiled is not None:
            try:
                return self.compiled(*args, **kwargs)
            except self.failures as error:
                self._give_up(getattr(error, "inner_exception", error))
        return self.eager(*args, **kwargs)

    def _give_up(self, cause: BaseException) -> None:
        self.compiled = None
        self.warn(
            f"warning: could not compile {self.name} ({cause!r}); translating without --compile"
        )


def compile_search(model: Seq2Seq, warn: Callable[[str], None]) -> Seq2Seq:
    """`model` (in place) with its decoder's `step` compiled. For translation only: training
    does not go through it. (Not the output layer: with a shortlist its weights are the
    batch's union, whose size would be compiled anew for every batch.)"""
    decoder = model.decoder
    decoder.step = Compiled(decoder.step, "the decoder's step", warn)  # type: ignore[method-assign]
    return model
