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

With `model.layer_norm` (Ba et al. 2016, as in Marian's and Nematus' GRUs) both projections are
layer-normalised over their 3H units before the gates, with a gain each; the GRU's biases act as
the norms' shift:

    gi = γ_i ⊙ LN(W x) + b_i,   gh = γ_h ⊙ LN(U h) + b_h,   LN(u) = (u - mean(u)) / std(u)
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
    gains: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """One GRU step written gate by gate (reference; `nn.GRUCell` weight layout: r, z, n).

    x: [B, I], h: [B, H], w_ih: [3H, I], w_hh: [3H, H], biases [3H], gains (γ_i, γ_h) [3H] each
    for the layer-normalised GRU ("after" only) → [B, H].
    """
    if gains is not None:
        wx, uh = _normalise(x @ w_ih.T, gains[0]), _normalise(h @ w_hh.T, gains[1])
        (i_r, i_z, i_n), (h_r, h_z, h_n) = (wx + b_ih).chunk(3, 1), (uh + b_hh).chunk(3, 1)
        r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
        return (1 - z) * torch.tanh(i_n + r * h_n) + z * h
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


def _normalise(u: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
    """γ ⊙ (u - mean) / sqrt(var + eps) over the last dimension, spelled out (reference)."""
    centred = u - u.mean(-1, keepdim=True)
    return gain * centred / torch.sqrt(centred.pow(2).mean(-1, keepdim=True) + LN_EPS)


LN_EPS = 1e-5  # of every layer norm in the GRUs (PyTorch's default)


def projection(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, gain: torch.Tensor | None
) -> torch.Tensor:
    """W x + b, or γ ⊙ LN(W x) + b when the GRU is layer-normalised (gain given)."""
    if gain is None:
        return F.linear(x, weight, bias)
    return layer_norm(F.linear(x, weight), gain, bias)


def layer_norm(u: torch.Tensor, gain: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """γ ⊙ LN(u) + b over u's last dimension (autograd's; float32 under autocast)."""
    return F.layer_norm(u, (u.shape[-1],), gain, bias, LN_EPS)


def norm_step(
    u: torch.Tensor, gain: torch.Tensor, bias: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """γ ⊙ LN(u) + b for u [B, N] inside a hand-written recurrence → (output, mean, rstd), the
    statistics [B, 1] that `norm_step_backward` needs."""
    return torch.native_layer_norm(u, [u.shape[1]], gain, bias, LN_EPS)


def norm_step_backward(
    d_out: torch.Tensor, u: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor, gain: torch.Tensor
) -> torch.Tensor:
    """The gradient of `norm_step`'s input u from its output's (the gain's and shift's come
    after the loop, `norm_gain_grad` and a sum)."""
    return torch.ops.aten.native_layer_norm_backward(
        d_out, u, [u.shape[1]], mean, rstd, gain, None, [True, False, False]
    )[0]


def norm_gain_grad(
    d_out: torch.Tensor, u: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor
) -> torch.Tensor:
    """The gain's gradient from every step's at once: Σ d_out ⊙ LN(u) over [T, B, N] → [N]."""
    return (d_out * (u - mean) * rstd).sum((0, 1))


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

    outputs, final = GRULayer.apply(gi, h0, w_hh, b_hh, mask, reverse, mm_dtype, gain): gi
    [T, B, 3H] is the input projection (`projection`) for every step (one large product, done by
    the caller), h0 [B, H], mask [T, B] (True at real tokens: at padding the state is carried
    unchanged and the output is zero, which is what packed sequences compute), `reverse` runs
    from t = T-1 down, `mm_dtype` is the dtype the recurrent products run in (bfloat16 under
    autocast; the state, gates and gradients keep gi's dtype), `gain` the recurrent projection's
    layer-norm gain [3H] or None → outputs [T, B, H], final [B, H].

    The backward computes per step only the gradients that must be sequential; the gradient of
    the recurrent matrix comes afterwards as one product over all T x B rows, where autograd
    (and PyTorch's CPU GRU) makes one small product per step.
    """

    @staticmethod
    def forward(ctx, gi, h0, w_hh, b_hh, mask, reverse, mm_dtype, gain):  # noqa: D102
        steps, batch, h3 = gi.shape
        hidden = h3 // 3
        w_hh_m = w_hh.to(mm_dtype)  # [3H, H], cast once for all steps
        outputs, states = gi.new_empty(steps, batch, hidden), gi.new_empty(steps, batch, hidden)
        gates, gh_n = gi.new_empty(steps, batch, h3), gi.new_empty(steps, batch, hidden)
        norm = NormSteps(gain, b_hh, steps, batch)
        keep = mask.unsqueeze(2).to(gi.dtype)  # [T, B, 1]
        h = h0
        for t in reversed(range(steps)) if reverse else range(steps):
            if gain is None:
                gh = addmm_in(b_hh, h, w_hh_m.t(), mm_dtype, gi.dtype)  # [B, 3H]
            else:
                gh = norm.forward(t, mm_in(h, w_hh_m.t(), mm_dtype, gi.dtype))
            r, z, n = gates[t].split(hidden, 1)
            torch.sigmoid(
                gi[t, :, : 2 * hidden] + gh[:, : 2 * hidden], out=gates[t, :, : 2 * hidden]
            )
            gh_n[t] = gh[:, 2 * hidden :]
            torch.tanh(torch.addcmul(gi[t, :, 2 * hidden :], r, gh_n[t]), out=n)
            new = torch.addcmul(n, z, h - n)
            torch.mul(new, keep[t], out=outputs[t])
            h = torch.addcmul(h, keep[t], new - h, out=states[t])  # carried past padding
        ctx.save_for_backward(h0, w_hh_m, states, gates, gh_n, keep, *norm.saved())
        ctx.reverse, ctx.mm_dtype = reverse, mm_dtype
        return outputs, h.clone()

    @staticmethod
    def backward(ctx, d_outputs, d_final):  # noqa: D102
        h0, w_hh, states, gates, gh_n, keep, *saved = ctx.saved_tensors  # w_hh: mm_dtype
        norm = NormSteps.restore(saved)
        mm_dtype, dtype = ctx.mm_dtype, states.dtype
        steps, batch, hidden = states.shape
        if ctx.reverse:  # the state before step t is the one after step t + 1
            previous = torch.cat([states[1:], h0.unsqueeze(0)])
        else:
            previous = torch.cat([h0.unsqueeze(0), states[:-1]])
        d_gi = states.new_empty(steps, batch, 3 * hidden)
        d_gh = states.new_empty(steps, batch, 3 * hidden)
        d_uh = d_gh if norm is None else torch.empty_like(d_gh)  # of U h, before the norm
        dh = torch.zeros_like(h0) if d_final is None else d_final.clone()
        for t in range(steps) if ctx.reverse else reversed(range(steps)):
            r, z, n = gates[t].split(hidden, 1)
            d_new = keep[t] * (dh if d_outputs is None else dh + d_outputs[t])
            dn = d_new * (1 - z) * (1 - n * n)
            dr = dn * gh_n[t] * r * (1 - r)
            dz = d_new * (previous[t] - n) * z * (1 - z)
            torch.cat([dr, dz, dn], 1, out=d_gi[t])
            torch.cat([dr, dz, dn * r], 1, out=d_gh[t])
            if norm is not None:
                d_uh[t] = norm.backward(t, d_gh[t])
            # padded rows pass the state's gradient through; real rows go through z and U
            dh = addmm_in(
                torch.addcmul(dh * (1 - keep[t]), d_new, z), d_uh[t], w_hh, mm_dtype, dtype
            )
        rows = steps * batch
        d_w_hh = mm_in(d_uh.reshape(rows, -1).t(), previous.reshape(rows, -1), mm_dtype, dtype)
        d_gain = None if norm is None else norm.gain_grad(d_gh)
        return d_gi, dh, d_w_hh, d_gh.sum((0, 1)), None, None, None, d_gain


class NormSteps:
    """The per-step layer norms of a hand-written recurrence: applies γ ⊙ LN(u) + b at each
    step, keeping u and its statistics for the backward. `gain` None: no norm (`saved()` is
    empty and `restore` gives None)."""

    def __init__(
        self, gain: torch.Tensor | None, bias: torch.Tensor | None, steps: int, batch: int
    ):
        self.gain, self.bias = gain, bias
        if gain is not None:
            new = gain.new_empty
            self.inputs = new(steps, batch, gain.shape[0])  # u, [T, B, N]
            self.means, self.rstds = new(steps, batch, 1), new(steps, batch, 1)

    def forward(self, t: int, u: torch.Tensor) -> torch.Tensor:
        """γ ⊙ LN(u) + b for step t's u [B, N]."""
        out, self.means[t], self.rstds[t] = norm_step(u, self.gain, self.bias)
        self.inputs[t] = u
        return out

    def saved(self) -> tuple[torch.Tensor, ...]:
        """What the backward needs, for `ctx.save_for_backward`."""
        return () if self.gain is None else (self.gain, self.inputs, self.means, self.rstds)

    @classmethod
    def restore(cls, saved: list[torch.Tensor]) -> NormSteps | None:
        """The norms back from `saved()`'s tensors (None without a norm)."""
        if not saved:
            return None
        norm = cls.__new__(cls)
        norm.gain, norm.inputs, norm.means, norm.rstds = saved
        return norm

    def backward(self, t: int, d_out: torch.Tensor) -> torch.Tensor:
        """The gradient of step t's u from its output's."""
        return norm_step_backward(d_out, self.inputs[t], self.means[t], self.rstds[t], self.gain)

    def gain_grad(self, d_out: torch.Tensor) -> torch.Tensor:
        """The gain's gradient from all steps' output gradients d_out [T, B, N]."""
        return norm_gain_grad(d_out, self.inputs, self.means, self.rstds)


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


class GRU(nn.GRU):
    """`nn.GRU`, optionally layer-normalised and with residual connections. With `layer_norm`,
    each layer and direction has gains `ln_ih_l{k}[_reverse]` and `ln_hh_l{k}[_reverse]` [3H]
    (initialised to 1; see the module's docstring). With `residual_from` k, layers k and above
    add their input to their output (Marian's --skip; k = 1 where the first layer's input is
    not state-sized). Run it with `run_gru`: PyTorch's own kernels know neither."""

    def __init__(self, *args, layer_norm: bool = False, residual_from: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.layer_norm, self.residual_from = layer_norm, residual_from
        residual = residual_from is not None and residual_from < self.num_layers
        self.own_kernel = layer_norm or residual  # run_gru: not PyTorch's
        if layer_norm:
            for name in self._flat_weights_names:
                if name.startswith("weight_"):
                    gain = nn.Parameter(torch.ones(3 * self.hidden_size))
                    self.register_parameter(name.replace("weight_", "ln_"), gain)

    def gain(self, name: str) -> torch.Tensor | None:
        """The layer-norm gain of weight `name` (e.g. weight_hh_l0), None without layer norm."""
        return getattr(self, name.replace("weight_", "ln_")) if self.layer_norm else None


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
    Both read the same parameters. A `GRU` with layer norm or residual connections always
    runs `GRULayer`, on any device. x [B, T, I], h0 [L*D, B, H], mask [B, T] → outputs
    [B, T, D*H], final states [L*D, B, H] (in the autocast dtype under autocast).
    """
    device = x.device.type
    autocast = torch.is_autocast_enabled(device)
    norm, residual_from = getattr(rnn, "layer_norm", False), getattr(rnn, "residual_from", None)
    own = getattr(rnn, "own_kernel", False)
    if not own and (x.is_cuda or (autocast and not torch.is_grad_enabled())):
        return _run_nn_gru(rnn, x, h0, mask)
    mm_dtype = torch.get_autocast_dtype(device) if autocast else x.dtype
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
            ih, hh = f"weight_ih{suffix}", f"weight_hh{suffix}"
            gains = (rnn.gain(ih), rnn.gain(hh)) if norm else (None, None)
            gi = projection(
                layer_input, getattr(rnn, ih), getattr(rnn, f"bias_ih{suffix}"), gains[0]
            )  # [T, B, 3H], in mm_dtype under autocast (float32 after a norm)
            with torch.autocast(device, enabled=False):
                out, final = GRULayer.apply(
                    gi.to(dtype),
                    h0[layer * dirs + direction].to(dtype),
                    getattr(rnn, hh),
                    getattr(rnn, f"bias_hh{suffix}"),
                    keep,
                    direction == 1,
                    mm_dtype,
                    gains[1],
                )
            outputs.append(out)
            finals.append(final)
        output = torch.cat(outputs, 2) if dirs > 1 else outputs[0]  # [T, B, D*H]
        if residual_from is not None and layer >= residual_from:  # still zero at padding
            output = output + layer_input * keep.unsqueeze(2)
        layer_input = output
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
