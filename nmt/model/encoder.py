"""The GRU encoder: (bi)directional, multi-layer, over packed sequences so padding is never read."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


class Encoder(nn.Module):
    """Embeds the source and runs `nn.GRU` (cuDNN on a GPU) over the packed batch."""

    def __init__(
        self, embed: nn.Embedding, hidden: int, layers: int, dropout: float, bidirectional: bool
    ):
        super().__init__()
        self.embed = embed
        self.dropout = nn.Dropout(dropout)
        self.rnn = nn.GRU(
            embed.embedding_dim,
            hidden,
            layers,
            batch_first=True,
            dropout=dropout if layers > 1 else 0.0,
            bidirectional=bidirectional,
        )
        self.output_size = hidden * (2 if bidirectional else 1)

    def forward(
        self, src: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """src [B, S], lengths [B] → states [B, S, D*H] (zeros at padding),
        final [layers*D, B, H] (each direction's last state at each sentence's true end)."""
        x = self.dropout(self.embed(src))  # [B, S, E]
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        states, final = self.rnn(packed)
        states, _ = pad_packed_sequence(states, batch_first=True, total_length=src.shape[1])
        return states, final
