"""The hand-written GRU recurrence (`GRULayer`) and the pieces it shares with rnnsearch's
(`attention_gru.AttentionGRU`): one "after" cell forward and backward, per-step layer norms,
deep-transition cells, and matrix products in a lower precision than the state.

Each forward keeps what its backward needs (gates, inputs, norm statistics) in preallocated
[T, ...] buffers; each backward walks the steps in reverse doing only the sequential work, and
computes the weight gradients afterwards as one product over all T x B rows.
"""

from __future__ import annotations

import torch

LN_EPS = 1e-5  # of every layer norm in the GRUs (PyTorch's default)


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


def cell_forward(
    gi: torch.Tensor, gh: torch.Tensor, h: torch.Tensor, gates: torch.Tensor, gh_n: torch.Tensor
) -> torch.Tensor:
    """One "after" GRU cell from its projections gi, gh [B, 3H] and state h [B, H] → h'.
    Writes r, z, n into `gates` [B, 3H] and U_n h + b_hn into `gh_n` [B, H] for the backward."""
    hidden = h.shape[1]
    r, z, n = gates.split(hidden, 1)
    torch.sigmoid(gi[:, : 2 * hidden] + gh[:, : 2 * hidden], out=gates[:, : 2 * hidden])
    gh_n.copy_(gh[:, 2 * hidden :])
    torch.tanh(torch.addcmul(gi[:, 2 * hidden :], r, gh_n), out=n)
    return torch.addcmul(n, z, h - n)  # = (1 - z) n + z h


def cell_backward(
    d_new: torch.Tensor,
    gates: torch.Tensor,
    gh_n: torch.Tensor,
    h: torch.Tensor,
    d_gi: torch.Tensor,
    d_gh: torch.Tensor,
    carry: torch.Tensor | None = None,
) -> torch.Tensor:
    """`cell_forward`'s backward from the gradient of h' [B, H]: writes the gradients of gi and
    gh into d_gi and d_gh [B, 3H] and returns the direct part of h's, d_new ⊙ z, plus `carry`
    if given (the caller adds d_gh's path through its recurrent matrix)."""
    r, z, n = gates.split(h.shape[1], 1)
    dn = d_new * (1 - z) * (1 - n * n)
    dr = dn * gh_n * r * (1 - r)
    dz = d_new * (h - n) * z * (1 - z)
    torch.cat([dr, dz, dn], 1, out=d_gi)
    torch.cat([dr, dz, dn * r], 1, out=d_gh)
    return d_new * z if carry is None else torch.addcmul(carry, d_new, z)


class NormSteps:
    """The per-step layer norms of a hand-written recurrence: γ ⊙ LN(u) + b at each step, with
    u and its statistics kept for the backward (the gain's gradient comes after the loop)."""

    def __init__(self, gain: torch.Tensor, bias: torch.Tensor | None, steps: int, batch: int):
        self.gain, self.bias = gain, bias
        new = gain.new_empty
        self.inputs = new(steps, batch, gain.shape[0])  # u, [T, B, N]
        self.means, self.rstds = new(steps, batch, 1), new(steps, batch, 1)

    def forward(self, t: int, u: torch.Tensor) -> torch.Tensor:
        """γ ⊙ LN(u) + b for step t's u [B, N]."""
        out, self.means[t], self.rstds[t] = torch.native_layer_norm(
            u, [u.shape[1]], self.gain, self.bias, LN_EPS
        )
        self.inputs[t] = u
        return out

    def backward(self, t: int, d_out: torch.Tensor) -> torch.Tensor:
        """The gradient of step t's u from its output's."""
        u = self.inputs[t]
        return torch.ops.aten.native_layer_norm_backward(
            d_out, u, [u.shape[1]], self.means[t], self.rstds[t], self.gain, None,
            [True, False, False],
        )[0]  # fmt: skip

    def gain_grad(self, d_out: torch.Tensor) -> torch.Tensor:
        """The gain's gradient from all steps' output gradients d_out [T, B, N]: Σ d_out ⊙ LN(u)."""
        return (d_out * (self.inputs - self.means) * self.rstds).sum((0, 1))


