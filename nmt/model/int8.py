"""int8 products for translation on the CPU (`--precision int8`).

Weights are quantised once, at load: symmetric, one scale per output unit (a row of W, so a
large row does not cost the small ones their precision). Activations are quantised at every
call, one scale per row of the batch. `torch._int_mm` multiplies int8 by int8 into int32 with
the CPU's integer dot products (AVX512-VNNI here); the int32 sums are scaled back to float32 by
both scales and the bias added. On this project's CPU the product alone runs 2.0-2.2x a bf16
product, and with the quantising and the scaling 1.5-1.65x, at the decoder's shapes
(docs/notes/2026-12-04-int8-search.md).

What is quantised (`quantize`): the output layer of every model, the encoder's GRU where it
is a plain one (`Int8GRU`, bidirectional over padded sources: 1.05x on the recipe's `luong`),
and the products of a decoder step: for `luong` and `rnnenc` its GRU and linear layers, for
`rnnsearch` the fused products its step takes (`RNNSearchDecoder._search_layers`) and the
plain GRU layers above the first. The attention's products (its keys are made once per
sentence), the gates, layer norms and the softmax stay as they were.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from nmt.errors import NmtError
from nmt.model.decoder import autocast_dtype
from nmt.model.gru import GRU, gru_step

LEVELS = 127.0  # symmetric int8: -127..127


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [N, D] (float) → int8 [N, D] and the scale of each row [N, 1] (x ≈ q * scale)."""
    x = x.float()
    scale = x.abs().amax(1, keepdim=True).clamp_(min=1e-12).div_(LEVELS)  # [N, 1]
    return torch.div(x, scale).round_().to(torch.int8), scale


