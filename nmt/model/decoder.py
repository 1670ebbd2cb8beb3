"""Decoders: rnnenc (Cho et al. 2014), rnnsearch (Bahdanau et al. 2015) and luong (2015).

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
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from nmt.model.attention import AdditiveAttention, MultiplicativeAttention
from nmt.model.attention_gru import AttentionGRU
from nmt.model.gru import (
    GRU,
    PLAIN_GRU,
    GRUOptions,
    TransitionCells,
    gru_step,
    layer_norm,
    projection,
    run_gru,
)


@dataclass
class DecoderState:
    """What a decoder carries from step to step.

    The target side (hidden, context) has one row per hypothesis (batch dimension 1 for hidden,
    0 for context); the source side (memory, keys, mask, source_proj) one row per sentence. In
    beam search a sentence's K hypotheses are K consecutive rows, all attending to its one
    source row, so reordering beams never copies the source.
    """

    hidden: torch.Tensor  # [L, N, H]
    memory: torch.Tensor | None = None  # [B, S, M] encoder states
    keys: torch.Tensor | None = None  # [B, S, A] attention keys
    mask: torch.Tensor | None = None  # [B, S] True at real source tokens
    context: torch.Tensor | None = None  # rnnenc: summary c [N, H]; luong feed h̃: [N, H]
    source_proj: torch.Tensor | None = None  # rnnsearch search: [B, S, 3H + 2E], see step

    def select(self, index: torch.Tensor, sources: torch.Tensor | None = None) -> DecoderState:
        """The hypotheses `index` [N'] (beam reordering) of the sentences `sources` [B'], or of
        all sentences when None."""
        hidden = self.hidden.index_select(1, index)
        context = None if self.context is None else self.context.index_select(0, index)
        if sources is None:
            return dataclasses.replace(self, hidden=hidden, context=context)
        memory, keys, mask, source_proj = (
            None if x is None else x.index_select(0, sources)
            for x in (self.memory, self.keys, self.mask, self.source_proj)
        )
        return DecoderState(hidden, memory, keys, mask, context, source_proj)

    def fit_source(self, width: int) -> DecoderState:
        """The source side padded (masked out) or cut to `width` positions, so that sentences
        of other lengths can join the batch (`cat`)."""
        memory, keys, source_proj = (
            None if x is None else resize(x, 1, width, 0.0)
            for x in (self.memory, self.keys, self.source_proj)
        )
        mask = None if self.mask is None else resize(self.mask, 1, width, False)
        return DecoderState(self.hidden, memory, keys, mask, self.context, source_proj)

    @staticmethod
    def cat(states: Sequence[DecoderState]) -> DecoderState:
        """The hypotheses and sentences of several states, in order, as one state; their
        source sides must have one width (`fit_source`)."""

        def join(name: str, dim: int) -> torch.Tensor | None:
            parts = [getattr(s, name) for s in states]
            return None if parts[0] is None else torch.cat(parts, dim)

        names = ("memory", "keys", "mask", "context", "source_proj")
        return DecoderState(join("hidden", 1), **{name: join(name, 0) for name in names})


def resize(x: torch.Tensor, dim: int, size: int, value: float | bool) -> torch.Tensor:
    """x cut, or padded with `value`, to `size` along `dim`."""
    if x.shape[dim] >= size:
        return x.narrow(dim, 0, size)
    shape = list(x.shape)
    shape[dim] = size - x.shape[dim]
    return torch.cat([x, x.new_full(shape, value)], dim)


def _autocast_dtype(x: torch.Tensor) -> torch.dtype | None:
    """The dtype autocast computes in on x's device, None without autocast: the search caches
    its weights in that dtype."""
    device = x.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None


def maxout(x: torch.Tensor) -> torch.Tensor:
    """Maxout with pool size 2 over the last dimension: [..., 2K] → [..., K]."""
    return x.unflatten(-1, (-1, 2)).amax(-1)


def _initial_hidden(proj: nn.Linear, source: torch.Tensor, layers: int) -> torch.Tensor:
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
        dropout: float,
        options: GRUOptions = PLAIN_GRU,
    ):
        super().__init__()
        emb = embed.embedding_dim
        self.embed, self.layers = embed, layers
        self.dropout = nn.Dropout(dropout)
        self.summary = nn.Linear(enc_size, hidden)  # V
        self.init = nn.Linear(hidden, layers * hidden)  # V'
        self.rnn = GRU(
            emb + hidden,
            hidden,
            layers,
            batch_first=True,
            dropout=dropout if layers > 1 else 0.0,
            options=options,
        )
        self.readout = nn.Linear(hidden + emb + hidden, 2 * emb)

    def init_state(
        self, states: torch.Tensor, final: torch.Tensor, mask: torch.Tensor
    ) -> DecoderState:
        c = torch.tanh(self.summary(final[-1]))  # [B, H] from the top layer's last state
        return DecoderState(hidden=_initial_hidden(self.init, c, self.layers), context=c)

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
        dropout: float,
        options: GRUOptions = PLAIN_GRU,
    ):
        super().__init__()
        emb = embed.embedding_dim
        self.embed, self.layers, self.emb_size = embed, layers, emb
        self.dropout = nn.Dropout(dropout)
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
                dropout=dropout if layers > 2 else 0.0,
                options=options,
                residual_from=0,  # its input is the first layer's state
            )
            if layers > 1
            else None
        )
        self.readout = nn.Linear(hidden + emb + enc_size, 2 * emb)
        self.fused_recurrence = True  # False: differentiate the loop op by op (reference)

    def init_state(
        self, states: torch.Tensor, final: torch.Tensor, mask: torch.Tensor
    ) -> DecoderState:
        hidden = _initial_hidden(self.init, final[-1], self.layers)  # final[-1]: top backward
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
        return run_gru(self.upper, self.dropout(s), hidden)

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
        states, contexts, weights = [], [], []
        # unbind, not gi_y[:, t]: the backward of T slices would build T full-size gradients
        for gi_t in gi_y.unbind(1):
            query, gh = self._recurrent(s, recurrent, bias, split)
            context, alpha = self.attention(query, state.keys, state.memory, state.mask)
            s = gru_step(gi_t + self._context_gates(F.linear(context, w_c)), gh, s)  # [B, H]
            s = self._transition(s)
            states.append(s)
            contexts.append(context)
            weights.append(alpha)
        return torch.stack(states, 1), torch.stack(contexts, 1), torch.stack(weights, 1)

    def _recurrent(
        self, s: torch.Tensor, recurrent: torch.Tensor, bias: torch.Tensor, split: list[int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """[W_a; U] s + [0; b_hh] split into the attention query and the gates' U s + b_hh,
        which is γ_h ⊙ LN(U s) + b_hh with layer norm."""
        if self.ln_h is None:
            return F.linear(s, recurrent, bias).split(split, 1)
        query, gh = F.linear(s, recurrent).split(split, 1)  # the query's bias is 0
        return query, layer_norm(gh, self.ln_h, self.cell.bias_hh)

    def _context_gates(self, u_c: torch.Tensor) -> torch.Tensor:
        """The context's share of the gates' input, W_c c (γ_c ⊙ LN(W_c c) with layer norm)."""
        return u_c if self.ln_c is None else layer_norm(u_c, self.ln_c, None)

    def _transition(self, s: torch.Tensor) -> torch.Tensor:
        """s through a deep transition's cells 2..D (as it is without one)."""
        return s if self.transition is None else self.transition(s)

    def search_state(self, state: DecoderState) -> DecoderState:
        """The state `step` works on: the source projected once, source_proj [B, S, 3H + 2E]
        (see `step`), in place of memory, which it does not read again."""
        w_context = self._search_weights(_autocast_dtype(state.memory))[5]
        return dataclasses.replace(
            state, source_proj=F.linear(state.memory, w_context), memory=None
        )

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
        w_y, _, _, bias, w_top_e, _, recurrent = self._search_weights(_autocast_dtype(e))
        if state.source_proj is None:
            state = self.search_state(state)
        s = state.hidden[0]  # [N, H]
        hidden_size = s.shape[1]
        attn_size = recurrent.shape[0] - 3 * hidden_size
        query2, gh = self._recurrent(s, recurrent, bias, [attn_size, 3 * hidden_size])
        alpha = self.attention.weights(query2, state.keys, state.mask)  # [B, K, S]
        mixed = torch.bmm(alpha.to(state.source_proj.dtype), state.source_proj)  # [B, K, 3H+2E]
        u_c, readout_c = mixed.flatten(0, 1).split([3 * hidden_size, self.readout.out_features], 1)
        gi = projection(e, w_y, self.cell.bias_ih, self.ln_y) + self._context_gates(u_c)
        s = self._transition(gru_step(gi, gh, s))  # [N, H]
        top, hidden = s, s.unsqueeze(0)
        if self.upper is not None:
            out, upper_hidden = self._upper(s.unsqueeze(1), state.hidden[1:])
            top, hidden = out.squeeze(1), torch.cat([hidden, upper_hidden])
        readout = F.linear(torch.cat([top, e], -1), w_top_e, self.readout.bias) + readout_c
        return maxout(readout), dataclasses.replace(state, hidden=hidden), alpha.flatten(0, 1)


