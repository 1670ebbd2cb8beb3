"""Decoders: rnnenc (Cho et al. 2014) here, with what all three share; rnnsearch (Bahdanau et
al. 2015) in `rnnsearch.py`, luong (2015) in `luong.py`.

Each decoder has two paths that compute the same function:

- `forward(y_in, state)`: teacher-forced, whole target sequence (training, scoring). Everything
  that does not depend on the recurrence is hoisted out of the time loop: embeddings and their
  input projections for all steps at once, attention keys once per sentence, and the readout for
  all steps at once after the loop.
- `step(y_prev, state)`: one token for every hypothesis in the batch (search).

Both return "features" of size emb_size; `Seq2Seq.output` turns them into logits.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from nmt.model.gru import (
    GRU,
    PLAIN_GRU,
    Dropouts,
    GRUOptions,
    run_gru,
)
from nmt.model.state import DecoderState


def autocast_dtype(x: torch.Tensor) -> torch.dtype | None:
    """The dtype autocast computes in on x's device, None without autocast: the search caches
    its weights in that dtype."""
    device = x.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None


def maxout(x: torch.Tensor) -> torch.Tensor:
    """Maxout with pool size 2 over the last dimension: [..., 2K] → [..., K]."""
    return x.unflatten(-1, (-1, 2)).amax(-1)


def initial_hidden(proj: nn.Linear, source: torch.Tensor, layers: int) -> torch.Tensor:
    """tanh(W source) split into one initial state per layer: [B, D] → [L, B, H]."""
    return torch.tanh(proj(source)).unflatten(1, (layers, -1)).transpose(0, 1).contiguous()


class RNNEncDecoder(nn.Module):
    """Cho et al. (2014): a fixed summary c = tanh(V h_T) conditions every step.

    s_0 = tanh(V' c); s_i = GRU(s_{i-1}, [E y_{i-1}; c]); readout maxout(O_h s_i + O_y E y_{i-1}
    + O_c c). As c is constant over time, the whole decoder is one fused `nn.GRU` call.
    """

    def __init__(
        self,
        embed: nn.Embedding,
        enc_size: int,
        hidden: int,
        layers: int,
        dropout: Dropouts,
        options: GRUOptions = PLAIN_GRU,
    ):
        super().__init__()
        emb = embed.embedding_dim
        self.embed, self.layers = embed, layers
        self.dropout = nn.Dropout(dropout.emb)  # on the embeddings
        self.summary = nn.Linear(enc_size, hidden)  # V
        self.init = nn.Linear(hidden, layers * hidden)  # V'
        self.rnn = GRU(
            emb + hidden,
            hidden,
            layers,
            batch_first=True,
            dropout=dropout.hidden if layers > 1 else 0.0,
            options=options,
        )
        self.readout = nn.Linear(hidden + emb + hidden, 2 * emb)

    def init_state(
        self, states: torch.Tensor, final: torch.Tensor, mask: torch.Tensor
    ) -> DecoderState:
        c = torch.tanh(self.summary(final[-1]))  # [B, H] from the top layer's last state
        return DecoderState(hidden=initial_hidden(self.init, c, self.layers), context=c)

    def forward(self, y_in: torch.Tensor, state: DecoderState) -> tuple[torch.Tensor, None]:
        e = self.dropout(self.embed(y_in))  # [B, T, E]
        c = state.context.unsqueeze(1).expand(-1, e.shape[1], -1)  # [B, T, H]
        s, _ = run_gru(self.rnn, torch.cat([e, c], -1), state.hidden)  # [B, T, H]
        return maxout(self.readout(torch.cat([s, e, c], -1))), None

    def step(
        self, y_prev: torch.Tensor, state: DecoderState
    ) -> tuple[torch.Tensor, DecoderState, None]:
        e = self.dropout(self.embed(y_prev)).unsqueeze(1)  # [B, 1, E]
        c = state.context.unsqueeze(1)  # [B, 1, H]
        s, hidden = run_gru(self.rnn, torch.cat([e, c], -1), state.hidden)
        features = maxout(self.readout(torch.cat([s, e, c], -1))).squeeze(1)
        return features, dataclasses.replace(state, hidden=hidden), None
