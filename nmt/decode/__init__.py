"""Decoding: one search for validation, `nmt translate`, `nmt score` and the server.

Both searches run every sentence (and, for beam search, every beam) of a batch as one tensor per
step. The encoder runs once per sentence; sentences that are done leave the batch, so the tensors
shrink as decoding goes on. A sentence may produce at most `max_len = a * src_len + b` tokens
before eos; at that step eos is the only token allowed, so every hypothesis ends with eos and its
score includes eos's log-probability.

- `ensemble`: one decoder step of one model or several (`Ensemble.topk`), which every search uses;
- `rules`: what each row may emit at a step (length limit, constraints, forced prefix);
- `constraints`: placeholders that must appear exactly once; `sampling`: seeded draws;
- `greedy`: greedy search and sampling; `beam`: batched beam search with continuous batching;
- `hypothesis`: what a search returns, and the length penalty that normalises its score.
"""

from nmt.decode.beam import BeamBatch, beam_search
from nmt.decode.constraints import Constraints
from nmt.decode.greedy import greedy_search
from nmt.decode.hypothesis import PENALTIES, Hypothesis, length_penalty
from nmt.decode.sampling import Sampler

__all__ = [
    "PENALTIES",
    "BeamBatch",
    "Constraints",
    "Hypothesis",
    "Sampler",
    "beam_search",
    "greedy_search",
    "length_penalty",
]
