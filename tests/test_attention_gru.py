"""The hand-written backward of rnnsearch's recurrence against autograd, in float64."""

import pytest
import torch

from nmt.config import ModelConfig
from nmt.model import build_model
from nmt.model.attention_gru import AttentionGRU
from tests.conftest import away_from_init

NO_DEEP = (None, None, None, None)  # the deep-transition arguments, for depth 1


def _setup(seed=0, batch=3, src_len=6, tgt_len=5):
    torch.manual_seed(seed)
    cfg = ModelConfig(arch="rnnsearch", emb_size=8, hidden_size=10, dropout=0.0)
    model = build_model(cfg, 30, 30, joint_vocab=True).double()
    src = torch.randint(4, 30, (batch, src_len))
    src[1, 4:] = 0  # padding: masked positions must get no attention and no gradient
    lengths = (src != 0).sum(1)
    state = model.encode(src, lengths)
    decoder = model.decoder
    w_y, w_c, recurrent, bias = decoder._fused()
    gi_y = torch.randn(batch, tgt_len, 3 * 10, dtype=torch.float64)
    return decoder, state, gi_y, w_c, recurrent, bias


def _leaves(*tensors):
    return [t.detach().clone().requires_grad_() for t in tensors]


def test_forward_and_gradients_match_autograd():
    decoder, state, gi_y, w_c, recurrent, bias = _setup()
    v = decoder.attention.v.weight.squeeze(0)
    inputs = _leaves(gi_y, state.hidden[0], state.keys, state.memory, recurrent, bias, w_c, v)
    gi, s0, keys, memory, rec, b, wc, vv = inputs
    reference_state = type(state)(hidden=s0.unsqueeze(0), memory=memory, keys=keys, mask=state.mask)
    with torch.no_grad():
        decoder.attention.v.weight.copy_(vv.unsqueeze(0))
    decoder.attention.v.weight.requires_grad_(True)
    ref = decoder.recurrence(gi, reference_state, wc, rec, b)  # autograd through every op
    g_states, g_contexts = torch.randn_like(ref[0]), torch.randn_like(ref[1])
    (ref[0] * g_states).sum().add_((ref[1] * g_contexts).sum()).backward()
    expected = [x.grad.clone() for x in (gi, s0, keys, memory, rec, b, wc)]
    expected.append(decoder.attention.v.weight.grad.squeeze(0).clone())

    fused_inputs = _leaves(gi_y, state.hidden[0], state.keys, state.memory, recurrent, bias, w_c, v)
    gi2, s02, keys2, memory2, rec2, b2, wc2, v2 = fused_inputs
    states, contexts, weights = AttentionGRU.apply(
        gi2.transpose(0, 1),
        s02,
        keys2,
        memory2,
        state.mask,
        rec2,
        b2,
        wc2,
        v2,
        torch.float64,
        None,
        None,
        *NO_DEEP,
    )
    torch.testing.assert_close(states.transpose(0, 1), ref[0], rtol=0, atol=1e-12)
    torch.testing.assert_close(contexts.transpose(0, 1), ref[1], rtol=0, atol=1e-12)
    torch.testing.assert_close(weights.transpose(0, 1), ref[2], rtol=0, atol=1e-12)
    (states.transpose(0, 1) * g_states).sum().add_(
        (contexts.transpose(0, 1) * g_contexts).sum()
    ).backward()
    for name, x, want in zip(
        ["gi_y", "s0", "keys", "memory", "w_rec", "b_rec", "w_c", "v"], fused_inputs, expected
    ):
        torch.testing.assert_close(x.grad, want, rtol=1e-10, atol=1e-10, msg=name)
    assert keys2.grad[1, 4:].abs().max() == 0 and memory2.grad[1, 4:].abs().max() == 0


def test_gradcheck():
    decoder, state, gi_y, w_c, recurrent, bias = _setup(seed=1, batch=2, src_len=3, tgt_len=3)
    v = decoder.attention.v.weight.squeeze(0)
    inputs = _leaves(gi_y.transpose(0, 1), state.hidden[0], state.keys, state.memory)
    weights = _leaves(recurrent, bias, w_c, v)

    def first_two(*args):
        return AttentionGRU.apply(
            *args[:4], state.mask, *args[4:], torch.float64, None, None, *NO_DEEP
        )[:2]

    assert torch.autograd.gradcheck(first_two, (*inputs, *weights))