class Int8Linear(nn.Module):
    """y = x Wᵀ + b with W in int8 (a scale per output unit) and x quantised per row; y is
    float32 whatever x's dtype."""

    def __init__(self, q: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.register_buffer("q", q)  # [out, in] int8
        self.register_buffer("scale", scale)  # [out]
        self.register_buffer("bias", bias)  # [out] float32, or None
        self.out_features, self.in_features = q.shape

    @classmethod
    def of(cls, weight: torch.Tensor, bias: torch.Tensor | None) -> Int8Linear:
        """A float layer's weight [out, in] and bias [out], quantised."""
        q, scale = quantize_rows(weight.detach())
        bias = None if bias is None else bias.detach().float()
        return cls(q, scale.squeeze(1), bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., in] → [..., out] float32."""
        flat = x.reshape(-1, x.shape[-1])  # [N, in]
        q, row_scale = quantize_rows(flat)
        # in place: three passes over one new tensor (with `*` and a broadcast addcmul, the
        # scaling took 2.6x as long as here)
        y = torch._int_mm(q, self.q.t()).float().mul_(self.scale).mul_(row_scale)  # [N, out]
        if self.bias is not None:
            y.add_(self.bias)
        return y.view(*x.shape[:-1], self.out_features)

    def rows(self, ids: torch.Tensor) -> Int8Linear:
        """The layer over the output units `ids` [U] alone (a shortlist's)."""
        return Int8Linear(
            self.q[ids], self.scale[ids], None if self.bias is None else self.bias[ids]
        )

    def columns(self, start: int, stop: int, bias: bool) -> Int8Linear:
        """The layer over its inputs start..stop alone (with its bias or none); the rows keep
        their scales."""
        return Int8Linear(
            self.q[:, start:stop].contiguous(), self.scale, self.bias if bias else None
        )


Linear = Callable[[torch.Tensor], torch.Tensor]


def output_rows(layer: nn.Module, ids: torch.Tensor, dtype: torch.dtype | None) -> Linear:
    """A linear layer (`nn.Linear` or `Int8Linear`) over its output units `ids` [U] alone,
    gathered once; a float layer's rows in `dtype` if given."""
    if isinstance(layer, Int8Linear):
        return layer.rows(ids)
    weight, bias = layer.weight[ids], layer.bias[ids]
    if dtype is not None:
        weight, bias = weight.to(dtype), bias.to(dtype)
    return functools.partial(F.linear, weight=weight, bias=bias)


def split_inputs(layer: nn.Module, first: int, dtype: torch.dtype | None) -> tuple[Linear, Linear]:
    """A linear layer (`nn.Linear` or `Int8Linear`) W [a; b] + bias split by its inputs into
    (a ↦ W_a a, b ↦ W_b b + bias), the first `first` inputs being a; a float layer's parts in
    `dtype` if given."""
    if isinstance(layer, Int8Linear):
        return layer.columns(0, first, False), layer.columns(first, layer.in_features, True)
    w_a, w_b = (w.contiguous().to(dtype or w.dtype) for w in layer.weight.detach().split(
        [first, layer.in_features - first], 1))  # fmt: skip
    bias = None if layer.bias is None else layer.bias.detach().to(dtype or layer.bias.dtype)
    return (
        functools.partial(F.linear, weight=w_a, bias=None),
        functools.partial(F.linear, weight=w_b, bias=bias),
    )


class Int8GRU(nn.Module):
    """A stack of PyTorch-style GRU layers ("after" reset, no layer norm, residuals or deep
    transition), one- or bidirectional, with int8 products: a decoder's, or an encoder's over
    padded sources. `run_gru` runs it like a GRU: x [B, T, I], h0 [L*D, B, H] or None, mask
    [B, T] → outputs [B, T, D*H] (zeros at padding), final states [L*D, B, H] (each direction's
    at each row's true end, as packed sequences give them), in h0's dtype, or the autocast dtype
    (as PyTorch's GRU returns them under autocast)."""

    def __init__(self, gru: GRU):
        super().__init__()
        if getattr(gru, "own_kernel", False):
            raise ValueError("Int8GRU takes a plain GRU (no layer norm, residual or transition)")
        self.directions = 2 if gru.bidirectional else 1
        suffixes = [
            f"_l{k}{'_reverse' if d else ''}"
            for k in range(gru.num_layers)
            for d in range(self.directions)
        ]
        self.inputs, self.recurrent = (
            nn.ModuleList(
                Int8Linear.of(
                    getattr(gru, f"weight_{kind}{sfx}"), getattr(gru, f"bias_{kind}{sfx}")
                )
                for sfx in suffixes
            )
            for kind in ("ih", "hh")
        )
        self.hidden = gru.hidden_size

    def forward(
        self, x: torch.Tensor, h0: torch.Tensor | None, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        dtype = h0.dtype if h0 is not None else autocast_dtype(x) or x.dtype
        if h0 is None:
            h0 = x.new_zeros(len(self.inputs), x.shape[0], self.hidden, dtype=torch.float32)
        keep = None if mask is None else mask.t().unsqueeze(2)  # [T, B, 1]
        layer_input, finals = x, []
        for k in range(0, len(self.inputs), self.directions):
            outputs = []
            for i in range(k, k + self.directions):
                out, h = self._direction(i, layer_input, h0[i].float(), keep, reverse=i > k)
                outputs.append(out)
                finals.append(h)
            layer_input = torch.cat(outputs, 2) if self.directions > 1 else outputs[0]
        return layer_input.to(dtype), torch.stack(finals).to(dtype)

    def _direction(
        self, i: int, x: torch.Tensor, h: torch.Tensor, keep: torch.Tensor | None, reverse: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer-direction i over x [B, T, I] from h [B, H]: outputs [B, T, H], the final h.
        At padding (keep [T, B, 1] false) h is carried, so a reverse pass starts at each row's
        own end, and the output is zero."""
        gi = self.inputs[i](x)  # [B, T, 3H] for all steps at once
        steps = range(x.shape[1] - 1, -1, -1) if reverse else range(x.shape[1])
        outputs: list[torch.Tensor] = [h] * x.shape[1]
        for t in steps:
            new = gru_step(gi[:, t], self.recurrent[i](h), h)  # [B, H]
            if keep is None:
                outputs[t] = h = new
            else:
                h = torch.where(keep[t], new, h)
                outputs[t] = new * keep[t]
        return torch.stack(outputs, 1), h


def quantize(model: nn.Module) -> nn.Module:
    """The model (a `Seq2Seq`, in eval mode) with int8 products where its search runs them
    (see the module docstring), in place; refused where this torch cannot multiply int8."""
    check_int8()
    model.output = Int8Linear.of(model.output.weight, model.output.bias)
    decoder = model.decoder
    own = hasattr(decoder, "int8")  # rnnsearch: its step quantises its fused weights itself
    if own:
        decoder.int8 = True
    if isinstance(model.encoder.rnn, GRU) and not model.encoder.rnn.own_kernel:
        model.encoder.rnn = Int8GRU(model.encoder.rnn)
    # the decoder's own layers; its attention's keys, made once per sentence, stay float
    # (in int8 they cost luong 0.12 BLEU with the shortlist for no speed)
    for name, child in list(decoder.named_children()):
        if isinstance(child, GRU) and not child.own_kernel:
            setattr(decoder, name, Int8GRU(child))
        elif isinstance(child, nn.Linear) and not own:
            setattr(decoder, name, Int8Linear.of(child.weight, child.bias))
    return model


def check_int8() -> None:
    """int8 products need `torch._int_mm` on the CPU (PyTorch 2.2 and later)."""
    try:
        ones = torch.ones(2, 8, dtype=torch.int8)
        ok = bool((torch._int_mm(ones, ones.t()) == 8).all())
    except (AttributeError, RuntimeError):
        ok = False
    if not ok:
        raise NmtError(
            f"this PyTorch ({torch.__version__}) cannot multiply int8 matrices on the CPU",
            "--precision int8",
            "use --precision auto, or the pinned torch (make install)",
        )
