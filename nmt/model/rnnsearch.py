"""The rnnsearch decoder (Bahdanau et al. 2015): additive attention recomputed at every step."""

from __future__ import annotations

import dataclasses
import functools

import torch
import torch.nn.functional as F
from torch import nn

from nmt.model.attention import AdditiveAttention
from nmt.model.attention_gru import AttentionGRU
from nmt.model.decoder import autocast_dtype, initial_hidden, maxout
from nmt.model.gru import (
    GRU,
    PLAIN_GRU,
    Dropouts,
    GRUOptions,
    TransitionCells,
    gru_step,
    layer_norm,
    normed,
    projection,
    run_gru,
)
from nmt.model.int8 import Int8Linear, Linear
from nmt.model.state import DecoderState


class RNNSearchDecoder(nn.Module):
    """Bahdanau et al. (2015): additive attention recomputed at every step.

    s_0 = tanh(W_s h_1^←) (the backward encoder's state at the first word);
    c_i = Σ_j α_ij h_j with α_i = softmax_j(v · tanh(W_a s_{i-1} + U_a h_j));
    s_i = GRU(s_{i-1}, [E y_{i-1}; c_i]); readout maxout(U_o s_i + V_o E y_{i-1} + C_o c_i)
    (eq. 4 of the paper: the output depends on s_i, y_{i-1} and c_i). With more than one layer,
    the layers above the first run after the loop as one fused `nn.GRU` (they do not feed the
    attention), so only the first layer is sequential.

    Per step the loop does one matrix product of s_{i-1} with [W_a; U] (attention query and all
    three GRU gates fused), the attention, and one product of c_i with the GRU's context columns;
    the embedding half of the GRU input projection is computed for all steps before the loop.

    With layer norm the first layer normalises its three projections apart, each with its gain
    (as Nematus does for each input of its conditional GRU): γ_y ⊙ LN(W_y E y) + b_ih (still for
    all steps before the loop), γ_c ⊙ LN(W_c c_i) and γ_h ⊙ LN(U s_{i-1}) + b_hh; the attention
    query W_a s_{i-1} is not normalised. With a deep transition, s_i goes on through cells 2..D
    (`gru.TransitionCells`) before it is the step's state.
    """

    def __init__(
        self,
        embed: nn.Embedding,
        enc_size: int,
        enc_hidden: int,
        hidden: int,
        layers: int,
        dropout: Dropouts,
        options: GRUOptions = PLAIN_GRU,
    ):
        super().__init__()
        emb = embed.embedding_dim
        self.embed, self.layers, self.emb_size = embed, layers, emb
        self.dropout = nn.Dropout(dropout.emb)  # on the embeddings
        self.hidden_dropout = nn.Dropout(dropout.hidden)  # into the upper layers
        self.init = nn.Linear(enc_hidden, layers * hidden)  # W_s
        self.attention = AdditiveAttention(hidden, enc_size, hidden)
        self.cell = nn.GRUCell(emb + enc_size, hidden)
        for name in ("ln_y", "ln_c", "ln_h"):  # the layer-norm gains of W_y E y, W_c c, U s
            self.register_parameter(
                name, nn.Parameter(torch.ones(3 * hidden)) if options.layer_norm else None
            )
        self.transition = (  # a deep transition's cells 2..D after `cell`
            TransitionCells(hidden, options.transition_depth, options.layer_norm)
            if options.transition_depth > 1
            else None
        )
        self.upper = (
            GRU(
                hidden,
                hidden,
                layers - 1,
                batch_first=True,
                dropout=dropout.hidden if layers > 2 else 0.0,
                options=options,
                residual_from=0,  # its input is the first layer's state
            )
            if layers > 1
            else None
        )
        self.readout = nn.Linear(hidden + emb + enc_size, 2 * emb)
        self.fused_recurrence = True  # False: differentiate the loop op by op (reference)
        self.int8 = False  # the search's products in int8 (`nmt.model.int8.quantize`)

    def init_state(
        self, states: torch.Tensor, final: torch.Tensor, mask: torch.Tensor
    ) -> DecoderState:
        hidden = initial_hidden(self.init, final[-1], self.layers)  # final[-1]: top backward
        return DecoderState(
            hidden=hidden, memory=states, keys=self.attention.keys(states), mask=mask
        )

    def _fused(
        self, dtype: torch.dtype | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Weights regrouped for the loop: W_y, W_c (GRU input columns), [W_a; U], its bias."""
        if torch.is_grad_enabled():
            return self._regroup()
        return self._search_weights(dtype)[:4]

    def _regroup(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        w_y, w_c = self.cell.weight_ih.split(
            [self.emb_size, self.cell.input_size - self.emb_size], dim=1
        )
        recurrent = torch.cat([self.attention.query.weight, self.cell.weight_hh])  # [A+3H, H]
        bias = torch.cat(
            [self.cell.bias_hh.new_zeros(self.attention.query.out_features), self.cell.bias_hh]
        )
        return w_y, w_c, recurrent, bias

    def _search_weights(self, dtype: torch.dtype | None) -> tuple[torch.Tensor, ...]:
        """`_fused`'s weights, then the readout's [top; embedding] columns, [W_c; C_o] (the
        matrix that multiplies the context in both the GRU input and the readout) and [2 W_a; U]
        (the doubled query `AdditiveAttention.weights` takes); cast to `dtype` if given. Cached
        until a weight changes or `train`/`eval` is called: regrouping them anew at every
        decoding step cost more than the step itself."""
        params = (self.cell.weight_ih, self.cell.weight_hh, self.cell.bias_hh, self.readout.weight)
        key = (dtype, *((p.data_ptr(), p._version) for p in (*params, self.attention.query.weight)))
        if getattr(self, "_search_key", None) != key:
            w_y, w_c, recurrent, bias = self._regroup()
            enc_size = self.attention.key.in_features
            w_top_e, c_o = self.readout.weight.split(
                [self.readout.in_features - enc_size, enc_size], dim=1
            )
            attn_size = self.attention.query.out_features
            doubled = torch.cat([2 * recurrent[:attn_size], recurrent[attn_size:]])  # [2 W_a; U]
            weights = (w_y, w_c, recurrent, bias, w_top_e, torch.cat([w_c, c_o]), doubled)
            self._search_cache = tuple(w.contiguous().to(dtype or w.dtype) for w in weights)
            self._search_key = key
        return self._search_cache

    def train(self, mode: bool = True) -> RNNSearchDecoder:
        """Also forget the cached search weights: fused optimizers update parameters in place
        without bumping their version, so the cache key alone would not see a training step
        and validation would decode with stale weights."""
        self._search_key = None
        return super().train(mode)

    def _upper(self, s: torch.Tensor, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Layers 2..L over first-layer states s [B, T, H] → top states, their last hidden."""
        return run_gru(self.upper, self.hidden_dropout(s), hidden)

    def forward(self, y_in: torch.Tensor, state: DecoderState) -> tuple[torch.Tensor, torch.Tensor]:
        e = self.dropout(self.embed(y_in))  # [B, T, E]
        w_y, w_c, recurrent, bias = self._fused()
        gi_y = projection(e, w_y, self.cell.bias_ih, self.ln_y)  # [B, T, 3H], all steps at once
        device = gi_y.device.type
        autocast = torch.is_autocast_enabled(device)
        if not self.fused_recurrence or (autocast and device != "cpu"):
            top, context, weights = self.recurrence(gi_y, state, w_c, recurrent, bias)
        else:  # the same recurrence with a hand-written backward (attention_gru.py)
            v = self.attention.v.weight.squeeze(0)
            mm_dtype = torch.get_autocast_dtype(device) if autocast else recurrent.dtype
            with torch.autocast(device, enabled=False):  # float32 state, products in mm_dtype
                inputs = (gi_y.transpose(0, 1), state.hidden[0], state.keys, state.memory)
                gi_t, s0, keys, memory = (x.to(recurrent.dtype).contiguous() for x in inputs)
                deep = (None,) * 4 if self.transition is None else self.transition.params()
                outputs = AttentionGRU.apply(
                    gi_t,
                    s0,
                    keys,
                    memory,
                    state.mask,
                    recurrent,
                    bias,
                    w_c,
                    v,
                    mm_dtype,
                    self.ln_h,
                    self.ln_c,
                    *deep,
                )
            top, context, weights = (x.transpose(0, 1) for x in outputs)
        if self.upper is not None:
            top, _ = self._upper(top, state.hidden[1:])
        return maxout(self.readout(torch.cat([top, e, context], -1))), weights

    def recurrence(
        self,
        gi_y: torch.Tensor,
        state: DecoderState,
        w_c: torch.Tensor,
        recurrent: torch.Tensor,
        bias: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The first layer over all steps, differentiated by autograd (the reference path;
        used under autocast). gi_y [B, T, 3H] → states [B, T, H], contexts [B, T, M],
        weights [B, T, S]."""
        s = state.hidden[0]  # [B, H]
        split = [recurrent.shape[0] - 3 * s.shape[1], 3 * s.shape[1]]  # attention query, gates
        layer = functools.partial(
            F.linear, weight=recurrent, bias=None if self.ln_h is not None else bias
        )
        states, contexts, weights = [], [], []
        # unbind, not gi_y[:, t]: the backward of T slices would build T full-size gradients
        for gi_t in gi_y.unbind(1):
            query, gh = self._recurrent(s, layer, split)
            context, alpha = self.attention(query, state.keys, state.memory, state.mask)
            s = gru_step(gi_t + self._context_gates(F.linear(context, w_c)), gh, s)  # [B, H]
            s = self._transition(s)
            states.append(s)
            contexts.append(context)
            weights.append(alpha)
        return torch.stack(states, 1), torch.stack(contexts, 1), torch.stack(weights, 1)

    def _recurrent(
        self, s: torch.Tensor, layer: Linear, split: list[int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """[W_a; U] s (`layer`: + [0; b_hh] without layer norm, no bias with it) split into
        the attention query and the gates' U s + b_hh, γ_h ⊙ LN(U s) + b_hh with layer norm."""
        query, gh = layer(s).split(split, 1)  # the query's bias is 0
        return query, normed(gh, self.ln_h, self.cell.bias_hh)

    def _context_gates(self, u_c: torch.Tensor) -> torch.Tensor:
        """The context's share of the gates' input, W_c c (γ_c ⊙ LN(W_c c) with layer norm)."""
        return u_c if self.ln_c is None else layer_norm(u_c, self.ln_c, None)

    def _transition(self, s: torch.Tensor) -> torch.Tensor:
        """s through a deep transition's cells 2..D (as it is without one)."""
        return s if self.transition is None else self.transition(s)

    def search_state(self, state: DecoderState) -> DecoderState:
        """The state `step` works on: the source projected once, source_proj [B, S, 3H + 2E]
        (see `step`), in place of memory, which it does not read again."""
        project = self._search_layers(autocast_dtype(state.memory))[3]
        projected = project(state.memory).to(state.memory.dtype)
        return dataclasses.replace(state, source_proj=projected, memory=None)

    def _search_layers(self, dtype: torch.dtype | None) -> tuple[Linear, Linear, Linear, Linear]:
        """The step's products as layers: E y ↦ W_y E y (+ b_ih), s ↦ [2 W_a; U] s (+ [0; b_hh]),
        [top; E y] ↦ the readout's columns for them + b_o, and h ↦ [W_c; C_o] h (once per
        source state); a bias only where no layer norm follows. From `_search_weights`, in
        `dtype`; int8 ones (`nmt.model.int8`) once `int8` is set, kept with them."""
        w_y, _, _, bias, w_top_e, w_context, doubled = self._search_weights(
            None if self.int8 else dtype
        )
        parts = (
            (w_y, None if self.ln_y is not None else self.cell.bias_ih),
            (doubled, None if self.ln_h is not None else bias),
            (w_top_e, self.readout.bias),
            (w_context, None),
        )
        if not self.int8:
            return tuple(functools.partial(F.linear, weight=w, bias=b) for w, b in parts)
        if getattr(self, "_int8_key", None) != self._search_key:
            self._int8_layers = tuple(Int8Linear.of(w, b) for w, b in parts)
            self._int8_key = self._search_key
        return self._int8_layers

    def step(
        self, y_prev: torch.Tensor, state: DecoderState
    ) -> tuple[torch.Tensor, DecoderState, torch.Tensor]:
        """One step for N = B*K hypotheses (K per sentence; see DecoderState).

        The context enters the step only through products W_c c_i (GRU input) and C_o c_i
        (readout). As c_i = Σ_j α_ij h_j with Σ_j α_ij = 1, W c_i = Σ_j α_ij (W h_j): the source
        states are projected once per sentence (`source_proj`) and each step mixes those
        projections with its attention weights, S multiply-adds per output instead of M = 2H
        (for rnnsearch 256/512 this removes ~40% of a step's products)."""
        e = self.dropout(self.embed(y_prev))  # [N, E]
        embedded, recurrent, readout_layer, _ = self._search_layers(autocast_dtype(e))
        if state.source_proj is None:
            state = self.search_state(state)
        s = state.hidden[0]  # [N, H]
        hidden_size = s.shape[1]
        split = [self.attention.query.out_features, 3 * hidden_size]
        query2, gh = self._recurrent(s, recurrent, split)  # the query doubled
        alpha = self.attention.weights(query2, state.keys, state.mask)  # [B, K, S]
        mixed = torch.bmm(alpha.to(state.source_proj.dtype), state.source_proj)  # [B, K, 3H+2E]
        u_c, readout_c = mixed.flatten(0, 1).split([3 * hidden_size, self.readout.out_features], 1)
        gi = normed(embedded(e), self.ln_y, self.cell.bias_ih) + self._context_gates(u_c)
        s = self._transition(gru_step(gi, gh, s))  # [N, H]
        top, hidden = s, s.unsqueeze(0)
        if self.upper is not None:
            out, upper_hidden = self._upper(s.unsqueeze(1), state.hidden[1:])
            top, hidden = out.squeeze(1), torch.cat([hidden, upper_hidden])
        readout = readout_layer(torch.cat([top, e], -1)) + readout_c
        return maxout(readout), dataclasses.replace(state, hidden=hidden), alpha.flatten(0, 1)