def norm_steps(
    gain: torch.Tensor | None, bias: torch.Tensor | None, steps: int, batch: int
) -> NormSteps | None:
    """`NormSteps` for a gain, None without one (no layer norm)."""
    return None if gain is None else NormSteps(gain, bias, steps, batch)


def recurrent_gates(
    h: torch.Tensor,
    w_m: torch.Tensor,
    bias: torch.Tensor,
    norm: NormSteps | None,
    t: int,
    mm_dtype: torch.dtype,
) -> torch.Tensor:
    """U h + b_hh, or γ ⊙ LN(U h) + b_hh with a norm (whose shift is b_hh); w_m [3H, H] in
    mm_dtype → [B, 3H] in h's dtype."""
    if norm is None:
        return addmm_in(bias, h, w_m.t(), mm_dtype, h.dtype)
    return norm.forward(t, mm_in(h, w_m.t(), mm_dtype, h.dtype))


class Transitions:
    """Cells 2..D of a deep-transition step (Miceli Barone et al. 2017; Nematus, Marian): GRUs
    without input, h ← GRU_k(h) with gi = b_ik, applied after a step's first cell.

    weight [K, 3H, H], b_i and b_h [K, 3H], gains [K, 3H] or None (K = D - 1 cells; weight
    None: no cells). One object per forward; it keeps what its backward needs."""

    def __init__(
        self,
        weight: torch.Tensor | None,
        b_i: torch.Tensor | None,
        b_h: torch.Tensor | None,
        gains: torch.Tensor | None,
        shape: tuple[int, int, int],
        mm_dtype: torch.dtype,
    ):
        steps, batch, hidden = shape
        self.cells = 0 if weight is None else weight.shape[0]
        if not self.cells:
            return
        self.mm_dtype, self.b_i, self.b_h = mm_dtype, b_i, b_h
        self.weight = weight.to(mm_dtype)  # cast once for all steps
        new = b_h.new_empty
        self.inputs = new(steps, self.cells, batch, hidden)  # the state entering each cell
        self.gates = new(steps, self.cells, batch, 3 * hidden)
        self.gh_n = new(steps, self.cells, batch, hidden)
        self.norms = [
            norm_steps(None if gains is None else gains[k], b_h[k], steps, batch)
            for k in range(self.cells)
        ]

    def forward(self, t: int, h: torch.Tensor) -> torch.Tensor:
        """Step t's state after cells 2..D, from the first cell's h [B, H]."""
        for k in range(self.cells):
            self.inputs[t, k] = h
            gh = recurrent_gates(h, self.weight[k], self.b_h[k], self.norms[k], t, self.mm_dtype)
            gi = self.b_i[k].expand_as(gh)
            h = cell_forward(gi, gh, h, self.gates[t, k], self.gh_n[t, k])
        return h

    def backward(self, t: int, dh: torch.Tensor) -> torch.Tensor:
        """The gradient of the first cell's h from that of step t's state (walks the cells
        in reverse; the weights' gradients come from `grads`)."""
        if not self.cells:
            return dh
        if not hasattr(self, "d_gi"):
            self.d_gi, self.d_gh = torch.empty_like(self.gates), torch.empty_like(self.gates)
            self.d_u = self.d_gh if self.norms[0] is None else torch.empty_like(self.gates)
        for k in reversed(range(self.cells)):
            direct = cell_backward(
                dh, self.gates[t, k], self.gh_n[t, k], self.inputs[t, k], self.d_gi[t, k],
                self.d_gh[t, k],
            )  # fmt: skip
            if self.norms[k] is not None:
                self.d_u[t, k] = self.norms[k].backward(t, self.d_gh[t, k])
            dh = addmm_in(direct, self.d_u[t, k], self.weight[k], self.mm_dtype, dh.dtype)
        return dh

    def grads(self) -> tuple[torch.Tensor | None, ...]:
        """The gradients of weight, b_i, b_h and gains, after `backward` ran for every step."""
        if not self.cells:
            return None, None, None, None
        rows = self.inputs.shape[0] * self.inputs.shape[2]
        d_weight = torch.stack(
            [
                mm_in(
                    self.d_u[:, k].reshape(rows, -1).t(),
                    self.inputs[:, k].reshape(rows, -1),
                    self.mm_dtype,
                    self.inputs.dtype,
                )
                for k in range(self.cells)
            ]
        )
        d_gains = None
        if self.norms[0] is not None:
            d_gains = torch.stack([n.gain_grad(self.d_gh[:, k]) for k, n in enumerate(self.norms)])
        return d_weight, self.d_gi.sum((0, 2)), self.d_gh.sum((0, 2)), d_gains


