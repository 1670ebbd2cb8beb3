"""The GRU encoder: (bi)directional, multi-layer; padding is never read (packed or masked)."""

from __future__ import annotations

import torch
from torch import nn

from nmt.model.gru import GRU, PLAIN_GRU, Dropouts, GRUOptions, run_gru


class Encoder(nn.Module):
    """Embeds the source and runs the GRU over it (`gru.run_gru`: cuDNN on a GPU, packed, unless
    the GRU options need nmt's own kernel)."""

    def __init__(
        self,
        embed: nn.Embedding,
        hidden: int,
        layers: int,
        dropout: Dropouts,
        bidirectional: bool,
        options: GRUOptions = PLAIN_GRU,
    ):
        super().__init__()
        self.embed = embed
        self.dropout = nn.Dropout(dropout.emb)  # on the embeddings
        self.rnn = GRU(
            embed.embedding_dim,
            hidden,
            layers,
            batch_first=True,
            dropout=dropout.hidden if layers > 1 else 0.0,
            bidirectional=bidirectional,
            options=options,
        )
        self.output_size = hidden * (2 if bidirectional else 1)

    def forward(
        self, src: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """src [B, S], lengths [B] → states [B, S, D*H] (zeros at padding),
        final [layers*D, B, H] (each direction's last state at each sentence's true end)."""
        x = self.dropout(self.embed(src))  # [B, S, E]
        positions = torch.arange(src.shape[1], device=src.device)
        mask = positions.unsqueeze(0) < lengths.to(src.device).unsqueeze(1)  # [B, S]
        return run_gru(self.rnn, x, None, mask)