class LuongDecoder(nn.Module):
    """Luong et al. (2015) with the "general" score: attention after the recurrence.

    s_i = GRU(s_{i-1}, E y_{i-1}) runs fused over the whole target; then for all steps at once
    α_i = softmax(s_i W H^T), c_i = α_i H, and the attentional state h̃_i = tanh(W_c [c_i; s_i])
    (hidden-sized, as in the paper). A linear readout R h̃_i gives the output feature in the
    embedding space of the (tied) output layer. Without R, a tanh-bounded feature of emb_size
    times the small tied embeddings gives small logits, and learning stalls near the unigram
    level: on the Bible corpus, 256/512, train loss after 100 updates was 6.57 without R, 5.81
    with it (rnnsearch: 5.85). With input feeding, h̃_{i-1} joins the GRU input, which makes
    the decoder sequential again.
    """

    def __init__(
        self,
        embed: nn.Embedding,
        enc_size: int,
        enc_hidden: int,
        hidden: int,
        layers: int,
        dropout: float,
        input_feeding: bool,
        options: GRUOptions = PLAIN_GRU,
    ):
        super().__init__()
        emb = embed.embedding_dim
        self.embed, self.layers, self.input_feeding = embed, layers, input_feeding
        self.dropout = nn.Dropout(dropout)
        self.init = nn.Linear(enc_hidden, layers * hidden)
        self.rnn = GRU(
            emb + (hidden if input_feeding else 0),
            hidden,
            layers,
            batch_first=True,
            dropout=dropout if layers > 1 else 0.0,
            options=options,
        )
        self.attention = MultiplicativeAttention(hidden, enc_size)
        self.combine = nn.Linear(enc_size + hidden, hidden)  # W_c
        self.readout = nn.Linear(hidden, emb)  # R

    def init_state(
        self, states: torch.Tensor, final: torch.Tensor, mask: torch.Tensor
    ) -> DecoderState:
        hidden = _initial_hidden(self.init, final[-1], self.layers)
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
