"""The encoder-decoder: built from a config, trained with `loss`; search runs `encode`, then
`decoder.step` and `log_probs` per token."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from nmt.config import ModelConfig
from nmt.data.tokenizer import PAD_ID
from nmt.errors import NmtError
from nmt.model.decoder import RNNEncDecoder, autocast_dtype
from nmt.model.encoder import Encoder
from nmt.model.gru import Dropouts, GRUOptions
from nmt.model.int8 import output_rows
from nmt.model.loss import SmoothedCrossEntropy
from nmt.model.luong import LuongDecoder
from nmt.model.rnnsearch import RNNSearchDecoder
from nmt.model.state import DecoderState


class Seq2Seq(nn.Module):
    """Embeddings, GRU encoder, one of the three decoders, and the output layer.

    The output layer maps the decoder's emb_size features to the target vocabulary; with
    `tie_output` it shares its weight with the target embeddings (Press & Wolf 2017).
    """

    def __init__(self, cfg: ModelConfig, src_vocab: int, tgt_vocab: int, share: bool):
        super().__init__()
        emb, hidden, layers = cfg.emb_size, cfg.hidden_size, cfg.layers
        p = Dropouts(_rate(cfg.emb_dropout, cfg), cfg.dropout)
        enc_gru = GRUOptions(cfg.layer_norm, cfg.residual, cfg.enc_transition_depth)
        gru = dataclasses.replace(enc_gru, transition_depth=cfg.dec_transition_depth)
        self.cfg = cfg
        self.src_embed = nn.Embedding(src_vocab, emb, padding_idx=PAD_ID)
        self.tgt_embed = (
            self.src_embed if share else nn.Embedding(tgt_vocab, emb, padding_idx=PAD_ID)
        )
        bidirectional = cfg.arch != "rnnenc"
        self.encoder = Encoder(self.src_embed, hidden, layers, p, bidirectional, enc_gru)
        enc_size = self.encoder.output_size
        if cfg.arch == "rnnenc":
            self.decoder: nn.Module = RNNEncDecoder(
                self.tgt_embed, enc_size, hidden, layers, p, gru
            )
        elif cfg.arch == "rnnsearch":
            self.decoder = RNNSearchDecoder(
                self.tgt_embed, enc_size, hidden, hidden, layers, p, gru
            )
        else:
            self.decoder = LuongDecoder(
                self.tgt_embed, enc_size, hidden, hidden, layers, p, cfg.input_feeding, gru
            )
        self.dropout = nn.Dropout(_rate(cfg.output_dropout, cfg))  # on the output features
        self.output = nn.Linear(emb, tgt_vocab)
        if cfg.tie_output:
            self.output.weight = self.tgt_embed.weight
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Orthogonal recurrent matrices (one block per gate), Xavier elsewhere, zero biases,
        layer-norm gains of 1."""
        for name, param in self.named_parameters():
            if name.rpartition(".")[2].startswith("ln_"):
                nn.init.ones_(param)
            elif "embed" in name:
                nn.init.normal_(param, std=param.shape[1] ** -0.5)
                with torch.no_grad():
                    param[PAD_ID].zero_()
            elif "weight_hh" in name:  # [3H, H], or [D-1, 3H, H] for a deep transition's
                for block in param.data.reshape(-1, param.shape[-1]).split(param.shape[-1]):
                    nn.init.orthogonal_(block)
            elif param.dim() > 1 and "bias" not in name:
                nn.init.xavier_uniform_(param)
            else:
                nn.init.zeros_(param)

    def encode(self, src: torch.Tensor, src_lengths: torch.Tensor) -> DecoderState:
        """Run the encoder once per sentence; src [B, S], src_lengths [B] → initial state."""
        states, final = self.encoder(src, src_lengths)
        return self.decoder.init_state(states, final, src != PAD_ID)

    def search_state(self, state: DecoderState) -> DecoderState:
        """`encode`'s state as the search steps it: rnnsearch and luong project the source once
        (`RNNSearchDecoder.search_state`, `LuongDecoder.search_state`), so that sentences
        encoded apart can join a running search (`DecoderState.cat`) in the same form as those
        already in it."""
        if isinstance(self.decoder, (RNNSearchDecoder, LuongDecoder)):
            return self.decoder.search_state(state)
        return state

    def features(
        self, src: torch.Tensor, src_lengths: torch.Tensor, tgt_in: torch.Tensor
    ) -> torch.Tensor:
        """Teacher-forced decoder features [B, T, E], before the output layer."""
        features, _ = self.decoder(tgt_in, self.encode(src, src_lengths))
        return features

    def forward(
        self, src: torch.Tensor, src_lengths: torch.Tensor, tgt_in: torch.Tensor
    ) -> torch.Tensor:
        """Teacher-forced logits [B, T, V] of the next token at every target position."""
        return self.output(self.dropout(self.features(src, src_lengths, tgt_in)))

    def log_probs(
        self,
        features: torch.Tensor,
        output: Callable[[torch.Tensor], torch.Tensor] | None = None,
        penalty: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Decoder features [N, E] → next-token log-probabilities [N, V], at least float32.
        With `output`, the output layer over some target pieces alone (a shortlist's:
        `output_rows`) → [N, U], each row's softmax over its own list: `penalty` [N, U] (-inf
        outside it, else 0) added first. (The logits are cast before the softmax: a softmax that
        casts as it reads runs slower on the CPU.)"""
        logits = self.output(features) if output is None else output(features)  # [N, V or U]
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
        if penalty is not None:
            logits = logits.add_(penalty)
        return F.log_softmax(logits, -1)

    def output_rows(self, ids: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """The output layer over the target pieces `ids` [U] alone: features [N, E] → [N, U].
        Its rows are gathered here once (in the autocast dtype, if any), so a search that keeps
        the same pieces for many steps (`nmt.decode.shortlist.Lists`) does not copy them at
        every step."""
        return output_rows(self.output, ids, autocast_dtype(self.output.bias))

    def loss(
        self,
        src: torch.Tensor,
        src_lengths: torch.Tensor,
        tgt_in: torch.Tensor,
        tgt_out: torch.Tensor,
        label_smoothing: float = 0.0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(training loss, negative log-likelihood), each summed over the target tokens.

        The output layer and softmax run on real tokens only (padding rows are dropped first);
        the loss has a fused backward (see loss.py).
        """
        real = tgt_out != PAD_ID  # [B, T]
        features = self.features(src, src_lengths, tgt_in)[real]  # [N, E]
        logits = self.output(self.dropout(features))  # [N, V]
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
        return SmoothedCrossEntropy.apply(logits, tgt_out[real], label_smoothing)


