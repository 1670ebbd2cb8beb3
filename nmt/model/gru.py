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

With a deep transition (`model.enc_transition_depth` / `dec_transition_depth` D > 1; Miceli
Barone et al. 2017, Nematus' and Marian's transition depth) each step is D cells: the one above,
then D - 1 cells with no input, h ← GRU_k(h) with gi = b_ik, each with its own U_k and biases.
The hand-written recurrence is in `gru_layer.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from nmt.model.gru_layer import LN_EPS, GRULayer


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
        if reset != "after":
            raise ValueError("the layer-normalised GRU is the 'after' variant only")
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


def projection(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, gain: torch.Tensor | None
) -> torch.Tensor:
    """W x + b, or γ ⊙ LN(W x) + b when the GRU is layer-normalised (gain given)."""
    return normed(F.linear(x, weight, bias if gain is None else None), gain, bias)


def normed(u: torch.Tensor, gain: torch.Tensor | None, bias: torch.Tensor | None) -> torch.Tensor:
    """A projection u as the gates take it: as it is without a gain (its bias already in it),
    γ ⊙ LN(u) + b with one."""
    return u if gain is None else layer_norm(u, gain, bias)


def layer_norm(u: torch.Tensor, gain: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """γ ⊙ LN(u) + b over u's last dimension (autograd's; float32 under autocast)."""
    return F.layer_norm(u, (u.shape[-1],), gain, bias, LN_EPS)


FAST_TANH_FROM = 4096  # elements: below, torch.tanh's one op costs less than four


def fast_tanh(x: torch.Tensor) -> torch.Tensor:
    """tanh(x) as 2σ(2x) - 1: within 2e-7 of it in float32, and 4x faster on the CPU, where
    PyTorch's sigmoid is vectorised and its tanh is not (0.16 against 0.63 ms for [465, 512]
    in float32, docs/notes/2026-12-04-int8-search.md). The search's steps use it; on a GPU,
    where one kernel beats four, and for a few rows (one sentence's beams: 11 against 8 µs
    for [5, 512]), it is torch.tanh."""
    if x.device.type != "cpu" or x.numel() < FAST_TANH_FROM:
        return torch.tanh(x)
    s = torch.sigmoid(2 * x)
    return 2 * s - 1 if s.requires_grad else s.mul_(2).sub_(1)


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
    candidate = fast_tanh(i_n + r * h_n)
    return candidate + z * (h - candidate)  # = (1 - z) * candidate + z * h


class TransitionCells(nn.Module):
    """Cells 2..D of a deep-transition step: `depth` - 1 GRU cells without input, each with its
    own U_k [3H, H] and biases b_ik, b_hk [3H] (and gain γ_k [3H] with layer norm), stacked in
    weight_hh [D-1, 3H, H], bias_ih, bias_hh (and ln_hh) [D-1, 3H]."""

    def __init__(self, hidden: int, depth: int, layer_norm: bool):
        super().__init__()
        cells = depth - 1
        self.weight_hh = nn.Parameter(torch.empty(cells, 3 * hidden, hidden))
        self.bias_ih = nn.Parameter(torch.zeros(cells, 3 * hidden))
        self.bias_hh = nn.Parameter(torch.zeros(cells, 3 * hidden))
        self.ln_hh = nn.Parameter(torch.ones(cells, 3 * hidden)) if layer_norm else None
        for block in self.weight_hh.data.view(-1, hidden).split(hidden):
            nn.init.orthogonal_(block)

    def params(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """What the hand-written kernels take (`gru_layer.Transitions`)."""
        return self.weight_hh, self.bias_ih, self.bias_hh, self.ln_hh

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """h [N, H] through the cells, by autograd (rnnsearch's reference path and its search
        step): for each k, h ← GRU_k(h) with gi = b_ik."""
        for k in range(self.weight_hh.shape[0]):
            if self.ln_hh is None:
                gh = F.linear(h, self.weight_hh[k], self.bias_hh[k])
            else:
                gh = layer_norm(F.linear(h, self.weight_hh[k]), self.ln_hh[k], self.bias_hh[k])
            h = gru_step(self.bias_ih[k].expand_as(gh), gh, h)
        return h


@dataclass(frozen=True)
class GRUOptions:
    """What a model's GRUs add to PyTorch's (model.layer_norm, residual, *_transition_depth)."""

    layer_norm: bool = False
    residual: bool = False
    transition_depth: int = 1


PLAIN_GRU = GRUOptions()  # PyTorch's GRU


class Dropouts(NamedTuple):
    """A model's dropout rates on its embeddings (model.emb_dropout) and between its stacked
    GRU layers (model.dropout); the output's is Seq2Seq's alone."""

    emb: float
    hidden: float


class GRU(nn.GRU):
    """`nn.GRU` with the `GRUOptions` PyTorch's kernels lack; run it with `run_gru`.

    - layer norm: each layer and direction has gains `ln_ih{sfx}` and `ln_hh{sfx}` [3H]
      (sfx = `_l{k}[_reverse]`; initialised to 1; see the module's docstring).
    - residual: layers `residual_from` and above add their input to their output (Marian's
      --skip; 1 where the first layer's input is not state-sized, 0 where it is).
    - transition depth D > 1: each step of each layer is a deep transition (Miceli Barone et al.
      2017), the first cell followed by `transitions[sfx]` (`TransitionCells`).
    """

    def __init__(self, *args, options: GRUOptions = PLAIN_GRU, residual_from: int = 1, **kwargs):
        super().__init__(*args, **kwargs)
        self.layer_norm, depth = options.layer_norm, options.transition_depth
        self.residual_from = residual_from if options.residual else None
        residual = options.residual and residual_from < self.num_layers
        self.own_kernel = self.layer_norm or residual or depth > 1  # not PyTorch's
        suffixes = [n[len("weight_hh") :] for n in self._flat_weights_names if "weight_hh" in n]
        for sfx in suffixes if self.layer_norm else ():
            self.register_parameter(f"ln_ih{sfx}", nn.Parameter(torch.ones(3 * self.hidden_size)))
            self.register_parameter(f"ln_hh{sfx}", nn.Parameter(torch.ones(3 * self.hidden_size)))
        self.transitions = nn.ModuleDict(
            {
                sfx: TransitionCells(self.hidden_size, depth, self.layer_norm)
                for sfx in (suffixes if depth > 1 else ())
            }
        )


def _layer(rnn: nn.GRU, sfx: str) -> dict[str, torch.Tensor | None]:
    """One layer and direction's parameters (sfx `_l{k}[_reverse]`), None where `rnn` lacks
    the option (any `nn.GRU` will do)."""
    names = ("weight_ih", "bias_ih", "weight_hh", "bias_hh", "ln_ih", "ln_hh")
    params = {name: getattr(rnn, name + sfx, None) for name in names}
    transitions = getattr(rnn, "transitions", {})
    deep = transitions[sfx].params() if sfx in transitions else (None,) * 4
    return params | dict(zip(("weight_hh_tr", "bias_ih_tr", "bias_hh_tr", "ln_hh_tr"), deep))


def run_gru(
    rnn: nn.Module,
    x: torch.Tensor,
    h0: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """What `rnn(x, h0)` computes (batch_first; padding per `mask` as packed sequences do).

    On a GPU this is `nn.GRU` itself (cuDNN), packed when a mask is given. On the CPU each
    layer and direction is one `GRULayer` with its input projection done for all steps at once;
    under autocast its products run in the autocast dtype and its state in float32. (PyTorch's
    CPU GRU under autocast slices the input projection per step, and the backward of each slice
    adds a full-size gradient: the bf16 encoder spent more time there than in its products.)
    Without autograd (translation, validation), autocast runs `nn.GRU` as before: there is no
    backward to pay for the slices, and autocast keeps its bf16 weights for the whole search
    where `GRULayer` would cast them at every call, which makes a search step slower.
    Both read the same parameters. A module that is not an `nn.GRU` (int8's) runs itself. A
    `GRU` with options PyTorch lacks (layer norm, residuals,
    deep transition) always runs `GRULayer`, on any device. x [B, T, I], h0 [L*D, B, H],
    mask [B, T] → outputs [B, T, D*H], final states [L*D, B, H] (in the autocast dtype under
    autocast).
    """
    if not isinstance(rnn, nn.GRU):  # a GRU that runs itself (`nmt.model.int8.Int8GRU`)
        return rnn(x, h0, mask)
    device = x.device.type
    autocast = torch.is_autocast_enabled(device)
    if not getattr(rnn, "own_kernel", False) and (
        x.is_cuda or (autocast and not torch.is_grad_enabled())
    ):
        return _run_nn_gru(rnn, x, h0, mask)
    residual_from = getattr(rnn, "residual_from", None)
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
            p = _layer(rnn, f"_l{layer}" + ("_reverse" if direction else ""))
            # [T, B, 3H], in mm_dtype under autocast (float32 after a norm)
            gi = projection(layer_input, p["weight_ih"], p["bias_ih"], p["ln_ih"])
            with torch.autocast(device, enabled=False):
                out, final = GRULayer.apply(
                    gi.to(dtype),
                    h0[layer * dirs + direction].to(dtype),
                    p["weight_hh"],
                    p["bias_hh"],
                    keep,
                    direction == 1,
                    mm_dtype,
                    p["ln_hh"],
                    p["weight_hh_tr"],
                    p["bias_ih_tr"],
                    p["bias_hh_tr"],
                    p["ln_hh_tr"],
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
