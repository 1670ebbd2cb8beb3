"""int8 products for translation (`--precision int8`): each product within its quantisation's
error bound of float32, a quantised model's search close to the float one, and the CLI."""

import copy

import pytest
import torch
import torch.nn.functional as F
from test_model import _batch, _model
from test_search import _model as _peaked
from test_search import _sources

from nmt.decode.beam import beam_search
from nmt.device import resolve_runtime
from nmt.errors import NmtError
from nmt.model.gru import GRU, GRUOptions, run_gru
from nmt.model.int8 import Int8GRU, Int8Linear, quantize, quantize_rows


def _bound(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The largest error int8 rounding can make in x Wᵀ [N, out]: x̂ = x + e, |e| ≤ Δx (half
    its row's step, row max / 127) and ŵ = w + f, |f| ≤ Δw (its unit's), so
    |Σ x̂ ŵ - Σ x w| ≤ Δw Σ|x| + Δx Σ|w| + K Δx Δw over the K inputs."""
    dx = x.abs().amax(1, keepdim=True) / 127 / 2  # [N, 1]
    dw = (weight.abs().amax(1) / 127 / 2).unsqueeze(0)  # [1, out]
    sums_x, sums_w = x.abs().sum(1, keepdim=True), weight.abs().sum(1).unsqueeze(0)
    return dw * sums_x + dx * sums_w + weight.shape[1] * dx * dw


def test_an_int8_layer_stays_within_its_rounding_bound_of_float32():
    g = torch.Generator().manual_seed(0)
    layer = torch.nn.Linear(64, 48)
    x = torch.randn(20, 64, generator=g) * torch.rand(20, 1, generator=g) * 5  # rows of all sizes
    want = layer(x).detach()
    got = Int8Linear.of(layer.weight, layer.bias)(x)
    assert got.dtype == torch.float32 and got.shape == want.shape
    error = (got - want).abs()
    assert (error <= _bound(x, layer.weight.detach()) + 1e-5).all()
    assert error.max() > 0  # it did round
    assert error.max() < 0.02 * want.abs().max()  # about 1% of the largest output
    assert Int8Linear.of(layer.weight, layer.bias)(x.bfloat16()).dtype == torch.float32


def test_the_rows_and_columns_of_an_int8_layer_are_its_parts():
    layer = torch.nn.Linear(32, 40)
    int8 = Int8Linear.of(layer.weight, layer.bias)
    x = torch.randn(7, 32)
    ids = torch.tensor([39, 0, 5, 6, 17])
    assert torch.equal(int8.rows(ids)(x), int8(x)[:, ids])
    first, rest = int8.columns(0, 12, bias=False), int8.columns(12, 32, bias=True)
    parts = first(x[:, :12]) + rest(x[:, 12:])  # each part quantises its inputs on its own
    want = layer(x).detach()
    assert (parts - want).abs().max() <= 0.02 * want.abs().max()


def test_quantising_keeps_rows_of_zeros_and_the_signs():
    q, scale = quantize_rows(torch.tensor([[0.0, 0.0], [-2.0, 1.0]]))
    assert q.tolist() == [[0, 0], [-127, 64]] and scale[0] > 0


@pytest.mark.parametrize("layers", [1, 2])
def test_the_int8_gru_follows_the_float_one(layers):
    torch.manual_seed(0)
    gru = GRU(16, 24, layers, batch_first=True)
    x, h0 = torch.randn(3, 5, 16), torch.randn(layers, 3, 24) * 0.5
    with torch.no_grad():
        want, want_h = run_gru(gru, x, h0)
        got, got_h = run_gru(Int8GRU(gru), x, h0)  # run_gru hands it its own call
    assert got.shape == want.shape and got_h.shape == want_h.shape
    assert (got - want).abs().max() < 0.03 and (got - want).abs().max() > 0
    torch.testing.assert_close(got[:, -1], got_h[-1])
    with pytest.raises(ValueError, match="plain"):
        Int8GRU(GRU(16, 24, 1, batch_first=True, options=GRUOptions(layer_norm=True)))


@pytest.mark.parametrize("layers", [1, 2])
def test_the_int8_encoder_gru_reads_padded_sources_as_packed_ones(layers):
    """Bidirectional over padded rows: each direction's outputs follow float32's, zero at the
    padding, and the final states are taken at each row's own end (the reverse pass starts
    there), as PyTorch's packed GRU gives them."""
    torch.manual_seed(1)
    gru = GRU(16, 24, layers, batch_first=True, bidirectional=True)
    x = torch.randn(4, 7, 16)
    mask = torch.arange(7) < torch.tensor([7, 3, 5, 1]).unsqueeze(1)  # [B, T]
    x[~mask] = 100.0  # never read
    with torch.no_grad():
        want, want_h = run_gru(gru, x, None, mask)
        got, got_h = run_gru(Int8GRU(gru), x, None, mask)
    assert got.shape == want.shape == (4, 7, 48) and got_h.shape == want_h.shape
    assert (got - want).abs().max() < 0.03 and (got_h - want_h).abs().max() < 0.03
    assert bool((got[~mask] == 0).all())
    with torch.no_grad():  # a row alone, unpadded, gives the same
        alone, alone_h = run_gru(Int8GRU(gru), x[1:2, :3], None)
    torch.testing.assert_close(alone, got[1:2, :3])
    torch.testing.assert_close(alone_h, got_h[:, 1:2])


