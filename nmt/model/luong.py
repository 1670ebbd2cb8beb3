"""The luong decoder (Luong et al. 2015): attention after the recurrence, for all steps at once."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from nmt.model.attention import MultiplicativeAttention
from nmt.model.decoder import autocast_dtype, initial_hidden
from nmt.model.gru import (
    GRU,
    PLAIN_GRU,
    Dropouts,
    GRUOptions,
    fast_tanh,
    run_gru,
)
from nmt.model.int8 import Linear, split_inputs
from nmt.model.state import DecoderState


class LuongDecoder(nn.Module):
    """Luong et al. (2015) with the "general" score: attention after the recurrence.

    s_i = GRU(s_{i-1}, E y_{i-1}) runs fused over the whole target; then for all steps at once
    α_i = softmax(s_i W H^T), c_i = α_i H, and the attentional state h̃_i = tanh(W_c [c_i; s_i])
    (hidden-sized, as in the paper). A linear readout R h̃_i gives the output feature in the
    embedding space of the (tied) output layer. Without R, a tanh-bounded feature of emb_size
    times the small tied embeddings gives small logits, and learning stalls near the unigram
    level (measured on the Bible corpus: docs/results.md). With input feeding, h̃_{i-1} joins
    the GRU input, which makes the decoder sequential again.
    """

    def __init__(
        self,
        embed: nn.Embedding,
        enc_size: int,
        enc_hidden: int,
        hidden: int,
        layers: int,
        dropout: Dropouts,
        input_feeding: bool,
        options: GRUOptions = PLAIN_GRU,
    ):
        super().__init__()
        emb = embed.embedding_dim
        self.embed, self.layers, self.input_feeding = embed, layers, input_feeding
        self.dropout = nn.Dropout(dropout.emb)  # on the embeddings
        self.init = nn.Linear(enc_hidden, layers * hidden)
        self.rnn = GRU(
            emb + (hidden if input_feeding else 0),
            hidden,
            layers,
            batch_first=True,
            dropout=dropout.hidden if layers > 1 else 0.0,
            options=options,
        )
        self.attention = MultiplicativeAttention(hidden, enc_size)
        self.combine = nn.Linear(enc_size + hidden, hidden)  # W_c
        self.readout = nn.Linear(hidden, emb)  # R

    def init_state(
        self, states: torch.Tensor, final: torch.Tensor, mask: torch.Tensor
    ) -> DecoderState:
        hidden = initial_hidden(self.init, final[-1], self.layers)
        feed = states.new_zeros(states.shape[0], self.combine.out_features)
        return DecoderState(
            hidden=hidden,
            memory=states,
            keys=self.attention.keys(states),
            mask=mask,
            context=feed if self.input_feeding else None,
        )

    def _attend(self, s: torch.Tensor, state: DecoderState) -> tuple[torch.Tensor, torch.Tensor]:
        """s [B, T, H] → attentional states h̃ [B, T, H], weights [B, T, S]."""
        context, weights = self.attention(s, state.keys, state.memory, state.mask)
        return torch.tanh(self.combine(torch.cat([context, s], -1))), weights

    def forward(self, y_in: torch.Tensor, state: DecoderState) -> tuple[torch.Tensor, torch.Tensor]:
        if self.input_feeding:
            outputs = []
            for t in range(y_in.shape[1]):  # differentiable in W_c (`step` is the search's)
                s, hidden = self._recur(y_in[:, t], state)  # [B, 1, H]
                attentional, weights = (x.squeeze(1) for x in self._attend(s, state))
                features, state = self._out(attentional, state, hidden)
                outputs.append((features, weights))
            return torch.stack([f for f, _ in outputs], 1), torch.stack([w for _, w in outputs], 1)
        s, _ = run_gru(self.rnn, self.dropout(self.embed(y_in)), state.hidden)  # [B, T, H]
        attentional, weights = self._attend(s, state)
        return self.readout(attentional), weights  # [B, T, E], [B, T, S]

    def search_state(self, state: DecoderState) -> DecoderState:
        """The state `step` works on: the source states projected once by the context columns
        of W_c, source_proj [B, S, H], in place of memory, which it does not read again."""
        context_part, _ = self._combine_parts(autocast_dtype(state.memory))
        projected = context_part(state.memory).to(state.memory.dtype)
        return dataclasses.replace(state, source_proj=projected, memory=None)

    def _combine_parts(self, dtype: torch.dtype | None) -> tuple[Linear, Linear]:
        """W_c [c; s] + b split by its input columns: (c ↦ W_cc c, s ↦ W_cs s + b), in `dtype`
        if given. Cached until the weight changes or `train`/`eval` is called (as
        `RNNSearchDecoder._search_weights`)."""
        weight = getattr(self.combine, "weight", None)
        key = (
            dtype,
            id(self.combine),
            *(() if weight is None else (weight.data_ptr(), weight._version)),
        )
        if getattr(self, "_combine_key", None) != key:
            context_size = self.attention.key.in_features
            self._combine_cache = split_inputs(self.combine, context_size, dtype)
            self._combine_key = key
        return self._combine_cache

    def train(self, mode: bool = True) -> LuongDecoder:
        """Also forget the split W_c (see `RNNSearchDecoder.train`)."""
        self._combine_key = None
        return super().train(mode)

    def step(
        self, y_prev: torch.Tensor, state: DecoderState
    ) -> tuple[torch.Tensor, DecoderState, torch.Tensor]:
        """One step for N = B*K hypotheses (K per sentence). As c_i = Σ_j α_ij h_j with
        Σ_j α_ij = 1, W_cc c_i = Σ_j α_ij (W_cc h_j): the source comes projected once per
        sentence (`search_state`), and each step mixes H-wide projections instead of the 2H-wide
        states and skips W_cc's product (for luong 256/512 two thirds of W_c's)."""
        if state.source_proj is None:
            state = self.search_state(state)
        s, hidden = self._recur(y_prev, state)  # [N, 1, H]
        grouped = s.view(state.source_proj.shape[0], -1, s.shape[2])  # [B, K, H]: K per sentence
        weights = self.attention.weights(grouped, state.keys, state.mask)  # [B, K, S]
        mixed = torch.bmm(weights.to(state.source_proj.dtype), state.source_proj)  # [B, K, H]
        _, state_part = self._combine_parts(autocast_dtype(mixed))
        attentional = fast_tanh(mixed.flatten(0, 1) + state_part(s.squeeze(1)))  # [N, H]
        features, state = self._out(attentional, state, hidden)
        return features, state, weights.flatten(0, 1)

    def _recur(
        self, y_prev: torch.Tensor, state: DecoderState
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The GRU's step on y_prev [N] (and the fed h̃): s [N, 1, H], the new hidden."""
        x = self.dropout(self.embed(y_prev)).unsqueeze(1)  # [N, 1, E]
        if self.input_feeding:
            x = torch.cat([x, state.context.unsqueeze(1)], -1)
        return run_gru(self.rnn, x, state.hidden)

    def _out(
        self, attentional: torch.Tensor, state: DecoderState, hidden: torch.Tensor
    ) -> tuple[torch.Tensor, DecoderState]:
        """The step's features [N, E] from h̃ [N, H], and its state."""
        feed = attentional if self.input_feeding else None
        return self.readout(attentional), dataclasses.replace(state, hidden=hidden, context=feed)
