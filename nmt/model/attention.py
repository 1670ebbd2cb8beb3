"""Attention over encoder states: additive (Bahdanau et al. 2015) and multiplicative (Luong).

Both split the work so that what depends only on the source (the keys) is computed once per
sentence, outside the decoder's time loop.
"""

from __future__ import annotations

import torch
from torch import nn


class AdditiveAttention(nn.Module):
    """e_ij = v · tanh(W_a s_{i-1} + U_a h_j); the query projection W_a is applied by the caller.

    The rnnsearch decoder fuses W_a with the GRU's recurrent matrix into one product per step,
    so this module exposes `query` (W_a) but takes already-projected queries.
    """

    def __init__(self, query_size: int, memory_size: int, attn_size: int):
        super().__init__()
        self.query = nn.Linear(query_size, attn_size, bias=False)  # W_a
        self.key = nn.Linear(memory_size, attn_size)  # U_a (its bias acts as the attention bias)
        self.v = nn.Linear(attn_size, 1, bias=False)

    def keys(self, memory: torch.Tensor) -> torch.Tensor:
        """[B, S, M] → [B, S, A], once per sentence."""
        return self.key(memory)

    def weights(
        self, query_proj2: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """query_proj2 [N, A] = 2 W_a s with N = B*K: K consecutive queries per sentence (the
        beams of a sentence share its source), keys [B, S, A], mask [B, S] (True = real token)
        → weights [B, K, S].

        v · tanh(x) is computed as 2 v · σ(2x): tanh(x) = 2σ(2x) - 1, the constant -Σv drops out
        of the softmax, and σ is much faster than tanh on the CPU. The query comes doubled (the
        rnnsearch search doubles W_a in its cached weights, an exact scaling), so that
        2(keys + query) is one pass."""
        # in the keys' dtype: an int8 step's float32 query would make [B, K, S, A] float32,
        # twice the memory traffic of bf16 in the step's largest elementwise work
        queries2 = query_proj2.to(keys.dtype).view(keys.shape[0], -1, 1, query_proj2.shape[-1])
        hidden = torch.add(queries2, keys.unsqueeze(1), alpha=2).sigmoid_()  # [B, K, S, A]
        scores = self.v(hidden).squeeze(3).mul_(2)  # [B, K, S]
        return torch.softmax(scores.masked_fill(~mask.unsqueeze(1), float("-inf")), dim=2)

    def forward(
        self, query_proj: torch.Tensor, keys: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """As `weights`, with memory [B, S, M] → context [N, M], weights [N, S]."""
        weights = self.weights(2 * query_proj, keys, mask)  # [B, K, S]
        context = torch.bmm(weights.to(memory.dtype), memory)  # [B, K, M]
        return context.flatten(0, 1), weights.flatten(0, 1)


class MultiplicativeAttention(nn.Module):
    """Luong et al. (2015) "general" score: e_ij = s_i · W h_j, for many queries at once."""

    def __init__(self, query_size: int, memory_size: int):
        super().__init__()
        self.key = nn.Linear(memory_size, query_size, bias=False)  # W, applied to the memory

    def keys(self, memory: torch.Tensor) -> torch.Tensor:
        """[B, S, M] → [B, S, Q], once per sentence."""
        return self.key(memory)

    def forward(
        self, queries: torch.Tensor, keys: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """queries [B, T, Q], keys [B, S, Q], memory [B, S, M], mask [B, S]
        → context [B, T, M], weights [B, T, S]."""
        weights = self.weights(queries, keys, mask)
        return torch.bmm(weights, memory), weights

    def weights(
        self, queries: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """The attention weights [B, T, S] alone (as `forward`)."""
        scores = torch.bmm(queries, keys.transpose(1, 2))  # [B, T, S]
        return torch.softmax(scores.masked_fill(~mask.unsqueeze(1), float("-inf")), dim=2)
