"""rnnsearch's first decoder layer over a whole target sequence, with a hand-written backward.

The recurrence (see `RNNSearchDecoder`): for each step t, with s the previous state,

    [q; gh] = [W_a; U] s + [0; b_hh]                  one product: attention query, GRU gates
    α = softmax_j(v · tanh(K_j + q)),  c = Σ_j α_j M_j additive attention over keys K, memory M
    gi = gi_y[t] + W_c c                              input projection (gi_y hoisted: E y + b_ih)
    s' = GRU(gi, gh, s)                               `gru.gru_step`, reset gate after U

Autograd would differentiate this op by op, T times: for each step a small product for every
weight gradient, each then added into the weight's gradient. Here the backward walks the steps
in reverse computing only what must be sequential (gradients of the state and of the per-step
activations), and the weight gradients come afterwards as one large product each over all
T x B rows (dW = dP^T S), which runs near the machine's matrix-multiply peak. The forward runs
without building a graph. `tests/test_attention_gru.py` checks both directions against the
autograd path (`RNNSearchDecoder.recurrence`) in float64. With layer norm, U s and W_c c are
normalised inside the loop; with a deep transition, cells 2..D follow the GRU at every step
(`gru_layer.Transitions`).
"""

from __future__ import annotations

import torch

from nmt.model.gru_layer import (
    Transitions,
    addmm_in,
    bmm_in,
    cell_backward,
    cell_forward,
    mm_in,
    norm_steps,
)