NORM = {"layer_norm": True}
QUANTISED = [("luong", False, 1, {}), ("luong", True, 2, {}), ("rnnenc", False, 2, {}),
             ("rnnsearch", False, 2, {}), ("rnnsearch", False, 1, NORM)]  # fmt: skip


@pytest.mark.parametrize("arch, feed, layers, options", QUANTISED)
def test_a_quantised_model_scores_and_searches_like_the_float_one(arch, feed, layers, options):
    """Per step, logits within 2% of their range of float32's (the stated tolerance) and
    log-probabilities within 0.05."""
    model = _model(arch, feed, layers, options, dtype=torch.float32, emb=32, hidden=48).eval()
    int8 = quantize(copy.deepcopy(model))
    assert isinstance(int8.output, Int8Linear)
    if arch == "rnnsearch":  # its fused products, and the layers above the first
        assert int8.decoder.int8 and all(
            isinstance(p, Int8Linear) for p in int8.decoder._search_layers(None)
        )
        assert layers == 1 or isinstance(int8.decoder.upper, Int8GRU)
    else:
        assert isinstance(int8.decoder.rnn, Int8GRU)
    assert isinstance(int8.encoder.rnn, Int8GRU) != bool(options)  # plain GRUs only
    src, lengths, tgt_in, _ = _batch([7, 5, 2])
    with torch.no_grad():
        states = [m.search_state(m.encode(src, lengths)) for m in (model, int8)]
        for t in range(tgt_in.shape[1]):
            (f, states[0], _), (g, states[1], _) = (
                m.decoder.step(tgt_in[:, t], s) for m, s in zip((model, int8), states)
            )
            logits = model.output(f)
            assert (int8.output(g) - logits).abs().max() <= 0.02 * (logits.max() - logits.min())
            assert (int8.log_probs(g) - model.log_probs(f)).abs().max() < 0.05


@pytest.mark.parametrize("arch, feed", [("luong", False), ("luong", True), ("rnnenc", False),
                                        ("rnnsearch", False)])  # fmt: skip
def test_a_quantised_model_finds_the_float_models_translations(arch, feed):
    """On a model whose distributions are peaked (as a trained one's), beam search in int8
    finds float32's best hypothesis, with a score within the per-step tolerance, wherever
    float32's best leads its second by more than that tolerance (else it finds one of the
    two)."""
    model = _peaked(arch, 40, feed, sharpen=4.0).float()
    int8 = quantize(copy.deepcopy(model))
    src, lengths = _sources([7, 5, 2, 9], 40, seed=3)
    want = beam_search(model, src, lengths, beam=4, nbest=2, max_len_b=5)
    got = beam_search(int8, src, lengths, beam=4, nbest=1, max_len_b=5)
    clear = 0
    for (best, second), (found,) in zip(want, got):
        if best.score - second.score > 0.1:
            clear += 1
            assert found.tokens == best.tokens
            assert found.score == pytest.approx(best.score, abs=0.1)
        else:
            assert found.tokens in (best.tokens, second.tokens)
    assert clear >= 3


def test_int8_is_for_translating_on_a_cpu():
    assert resolve_runtime("cpu", "int8", int8=True).precision == "int8"
    with pytest.raises(NmtError, match="int8 is for translating"):
        resolve_runtime("cpu", "int8")  # training's call
    with pytest.raises(NmtError) as error:
        resolve_runtime("cpu", "int4", int8=True)
    assert "auto, fp32, bf16, fp16 or int8" in error.value.fix


def test_f_linear_and_int8_agree_on_an_output_layer_shape():
    """The shapes of a real output layer (many units, few inputs) keep the same tolerance."""
    g = torch.Generator().manual_seed(1)
    weight, bias = torch.randn(2000, 64, generator=g) * 0.1, torch.randn(2000, generator=g)
    x = torch.randn(33, 64, generator=g)
    want = F.linear(x, weight, bias)
    got = Int8Linear.of(weight, bias)(x)
    assert (got - want).abs().max() <= 0.02 * (want.max() - want.min())