@pytest.mark.parametrize("layer_norm", [False, True])
def test_bf16_products_under_autocast_agree_with_the_reference_path(layer_norm):
    """Under CPU bf16 autocast the fused loop runs its products in bf16 (state and gradients
    in fp32); it must agree with autograd through the reference loop to bf16 precision."""
    torch.manual_seed(0)
    cfg = ModelConfig(
        arch="rnnsearch", emb_size=16, hidden_size=32, dropout=0.0, layer_norm=layer_norm
    )
    model = build_model(cfg, 40, 40, joint_vocab=True)
    src = torch.randint(4, 40, (4, 9))
    src[2, 6:] = 0
    (loss_f, grads_f), (loss_r, grads_r) = _fused_and_reference(model, src, 8, autocast=True)
    torch.testing.assert_close(loss_f, loss_r, rtol=2e-2, atol=0)
    flat_f, flat_r = (
        torch.cat([g.flatten() for g in grads.values()]) for grads in (grads_f, grads_r)
    )
    assert torch.nn.functional.cosine_similarity(flat_f, flat_r, dim=0) > 0.99


def _fused_and_reference(model, src, tgt_len, autocast=False):
    """(loss, {name: gradient}) of one batch through the hand-written loop, then through the
    reference loop (autograd op by op), in bf16 autocast if asked."""
    tgt = torch.randint(4, model.output.out_features, (src.shape[0], tgt_len))
    results = []
    for fused in (True, False):
        model.decoder.fused_recurrence = fused
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss, _ = model.loss(src, (src != 0).sum(1), tgt[:, :-1], tgt[:, 1:])
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    return results


@pytest.mark.parametrize(
    "options",
    [
        {"layer_norm": True},
        {"dec_transition_depth": 3},
        {"layer_norm": True, "dec_transition_depth": 2},
    ],
)
def test_options_fused_recurrence_equals_autograd_through_the_reference(options):
    """With layer norm (norms of U s and W_c c inside the loop) and/or a deep transition (cells
    2..D after the GRU), the hand-written loop computes the reference loop's loss and the same
    gradient for every parameter, gains and transition cells included."""
    torch.manual_seed(2)
    cfg = ModelConfig(arch="rnnsearch", emb_size=8, hidden_size=10, dropout=0.0, **options)
    model = build_model(cfg, 30, 30, joint_vocab=True).double()
    away_from_init(model.decoder)
    src = torch.randint(4, 30, (3, 6))
    src[1, 4:] = 0
    (loss, grads), (ref_loss, ref_grads) = _fused_and_reference(model, src, 6)
    torch.testing.assert_close(loss, ref_loss, rtol=0, atol=1e-10)
    for name, grad in ref_grads.items():
        assert grad.abs().max() > 0 or "embed" in name, name  # every parameter is used
        torch.testing.assert_close(grads[name], grad, rtol=1e-9, atol=1e-10, msg=name)


@pytest.mark.parametrize("layer_norm, depth", [(True, 1), (False, 2), (True, 2)])
def test_options_gradcheck(layer_norm, depth):
    decoder, state, gi_y, w_c, recurrent, bias = _setup(seed=3, batch=2, src_len=3, tgt_len=3)
    v = decoder.attention.v.weight.squeeze(0)
    inputs = _leaves(gi_y.transpose(0, 1), state.hidden[0], state.keys, state.memory)
    weights = _leaves(recurrent, torch.randn_like(bias), w_c, v)
    f64 = {"dtype": torch.float64}
    gains = _leaves(torch.rand(30, **f64) + 0.5, torch.rand(30, **f64) + 0.5) if layer_norm else []
    cells = depth - 1
    deep = _leaves(torch.randn(cells, 30, 10, **f64), torch.randn(cells, 30, **f64),
                   torch.randn(cells, 30, **f64)) if cells else []  # fmt: skip
    if cells and layer_norm:
        deep += _leaves(torch.rand(cells, 30, **f64) + 0.5)

    def first_two(*args):
        it = iter(args)
        fixed = [next(it) for _ in range(8)]
        ln = [next(it), next(it)] if layer_norm else [None, None]
        tr = [next(it) for _ in range(3)] if cells else [None] * 3
        tr.append(next(it) if cells and layer_norm else None)
        return AttentionGRU.apply(*fixed[:4], state.mask, *fixed[4:], torch.float64, *ln, *tr)[:2]

    assert torch.autograd.gradcheck(first_two, (*inputs, *weights, *gains, *deep))
