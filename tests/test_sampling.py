"""Sampling: draws that follow the model's (tempered, truncated) distribution, reproducible for
a seed, and the same for a line whatever batch it is decoded in."""

import pytest
import torch
from test_search import _model, _sources

from nmt.data.tokenizer import BOS_ID, EOS_ID, PAD_ID
from nmt.decode.greedy import greedy_search
from nmt.decode.sampling import Sampler, uniform
from nmt.errors import NmtError

DRAWS = 6000


def test_the_hashed_noise_is_uniform_and_depends_on_every_coordinate():
    u = uniform(7, torch.arange(500), 3, 400)  # [500, 400]
    assert u.min() > 0 and u.max() < 1
    assert torch.equal(u, uniform(7, torch.arange(500), 3, 400))
    histogram = torch.histc(u.float(), bins=10, min=0, max=1) / u.numel()
    assert torch.allclose(histogram, torch.full((10,), 0.1), atol=0.005)
    for other in (uniform(8, torch.arange(500), 3, 400), uniform(7, torch.arange(500), 4, 400)):
        assert (other != u).float().mean() > 0.99
    assert (u[1:] != u[:-1]).float().mean() > 0.99 and (u[:, 1:] != u[:, :-1]).float().mean() > 0.99


def _first_tokens(model, sampler):
    """DRAWS draws of the first output token for one source, each as its own line."""
    src, lengths = _sources([5], 12)
    src, lengths = src.expand(DRAWS, -1), lengths.expand(DRAWS)
    tokens, _ = greedy_search(model, src, lengths, 0.0, 1, sampler=sampler)
    return torch.tensor([t[0] if t else EOS_ID for t in tokens])


def _first_step_probs(model, temperature):
    src, lengths = _sources([5], 12)
    with torch.no_grad():
        log_probs = model.log_probs(model.features(src, lengths, torch.tensor([[BOS_ID]])))[0, 0]
    log_probs[[PAD_ID, BOS_ID]] = float("-inf")
    return (log_probs / temperature).softmax(0)


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_draws_follow_the_tempered_distribution(temperature):
    model = _model("rnnsearch", 12, sharpen=1.0)
    want = _first_step_probs(model, temperature)
    got = torch.bincount(_first_tokens(model, Sampler(temperature=temperature)), minlength=12)
    freq = got.double() / DRAWS
    tolerance = 5 * (want * (1 - want) / DRAWS).sqrt() + 1e-9
    assert ((freq - want).abs() <= tolerance).all(), (freq, want)


def test_topk_and_topp_draw_only_from_their_set_in_proportion():
    model = _model("rnnsearch", 12, sharpen=1.0)
    probs = _first_step_probs(model, 1.0)
    order = probs.argsort(descending=True)
    for sampler, kept in ((Sampler("topk", k=3), 3), (Sampler("topp", p=0.6), None)):
        if kept is None:  # the fewest most probable tokens whose mass reaches 0.6
            kept = int((probs[order].cumsum(0) < 0.6).sum()) + 1
        support = order[:kept]
        got = torch.bincount(_first_tokens(model, sampler), minlength=12).double() / DRAWS
        assert set(got.nonzero().squeeze(1).tolist()) == set(support.tolist())
        want = probs[support] / probs[support].sum()
        tolerance = 5 * (want * (1 - want) / DRAWS).sqrt()
        assert ((got[support] - want).abs() <= tolerance).all()


def test_a_line_gets_the_same_draw_in_any_batch_and_seeds_differ():
    model = _model("luong", 30, True, sharpen=1.0)
    src, lengths = _sources([3, 11, 7, 2, 9, 5, 12, 4], 30, seed=1)
    lines = torch.tensor([10, 11, 12, 13, 14, 15, 16, 17])
    sampler = Sampler("topp", p=0.9, seed=3)
    batched, scores = greedy_search(model, src, lengths, 1.0, 5, sampler=sampler, lines=lines)
    for i in range(len(lines)):
        n = int(lengths[i])
        alone, score = greedy_search(
            model, src[i : i + 1, :n], lengths[i : i + 1], 1.0, 5, sampler=sampler,
            lines=lines[i : i + 1],
        )  # fmt: skip
        assert alone == [batched[i]] and float(score) == pytest.approx(float(scores[i]))
    other, _ = greedy_search(
        model, src, lengths, 1.0, 5, sampler=Sampler("topp", p=0.9, seed=4), lines=lines
    )
    assert other != batched


@pytest.mark.parametrize(
    "spec, temperature", [("topk:0", 1.0), ("topp:1.5", 1.0), ("beam", 1.0), ("full", 0.0)]
)
def test_bad_sampling_settings_say_which_flag(spec, temperature):
    with pytest.raises(NmtError) as err:
        Sampler.parse(spec, temperature)
    assert err.value.where in ("--sampling", "--temperature")
