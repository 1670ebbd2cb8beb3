"""The Gated Recurrent Unit as the equations say, in its two published variants.

For input x, previous state h, reset gate r and update gate z (σ the logistic sigmoid):

    r  = σ(W_r x + b_ir + U_r h + b_hr)
    z  = σ(W_z x + b_iz + U_z h + b_hz)
    h' = (1 - z) ⊙ ĥ + z ⊙ h

and the candidate state ĥ differs in where the reset gate acts:

- Cho et al. (2014), eq. 8:      ĥ = tanh(W x + b_in + U (r ⊙ h) + b_hn)     ("before")
- cuDNN / PyTorch `nn.GRU`:      ĥ = tanh(W x + b_in + r ⊙ (U h + b_hn))     ("after")

Applying r after the recurrent product lets U h be computed for all three gates in one matrix
product before r is known, which is what makes cuDNN's fused kernel (and our step below) fast.
Every recurrence in this toolkit (encoders, decoders, training and search) uses the "after"
variant; `gru_cell` implements both so tests can check the code against the equations.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


def gru_cell(
    x: torch.Tensor,
    h: torch.Tensor,
    w_ih: torch.Tensor,
    w_hh: torch.Tensor,
    b_ih: torch.Tensor,
    b_hh: torch.Tensor,
    reset: str = "after",
) -> torch.Tensor:
    """One GRU step written gate by gate (reference; `nn.GRUCell` weight layout: r, z, n).

    x: [B, I], h: [B, H], w_ih: [3H, I], w_hh: [3H, H], biases [3H] → [B, H].
    """
    w_r, w_z, w_n = w_ih.chunk(3)
    u_r, u_z, u_n = w_hh.chunk(3)
    b_ir, b_iz, b_in = b_ih.chunk(3)
    b_hr, b_hz, b_hn = b_hh.chunk(3)
    r = torch.sigmoid(x @ w_r.T + b_ir + h @ u_r.T + b_hr)
    z = torch.sigmoid(x @ w_z.T + b_iz + h @ u_z.T + b_hz)
    if reset == "after":
        candidate = torch.tanh(x @ w_n.T + b_in + r * (h @ u_n.T + b_hn))
    elif reset == "before":
        candidate = torch.tanh(x @ w_n.T + b_in + (r * h) @ u_n.T + b_hn)
    else:
        raise ValueError(f"reset must be 'after' or 'before', not {reset!r}")
    return (1 - z) * candidate + z * h


def gru_step(gi: torch.Tensor, gh: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """The "after" GRU step from precomputed projections (the decoders' hot loop).

    gi = W x + b_ih and gh = U h + b_hh, both [B, 3H] in r, z, n order; h: [B, H] → [B, H].
    The input projection gi is computed for all time steps at once, outside the loop.
    """
    hidden = h.shape[-1]
    # split/chunk rather than slicing: their backward is one concatenation, where each slice's
    # backward would allocate and zero a full [B, 3H] gradient
    i_rz, i_n = gi.split([2 * hidden, hidden], 1)
    h_rz, h_n = gh.split([2 * hidden, hidden], 1)
    r, z = torch.sigmoid(i_rz + h_rz).chunk(2, 1)  # [B, H] each
    candidate = torch.tanh(i_n + r * h_n)
    return candidate + z * (h - candidate)  # = (1 - z) * candidate + z * h


class GRULayer(torch.autograd.Function):
    """One GRU layer in one direction over a whole sequence, with a hand-written backward.

    outputs, final = GRULayer.apply(gi, h0, w_hh, b_hh, mask, reverse, mm_dtype): gi [T, B, 3H]
    is the input projection W x + b_ih for every step (one large product, done by the caller),
    h0 [B, H], mask [T, B] (True at real tokens: at padding the state is carried unchanged and
    the output is zero, which is what packed sequences compute), `reverse` runs from t = T-1
    down, `mm_dtype` is the dtype the recurrent products run in (bfloat16 under autocast; the
    state, gates and gradients keep gi's dtype) → outputs [T, B, H], final [B, H].

    The backward computes per step only the gradients that must be sequential; the gradient of
    the recurrent matrix comes afterwards as one product over all T x B rows, where autograd
    (and PyTorch's CPU GRU) makes one small product per step.
    """

    @staticmethod
    def forward(ctx, gi, h0, w_hh, b_hh, mask, reverse, mm_dtype):  # noqa: D102
        steps, batch, h3 = gi.shape
        hidden = h3 // 3
        w_hh_m = w_hh.to(mm_dtype)  # [3H, H], cast once for all steps
        outputs, states = gi.new_empty(steps, batch, hidden), gi.new_empty(steps, batch, hidden)
        gates, gh_n = gi.new_empty(steps, batch, h3), gi.new_empty(steps, batch, hidden)
        keep = mask.unsqueeze(2).to(gi.dtype)  # [T, B, 1]
        h = h0
        for t in reversed(range(steps)) if reverse else range(steps):
            gh = addmm_in(b_hh, h, w_hh_m.t(), mm_dtype, gi.dtype)  # [B, 3H]
            r, z, n = gates[t].split(hidden, 1)
            torch.sigmoid(
                gi[t, :, : 2 * hidden] + gh[:, : 2 * hidden], out=gates[t, :, : 2 * hidden]
            )
            gh_n[t] = gh[:, 2 * hidden :]
            torch.tanh(torch.addcmul(gi[t, :, 2 * hidden :], r, gh_n[t]), out=n)
            new = torch.addcmul(n, z, h - n)
            torch.mul(new, keep[t], out=outputs[t])
            h = torch.addcmul(h, keep[t], new - h, out=states[t])  # carried past padding
        ctx.save_for_backward(h0, w_hh_m, states, gates, gh_n, keep)
        ctx.reverse, ctx.mm_dtype = reverse, mm_dtype
        return outputs, h.clone()

    @staticmethod
    def backward(ctx, d_outputs, d_final):  # noqa: D102
        h0, w_hh, states, gates, gh_n, keep = ctx.saved_tensors  # w_hh in the products' dtype
        mm_dtype, dtype = ctx.mm_dtype, states.dtype
        steps, batch, hidden = states.shape
        if ctx.reverse:  # the state before step t is the one after step t + 1
            previous = torch.cat([states[1:], h0.unsqueeze(0)])
        else:
            previous = torch.cat([h0.unsqueeze(0), states[:-1]])
        d_gi = states.new_empty(steps, batch, 3 * hidden)
        d_gh = states.new_empty(steps, batch, 3 * hidden)
        dh = torch.zeros_like(h0) if d_final is None else d_final.clone()
        for t in range(steps) if ctx.reverse else reversed(range(steps)):
            r, z, n = gates[t].split(hidden, 1)
            d_new = keep[t] * (dh if d_outputs is None else dh + d_outputs[t])
            dn = d_new * (1 - z) * (1 - n * n)
            dr = dn * gh_n[t] * r * (1 - r)
            dz = d_new * (previous[t] - n) * z * (1 - z)
            torch.cat([dr, dz, dn], 1, out=d_gi[t])
            torch.cat([dr, dz, dn * r], 1, out=d_gh[t])
            # padded rows pass the state's gradient through; real rows go through z and U
            dh = addmm_in(
                torch.addcmul(dh * (1 - keep[t]), d_new, z), d_gh[t], w_hh, mm_dtype, dtype
            )
        rows = steps * batch
        d_w_hh = mm_in(d_gh.reshape(rows, -1).t(), previous.reshape(rows, -1), mm_dtype, dtype)
        return d_gi, dh, d_w_hh, d_gh.sum((0, 1)), None, None, None


def mm_in(
    a: torch.Tensor, b: torch.Tensor, mm_dtype: torch.dtype, dtype: torch.dtype
) -> torch.Tensor:
    """a @ b computed in mm_dtype (bfloat16 under autocast), returned in dtype: the state,
    gates and gradients of the hand-written recurrences keep their precision whatever the
    products run in."""
    return torch.mm(a.to(mm_dtype), b.to(mm_dtype)).to(dtype)


def addmm_in(
    bias: torch.Tensor, a: torch.Tensor, b: torch.Tensor, mm_dtype: torch.dtype, dtype: torch.dtype
) -> torch.Tensor:
    """bias + a @ b, the product as in `mm_in`; one fused call where no cast is needed."""
    if mm_dtype == dtype:
        return torch.addmm(bias, a, b)
    return mm_in(a, b, mm_dtype, dtype).add_(bias)


def bmm_in(
    a: torch.Tensor, b: torch.Tensor, mm_dtype: torch.dtype, dtype: torch.dtype
) -> torch.Tensor:
    """`mm_in` for batches of matrices."""
    return torch.bmm(a.to(mm_dtype), b.to(mm_dtype)).to(dtype)


def run_gru(
    rnn: nn.GRU, x: torch.Tensor, h0: torch.Tensor | None = None, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """What `rnn(x, h0)` computes (batch_first; padding per `mask` as packed sequences do).

    On a GPU this is `nn.GRU` itself (cuDNN), packed when a mask is given. On the CPU each
    layer and direction is one `GRULayer` with its input projection done for all steps at once;
    under autocast its products run in the autocast dtype and its state in float32. (PyTorch's
    CPU GRU under autocast slices the input projection per step, and the backward of each slice
    adds a full-size gradient: the bf16 encoder spent more time there than in its products.)
    Without autograd (translation, validation), autocast runs `nn.GRU` as before: there is no
    backward to pay for the slices, and autocast keeps its bf16 weights for the whole search
    where `GRULayer` would cast them at every call (a search step for 150 hypotheses of a
    512-unit GRU: 1.2 against 2.9 ms; one-at-a-time beam 5 was 12% slower).
    Both read the same parameters. x [B, T, I], h0 [L*D, B, H], mask [B, T] → outputs
    [B, T, D*H], final states [L*D, B, H] (in the autocast dtype under autocast).
    """
    autocast = torch.is_autocast_enabled("cpu")
    if x.is_cuda or (autocast and not torch.is_grad_enabled()):
        return _run_nn_gru(rnn, x, h0, mask)
    mm_dtype = torch.get_autocast_dtype("cpu") if autocast else x.dtype
    dtype = rnn.weight_hh_l0.dtype  # of the state: the parameters' (float32 under autocast)
    dirs, batch, steps = 2 if rnn.bidirectional else 1, x.shape[0], x.shape[1]
    if h0 is None:
        h0 = x.new_zeros(rnn.num_layers * dirs, batch, rnn.hidden_size, dtype=dtype)
    keep = torch.ones(steps, batch, dtype=torch.bool, device=x.device) if mask is None else mask.t()
    layer_input = x.transpose(0, 1)  # [T, B, I], time-major for the recurrence
    finals = []
    for layer in range(rnn.num_layers):
        outputs = []
        for direction in range(dirs):
            suffix = f"_l{layer}" + ("_reverse" if direction else "")
            gi = F.linear(
                layer_input, getattr(rnn, f"weight_ih{suffix}"), getattr(rnn, f"bias_ih{suffix}")
            )  # [T, B, 3H], in mm_dtype under autocast
            with torch.autocast("cpu", enabled=False):
                out, final = GRULayer.apply(
                    gi.to(dtype),
                    h0[layer * dirs + direction].to(dtype),
                    getattr(rnn, f"weight_hh{suffix}"),
                    getattr(rnn, f"bias_hh{suffix}"),
                    keep,
                    direction == 1,
                    mm_dtype,
                )
            outputs.append(out)
            finals.append(final)
        layer_input = torch.cat(outputs, 2) if dirs > 1 else outputs[0]  # [T, B, D*H]
        if layer < rnn.num_layers - 1 and rnn.dropout and rnn.training:
            layer_input = F.dropout(layer_input, rnn.dropout, training=True)
    outputs, final_states = layer_input.transpose(0, 1), torch.stack(finals)
    if autocast:  # in autocast's dtype, as autocast's own ops (and nn.GRU under it) return
        return outputs.to(mm_dtype), final_states.to(mm_dtype)
    return outputs, final_states


def _run_nn_gru(
    rnn: nn.GRU, x: torch.Tensor, h0: torch.Tensor | None, mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    if mask is None:
        return rnn(x, h0)
    lengths = mask.sum(1).cpu()
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    outputs, final = rnn(packed, h0)
    outputs, _ = pad_packed_sequence(outputs, batch_first=True, total_length=x.shape[1])
    return outputs, final
