"""Search: beam search against exhaustive enumeration, greedy, batching and ensembles."""

import itertools

import pytest
import torch

from nmt.config import ModelConfig
from nmt.data.tokenizer import BOS_ID, EOS_ID, PAD_ID
from nmt.decode import ensemble
from nmt.decode.beam import beam_search
from nmt.decode.ensemble import TOP_BLOCK, top_k
from nmt.decode.greedy import greedy_search
from nmt.decode.hypothesis import length_penalty
from nmt.model import build_model

ARCHS = [("rnnenc", False), ("rnnsearch", False), ("luong", True)]


def _model(arch, vocab, feed=False, sharpen=4.0, seed=0):
    """A random model whose next-token distributions are peaked enough to matter."""
    torch.manual_seed(seed)
    cfg = ModelConfig(arch=arch, emb_size=8, hidden_size=12, dropout=0.0, input_feeding=feed)
    model = build_model(cfg, vocab, vocab, joint_vocab=False).double().eval()
    with torch.no_grad():
        model.output.weight.mul_(sharpen)
        model.output.bias.normal_(0, 1.0)
    return model


def _sources(lengths, vocab, seed=0):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(4, vocab, (len(lengths), max(lengths)), generator=g)
    for i, n in enumerate(lengths):
        src[i, n - 1] = EOS_ID
        src[i, n:] = PAD_ID
    return src, torch.tensor(lengths)


@torch.no_grad()
def _exhaustive(model, src, lengths, vocab, max_tokens, penalty, alpha):
    """Every output of up to `max_tokens` tokens (then eos), scored by teacher forcing."""
    allowed = [t for t in range(vocab) if t not in (PAD_ID, BOS_ID, EOS_ID)]
    outputs = [
        list(seq) for n in range(max_tokens + 1) for seq in itertools.product(allowed, repeat=n)
    ]
    width = max_tokens + 1
    tgt_in = torch.full((len(outputs), width), PAD_ID)
    tgt_out = torch.full((len(outputs), width), PAD_ID)
    for i, seq in enumerate(outputs):
        tgt_in[i, : len(seq) + 1] = torch.tensor([BOS_ID, *seq])
        tgt_out[i, : len(seq) + 1] = torch.tensor([*seq, EOS_ID])
    n = len(outputs)
    log_probs = model(src.expand(n, -1), lengths.expand(n), tgt_in).log_softmax(-1)
    log_probs[..., PAD_ID] = log_probs[..., BOS_ID] = float("-inf")
    token_scores = log_probs.gather(2, tgt_out.clamp(min=0).unsqueeze(2)).squeeze(2)
    total = token_scores.masked_fill(tgt_out == PAD_ID, 0.0).sum(1)
    scored = [
        (float(total[i]) / length_penalty(len(seq) + 1, penalty, alpha), seq)
        for i, seq in enumerate(outputs)
    ]
    return sorted(scored, key=lambda s: -s[0])


@pytest.mark.parametrize("arch, feed", ARCHS)
@pytest.mark.parametrize("penalty, alpha", [("none", 0.0), ("wu", 1.0), ("length", 0.0)])
def test_wide_beam_equals_exhaustive_search(arch, feed, penalty, alpha):
    """With a beam wider than the number of prefixes (here wider than the vocabulary), beam
    search finds exactly the best outputs that enumeration does: same tokens, same scores."""
    vocab, max_tokens = 6, 3  # 3 generable tokens besides eos: 40 outputs, 27 longest prefixes
    model = _model(arch, vocab, feed)
    src, lengths = _sources([4], vocab)
    hyps = beam_search(
        model, src, lengths, beam=64, nbest=5, alpha=alpha, penalty=penalty,
        max_len_a=0.0, max_len_b=max_tokens,
    )[0]  # fmt: skip
    expected = _exhaustive(model, src, lengths, vocab, max_tokens, penalty, alpha)[:5]
    assert [h.tokens for h in hyps] == [seq for _, seq in expected]
    for hyp, (score, _) in zip(hyps, expected):
        assert hyp.score == pytest.approx(score, abs=1e-9)


@pytest.mark.parametrize("arch, feed", ARCHS)
def test_beam_of_one_is_greedy(arch, feed):
    """Also: an eos that is not the best token does not end a beam-1 hypothesis."""
    vocab = 30
    model = _model(arch, vocab, feed, sharpen=1.0)
    with torch.no_grad():
        model.output.bias[EOS_ID] += 2.5  # eos often the best or the second-best token
    src, lengths = _sources([6, 3, 9, 2, 5, 7, 4, 8], vocab)
    tokens, scores = greedy_search(model, src, lengths, 1.0, 4)
    hyps = beam_search(model, src, lengths, beam=1, alpha=0.6, max_len_a=1.0, max_len_b=4)
    assert [h[0].tokens for h in hyps] == tokens
    for (hyp,), score, out in zip(hyps, scores.tolist(), tokens):
        assert hyp.score * length_penalty(len(out) + 1, "wu", 0.6) == pytest.approx(score)


@pytest.mark.parametrize("arch, feed", ARCHS)
def test_a_sentence_alone_equals_it_inside_a_mixed_batch(arch, feed):
    vocab = 30
    model = _model(arch, vocab, feed, sharpen=2.0).float()
    lengths = [3, 11, 7, 2, 9, 5, 12, 4]
    src, src_lengths = _sources(lengths, vocab, seed=1)
    batched = beam_search(model, src, src_lengths, beam=4, nbest=4, max_len_b=5)
    for i, n in enumerate(lengths):
        alone = beam_search(model, src[i : i + 1, :n], src_lengths[i : i + 1], 4, 4, max_len_b=5)
        assert [h.tokens for h in alone[0]] == [h.tokens for h in batched[i]]
        for a, b in zip(alone[0], batched[i]):
            assert a.score == pytest.approx(b.score, abs=1e-4)


