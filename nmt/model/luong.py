"""The luong decoder (Luong et al. 2015): attention after the recurrence, for all steps at once."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from nmt.model.attention import MultiplicativeAttention
from nmt.model.decoder import initial_hidden
from nmt.model.gru import (
    GRU,
    PLAIN_GRU,
    Dropouts,
    GRUOptions,
    run_gru,
)
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
            for t in range(y_in.shape[1]):
                features, state, weights = self.step(y_in[:, t], state)
                outputs.append((features, weights))
            return torch.stack([f for f, _ in outputs], 1), torch.stack([w for _, w in outputs], 1)
        s, _ = run_gru(self.rnn, self.dropout(self.embed(y_in)), state.hidden)  # [B, T, H]
        attentional, weights = self._attend(s, state)
        return self.readout(attentional), weights  # [B, T, E], [B, T, S]

    def step(
        self, y_prev: torch.Tensor, state: DecoderState
    ) -> tuple[torch.Tensor, DecoderState, torch.Tensor]:
        x = self.dropout(self.embed(y_prev)).unsqueeze(1)  # [N, 1, E]
        if self.input_feeding:
            x = torch.cat([x, state.context.unsqueeze(1)], -1)
        s, hidden = run_gru(self.rnn, x, state.hidden)  # [N, 1, H]
        grouped = s.view(state.memory.shape[0], -1, s.shape[2])  # [B, K, H]: K per sentence
        attentional, weights = (x.flatten(0, 1) for x in self._attend(grouped, state))
        feed = attentional if self.input_feeding else None  # [N, H]
        return (
            self.readout(attentional),
            dataclasses.replace(state, hidden=hidden, context=feed),
            weights,
        )
