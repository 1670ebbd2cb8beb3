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