@pytest.mark.parametrize("models", [1, 2])
def test_scoring_a_few_rows_per_pass_changes_nothing(monkeypatch, models):
    vocab = 30
    model = [_model("rnnsearch", vocab, seed=1), _model("luong", vocab, True, seed=2)][:models]
    src, lengths = _sources([3, 11, 7, 2, 9, 5, 12, 4], vocab, seed=1)
    whole = beam_search(model, src, lengths, beam=4, nbest=4, max_len_b=5)
    monkeypatch.setattr(ensemble, "CPU_SCORES_PER_PASS", 3 * vocab)  # 32 rows: 11 passes
    passes = beam_search(model, src, lengths, beam=4, nbest=4, max_len_b=5)
    for a, b in zip(itertools.chain(*passes), itertools.chain(*whole), strict=True):
        assert a.tokens == b.tokens
        assert a.score == pytest.approx(b.score, abs=1e-12)  # float64: product blocking only


def test_nbest_lists_are_distinct_and_sorted():
    vocab = 12
    model = _model("rnnsearch", vocab, sharpen=1.0)
    src, lengths = _sources([5, 8, 3], vocab)
    for hyps in beam_search(model, src, lengths, beam=8, nbest=8, max_len_b=6):
        assert len(hyps) == 8
        assert len({tuple(h.tokens) for h in hyps}) == 8
        scores = [h.score for h in hyps]
        assert scores == sorted(scores, reverse=True)


def test_an_ensemble_of_a_model_with_itself_equals_the_model():
    vocab = 30
    model = _model("rnnsearch", vocab)
    src, lengths = _sources([6, 3, 9], vocab)
    alone = beam_search(model, src, lengths, beam=5, nbest=3, attention=True)
    pair = beam_search([model, model], src, lengths, beam=5, nbest=3, attention=True)
    for a, b in zip(itertools.chain(*alone), itertools.chain(*pair)):
        assert a.tokens == b.tokens
        assert a.score == pytest.approx(b.score, abs=1e-12)
        torch.testing.assert_close(a.attention, b.attention)


def test_an_ensemble_of_different_models_averages_log_probabilities():
    vocab = 6
    one, two = _model("rnnsearch", vocab, seed=1), _model("luong", vocab, seed=2)
    src, lengths = _sources([4], vocab)
    best = beam_search([one, two], src, lengths, beam=64, alpha=0.0, max_len_a=0, max_len_b=3)
    first = _exhaustive(one, src, lengths, vocab, 3, "none", 0.0)
    second = dict((tuple(seq), s) for s, seq in _exhaustive(two, src, lengths, vocab, 3, "none", 0))
    averaged = max((s + second[tuple(seq)]) / 2 for s, seq in first)
    assert best[0][0].score == pytest.approx(averaged, abs=1e-9)


def test_attention_of_the_chosen_hypothesis():
    vocab = 30
    model = _model("rnnsearch", vocab)
    src, lengths = _sources([6, 3], vocab)
    for hyps, n in zip(beam_search(model, src, lengths, beam=3, attention=True), [6, 3]):
        weights = hyps[0].attention
        assert weights.shape == (len(hyps[0].tokens) + 1, n)  # one row per output and eos
        torch.testing.assert_close(weights.sum(1), torch.ones(weights.shape[0]).double())
    assert (
        beam_search(_model("rnnenc", vocab), src, lengths, attention=True)[0][0].attention is None
    )


def test_outputs_respect_the_length_limit():
    vocab = 30
    model = _model("rnnsearch", vocab, sharpen=0.0)  # uniform: eos is rarely the best token
    src, lengths = _sources([6, 2], vocab)
    for hyps, n in zip(
        beam_search(model, src, lengths, beam=3, max_len_a=1.0, max_len_b=2), [6, 2]
    ):
        assert all(len(h.tokens) <= n + 2 for h in hyps)


def test_search_and_scoring_alternate_under_bf16_autocast():
    """Validation decodes and computes the dev loss in turn, without autograd, under autocast:
    the weights search caches in bf16 must not leak into the loss path (which keeps float32)."""
    vocab = 30
    model = _model("rnnsearch", vocab).float()
    src, lengths = _sources([6, 3, 9], vocab)
    tgt = torch.randint(4, vocab, (3, 5))
    tgt_in = torch.cat([torch.full((3, 1), BOS_ID), tgt[:, :-1]], 1)
    with torch.no_grad():
        _, reference = model.loss(src, lengths, tgt_in, tgt)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            for _ in range(2):
                greedy_search(model, src, lengths)
                _, nll = model.loss(src, lengths, tgt_in, tgt)
                assert float(nll) == pytest.approx(float(reference), rel=0.05)


def test_the_blocked_top_k_equals_torch_topk():
    """Rows wide enough for blocks, with -inf runs, whole rows of -inf, ties and pieces of
    one block at the top: the same values as torch.topk, sorted, and indices that hold them."""
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(40, 64 * 48, generator=g).log_softmax(1)
    scores[:5] = float("-inf")
    scores[5:10, ::3] = float("-inf")
    scores[10:15] = scores[10:15].round(decimals=1)  # many ties
    scores[15, torch.arange(7) * 48] = 5.0  # seven of the best in one block
    for k in (1, 10, 12):
        assert scores.shape[1] >= 4 * k * TOP_BLOCK or k == 12
        values, index = top_k(scores, k)
        want = scores.topk(k, 1).values
        assert torch.equal(values, want)
        assert torch.equal(scores.gather(1, index), values)
        assert all(len(set(row)) == k for row in index[5:].tolist())  # distinct pieces