def build_model(
    cfg: ModelConfig, src_vocab: int, tgt_vocab: int, joint_vocab: bool, copies: int = 1
) -> Seq2Seq:
    """The model a config describes; embeddings are shared only over a joint vocabulary.
    It is first built without memory (on the meta device) and refused if `copies` of its
    fp32 weights (training keeps 4: weights, gradients, Adam's two moments) would not fit in
    this machine's memory: an error that names the keys, not an allocator's traceback."""
    share = cfg.share_embeddings and joint_vocab
    with torch.device("meta"):
        params = count_parameters(Seq2Seq(cfg, src_vocab, tgt_vocab, share=share))
    need, have = 4 * copies * params, os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    if need > have:
        raise NmtError(
            f"this model has {params:,} parameters: {copies} fp32 cop{'ies' if copies > 1 else 'y'}"
            f" of its weights need {need / 2**30:,.1f} GiB, more than this machine's "
            f"{have / 2**30:,.1f} GiB",
            "model.hidden_size / model.emb_size / model.layers",
            "make the model smaller (the Bible recipe: emb_size 256, hidden_size 512)",
        )
    return Seq2Seq(cfg, src_vocab, tgt_vocab, share=share)


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters, each shared tensor counted once."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _rate(rate: float, cfg: ModelConfig) -> float:
    """A dropout rate that may follow model.dropout (-1)."""
    return cfg.dropout if rate < 0 else rate