class GRULayer(torch.autograd.Function):
    """One GRU layer in one direction over a whole sequence, with a hand-written backward.

    outputs, final = GRULayer.apply(gi, h0, w_hh, b_hh, mask, reverse, mm_dtype, gain,
    t_weight, t_b_i, t_b_h, t_gains): gi [T, B, 3H] is the input projection (`gru.projection`)
    for every step (one large product, done by the caller), h0 [B, H], mask [T, B] (True at real
    tokens: at padding the state is carried unchanged and the output is zero, which is what
    packed sequences compute), `reverse` runs from t = T-1 down, `mm_dtype` is the dtype the
    recurrent products run in (bfloat16 under autocast; the state, gates and gradients keep gi's
    dtype), `gain` the recurrent projection's layer-norm gain [3H] or None, t_* the deep
    transition's cells (`Transitions`; None for depth 1) → outputs [T, B, H], final [B, H].

    The backward computes per step only the gradients that must be sequential; the gradient of
    the recurrent matrix comes afterwards as one product over all T x B rows, where autograd
    (and PyTorch's CPU GRU) makes one small product per step.
    """

    @staticmethod
    def forward(  # noqa: D102
        ctx, gi, h0, w_hh, b_hh, mask, reverse, mm_dtype, gain, t_weight, t_b_i, t_b_h, t_gains
    ):
        steps, batch, h3 = gi.shape
        hidden = h3 // 3
        w_hh_m = w_hh.to(mm_dtype)  # [3H, H], cast once for all steps
        outputs, states = gi.new_empty(steps, batch, hidden), gi.new_empty(steps, batch, hidden)
        gates, gh_n = gi.new_empty(steps, batch, h3), gi.new_empty(steps, batch, hidden)
        norm = norm_steps(gain, b_hh, steps, batch)
        deep = Transitions(t_weight, t_b_i, t_b_h, t_gains, (steps, batch, hidden), mm_dtype)
        keep = mask.unsqueeze(2).to(gi.dtype)  # [T, B, 1]
        h = h0
        for t in reversed(range(steps)) if reverse else range(steps):
            gh = recurrent_gates(h, w_hh_m, b_hh, norm, t, mm_dtype)  # [B, 3H]
            new = deep.forward(t, cell_forward(gi[t], gh, h, gates[t], gh_n[t]))
            torch.mul(new, keep[t], out=outputs[t])
            h = torch.addcmul(h, keep[t], new - h, out=states[t])  # carried past padding
        ctx.save_for_backward(h0, w_hh_m, states, gates, gh_n, keep)
        ctx.reverse, ctx.mm_dtype, ctx.norm, ctx.deep = reverse, mm_dtype, norm, deep
        return outputs, h.clone()

    @staticmethod
    def backward(ctx, d_outputs, d_final):  # noqa: D102
        h0, w_hh, states, gates, gh_n, keep = ctx.saved_tensors  # w_hh in mm_dtype
        norm, deep, mm_dtype, dtype = ctx.norm, ctx.deep, ctx.mm_dtype, states.dtype
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
            d_new = keep[t] * (dh if d_outputs is None else dh + d_outputs[t])
            d_new = deep.backward(t, d_new)  # of the first cell's output
            # padded rows pass the state's gradient through; real rows go through z and U
            carried = dh * (1 - keep[t])
            direct = cell_backward(d_new, gates[t], gh_n[t], previous[t], d_gi[t], d_gh[t], carried)
            if norm is not None:
                d_uh[t] = norm.backward(t, d_gh[t])
            dh = addmm_in(direct, d_uh[t], w_hh, mm_dtype, dtype)
        rows = steps * batch
        d_w_hh = mm_in(d_uh.reshape(rows, -1).t(), previous.reshape(rows, -1), mm_dtype, dtype)
        d_gain = None if norm is None else norm.gain_grad(d_gh)
        return (
            d_gi, dh, d_w_hh, d_gh.sum((0, 1)), None, None, None, d_gain, *deep.grads(),
        )  # fmt: skip