class AttentionGRU(torch.autograd.Function):
    """states, contexts, weights = AttentionGRU.apply(gi_y, s0, keys, memory, mask, w_rec,
    b_rec, w_c, v, mm_dtype, ln_h, ln_c, t_weight, t_b_i, t_b_h, t_gains). Shapes: gi_y
    [T, B, 3H] (time-major), s0 [B, H], keys [B, S, A], memory [B, S, M], mask [B, S] (True at
    real tokens), w_rec [A+3H, H], b_rec [A+3H], w_c [3H, M], v [A], mm_dtype (the dtype the
    matrix products run in: the inputs' float32, or bfloat16 under autocast), ln_h and ln_c the
    layer-norm gains [3H] of U s and W_c c, or None (with them gh = ln_h ⊙ LN(U s) + b_hh and
    gi = gi_y + ln_c ⊙ LN(W_c c)), t_* a deep transition's cells (`gru_layer.Transitions`; None
    for depth 1) → states [T, B, H], contexts [T, B, M], weights [T, B, S]."""

    @staticmethod
    def forward(  # noqa: D102
        ctx, gi_y, s0, keys, memory, mask, w_rec, b_rec, w_c, v, mm_dtype, ln_h, ln_c, *deep
    ):
        low = [x.to(mm_dtype) for x in (memory, w_rec, w_c)]  # operands of the products
        memory_m, w_rec_m, w_c_m = low
        dtype = gi_y.dtype  # of the state, gates and gradients
        steps, batch, h3 = gi_y.shape
        hidden, attn = h3 // 3, keys.shape[2]
        new = gi_y.new_empty
        states, contexts = new(steps, batch, hidden), new(steps, batch, memory.shape[2])
        alphas, sigmas = new(steps, batch, keys.shape[1]), new(steps, *keys.shape)
        gates, gh_n = new(steps, batch, h3), new(steps, batch, hidden)  # r, z, n; U_n s + b_hn
        norm_h = norm_steps(ln_h, b_rec[attn:], steps, batch)  # its shift is the GRU's b_hh
        norm_c = norm_steps(ln_c, None, steps, batch)
        if ln_h is not None:  # the gates' bias is added by the norm
            b_rec = torch.cat([b_rec[:attn], b_rec.new_zeros(h3)])
        transitions = Transitions(*deep, (steps, batch, hidden), mm_dtype)
        padding = ~mask
        keys2 = 2 * keys  # tanh(x) = 2σ(2x) - 1, and σ is faster than tanh on the CPU
        s = s0
        for t in range(steps):
            q, gh = addmm_in(b_rec, s, w_rec_m.t(), mm_dtype, dtype).split([attn, h3], 1)
            if norm_h is not None:
                gh = norm_h.forward(t, gh)
            sig = torch.add(keys2, q.unsqueeze(1), alpha=2, out=sigmas[t]).sigmoid_()
            # v · tanh = 2 v · σ - Σv: the constant drops out of the softmax
            scores = torch.matmul(sig, 2 * v).masked_fill_(padding, float("-inf"))  # [B, S]
            alpha = torch.softmax(scores, 1)
            alphas[t] = alpha
            c = bmm_in(alpha.unsqueeze(1), memory_m, mm_dtype, dtype).squeeze(1)  # [B, M]
            contexts[t] = c
            if norm_c is None:
                gi = addmm_in(gi_y[t], c, w_c_m.t(), mm_dtype, dtype)  # [B, 3H]
            else:
                gi = gi_y[t] + norm_c.forward(t, mm_in(c, w_c_m.t(), mm_dtype, dtype))
            states[t] = transitions.forward(t, cell_forward(gi, gh, s, gates[t], gh_n[t]))
            s = states[t]
        ctx.save_for_backward(s0, keys, *low, v, states, contexts, alphas, sigmas, gates, gh_n)
        ctx.mm_dtype, ctx.norms, ctx.transitions = mm_dtype, (norm_h, norm_c), transitions
        ctx.mark_non_differentiable(alphas)
        return states, contexts, alphas

    @staticmethod
    def backward(ctx, d_states, d_contexts, _):  # noqa: D102
        s0, keys, memory, w_rec, w_c, v, states, contexts, alphas, sigmas, gates, gh_n = (
            ctx.saved_tensors
        )
        (norm_h, norm_c), transitions = ctx.norms, ctx.transitions
        steps, batch, hidden = states.shape
        attn = keys.shape[2]
        dtype, mm_dtype = states.dtype, ctx.mm_dtype
        d_states = torch.zeros_like(states) if d_states is None else d_states
        d_contexts = torch.zeros_like(contexts) if d_contexts is None else d_contexts
        d_keys_v = torch.zeros_like(keys)  # d_keys / 4v
        d_proj = states.new_empty(steps, batch, attn + 3 * hidden)  # d[q; U s] per step
        d_gi = states.new_empty(steps, batch, 3 * hidden)
        # the gradient of gh (after U s's norm; d_proj holds that of U s itself)
        d_gh = d_proj[:, :, attn:] if norm_h is None else torch.empty_like(d_gi)
        d_uc = d_gi if norm_c is None else torch.empty_like(d_gi)  # of W_c c, before its norm
        d_c = torch.empty_like(contexts)
        d_scores = torch.empty_like(alphas)
        ds = torch.zeros_like(s0)
        for t in reversed(range(steps)):
            s_prev = states[t - 1] if t else s0
            ds = transitions.backward(t, ds + d_states[t])  # of the GRU cell's output
            direct = cell_backward(ds, gates[t], gh_n[t], s_prev, d_gi[t], d_gh[t])
            if norm_h is not None:
                d_proj[t, :, attn:] = norm_h.backward(t, d_gh[t])
            if norm_c is not None:
                d_uc[t] = norm_c.backward(t, d_gi[t])
            d_c[t] = dc = addmm_in(d_contexts[t], d_uc[t], w_c, mm_dtype, dtype)  # [B, M]
            d_alpha = bmm_in(memory, dc.unsqueeze(2), mm_dtype, dtype).squeeze(2)  # [B, S]
            alpha = alphas[t]
            de = alpha * (d_alpha - (alpha * d_alpha).sum(1, keepdim=True))
            d_scores[t] = de
            # d(keys + q) = (1 - tanh²) · de ⊗ v with 1 - tanh² = 4σ(1 - σ); the factor 4v is
            # applied once, after the loop
            g = torch.addcmul(sigmas[t], sigmas[t], sigmas[t], value=-1).mul_(de.unsqueeze(2))
            d_keys_v += g  # [B, S, A]
            torch.mul(g.sum(1), 4 * v, out=d_proj[t, :, :attn])
            # the direct path, and through [W_a; U]
            ds = addmm_in(direct, d_proj[t], w_rec, mm_dtype, dtype)
        previous = torch.cat([s0.unsqueeze(0), states[:-1]])  # [T, B, H]
        rows = steps * batch
        # w_rec, w_c and memory are the product-dtype copies saved by forward
        d_w_rec = mm_in(d_proj.reshape(rows, -1).t(), previous.reshape(rows, -1), mm_dtype, dtype)
        d_w_c = mm_in(d_uc.reshape(rows, -1).t(), contexts.reshape(rows, -1), mm_dtype, dtype)
        # [B, S, M]
        d_memory = bmm_in(alphas.permute(1, 2, 0), d_c.transpose(0, 1), mm_dtype, dtype)
        # Σ de tanh = 2 Σ de σ - Σ de, and Σ_s de = 0 (a softmax gradient sums to zero)
        d_v = d_scores.reshape(1, -1).mm(sigmas.reshape(-1, attn)).squeeze(0).mul_(2)
        d_bias = d_proj.sum((0, 1))
        if norm_h is not None:  # the gates' bias is the norm's shift
            d_bias[attn:] = d_gh.sum((0, 1))
        return (
            d_gi,
            ds,
            d_keys_v.mul_(4 * v),
            d_memory,
            None,
            d_w_rec,
            d_bias,
            d_w_c,
            d_v,
            None,
            None if norm_h is None else norm_h.gain_grad(d_gh),
            None if norm_c is None else norm_c.gain_grad(d_gi),
            *transitions.grads(),
        )
