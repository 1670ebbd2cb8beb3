"""Continuous batching: sentences that join a running beam search, or leave it unfinished, do
not change any other sentence's result."""

import pytest
import torch
from test_constraints import SYMBOLS
from test_search import ARCHS, _exhaustive, _model, _sources

from nmt.decode.beam import BeamBatch, beam_search
from nmt.decode.constraints import Constraints
from nmt.decode.greedy import greedy_search

LENGTHS = [3, 11, 7, 2, 9, 5, 12, 4]
JOINS = {0: [0, 1], 2: [2], 3: [3, 4, 5], 7: [6], 8: [7]}  # step → the sentences joining then


def _alone(model, src, lengths, i, constraints=None, **options):
    n = int(lengths[i])
    one = None if constraints is None else constraints[torch.tensor([i])]
    return beam_search(model, src[i : i + 1, :n], lengths[i : i + 1], constraints=one, **options)[0]


def _staggered(model, src, lengths, joins, constraints=None, **options):
    """Decode with sentences joining at the steps `joins` gives; results by sentence."""
    batch, out, step = BeamBatch(model, **options), {}, 0
    while step <= max(joins) or len(batch):
        if step in joins:
            rows = torch.tensor(joins[step])
            n = int(lengths[rows].max())
            part = None if constraints is None else constraints[rows]
            batch.add(joins[step], src[rows, :n], lengths[rows], part)
        out.update(batch.step())
        step += 1
    return out


def _same(a, b):
    assert [h.tokens for h in a] == [h.tokens for h in b]
    for x, y in zip(a, b):
        assert x.score == pytest.approx(y.score, abs=1e-9)
        if x.attention is not None:
            assert torch.allclose(x.attention, y.attention, atol=1e-9)


@pytest.mark.parametrize("arch, feed", ARCHS)
def test_sentences_joining_a_running_search_get_their_results_alone(arch, feed):
    """Sentences of other lengths join while others are mid-search (the batch grows, the
    source side widens, some leave before others join); each gets exactly what it gets
    decoded alone: tokens, scores and attention."""
    model = _model(arch, 30, feed, sharpen=2.0)
    src, lengths = _sources(LENGTHS, 30, seed=1)
    options = dict(beam=4, nbest=4, max_len_b=5, attention=True)
    staggered = _staggered(model, src, lengths, JOINS, **options)
    assert sorted(staggered) == list(range(len(LENGTHS)))
    for i in range(len(LENGTHS)):
        _same(_alone(model, src, lengths, i, **options), staggered[i])


def test_constrained_sentences_joining_a_running_search_keep_their_constraints():
    model = _model("rnnsearch", 12, sharpen=2.0)
    src, lengths = _sources(LENGTHS, 12, seed=2)
    need = [[0], [0, 1], [], [0, 1, 2], [2], [], [1], [0, 2]]
    constraints = Constraints.build(SYMBOLS, need, [[-1, 0, -1]] * len(need))
    options = dict(beam=3, nbest=3, max_len_b=4, penalty="length")
    staggered = _staggered(model, src, lengths, JOINS, constraints, **options)
    for i, placeholders in enumerate(need):
        _same(_alone(model, src, lengths, i, constraints, **options), staggered[i])
        for hyp in staggered[i]:
            assert sorted(t for t in hyp.tokens if t in SYMBOLS) == [
                SYMBOLS[p] for p in placeholders
            ]


def test_dropped_sentences_leave_and_the_rest_are_unchanged():
    model = _model("luong", 30, True, sharpen=2.0)
    src, lengths = _sources(LENGTHS, 30, seed=3)
    options = dict(beam=4, nbest=2, max_len_b=5, attention=True)
    batch, out = BeamBatch(model, **options), {}
    batch.add(range(len(LENGTHS)), src, lengths)
    out.update(batch.step())
    batch.drop([1, 6, 99])  # 99 was never there
    assert 1 not in batch.keys and 6 not in batch.keys and len(batch) == len(LENGTHS) - 2 - len(out)
    while len(batch):
        out.update(batch.step())
    assert sorted(out) == [i for i in range(len(LENGTHS)) if i not in (1, 6)]
    for i in out:
        _same(_alone(model, src, lengths, i, **options), out[i])


def test_a_batch_can_be_emptied_and_refilled():
    """A server's batch runs empty between bursts; the next sentences start from a clean
    state (no width left over from the last ones)."""
    model = _model("rnnsearch", 30, sharpen=2.0)
    src, lengths = _sources(LENGTHS, 30, seed=4)
    options = dict(beam=3, nbest=3, max_len_b=5, attention=True)
    batch = BeamBatch(model, **options)
    for rows in ([6, 1], [3], [0, 2, 4]):
        index = torch.tensor(rows)
        batch.add(rows, src[index, : int(lengths[index].max())], lengths[index])
        out = {}
        while len(batch):
            out.update(batch.step())
        assert batch.history.shape[2] == 0 and batch.src_width == 0
        for i in rows:
            _same(_alone(model, src, lengths, i, **options), out[i])


@pytest.mark.parametrize("arch, feed", ARCHS)
def test_a_prefix_is_forced_and_the_rest_searched_exhaustively(arch, feed):
    """With a prefix, a beam wider than the number of prefixes finds exactly the best outputs
    that begin with it (by enumerating every output); beam 1 equals greedy with the prefix."""
    vocab, max_tokens = 6, 4
    model = _model(arch, vocab, feed)
    src, lengths = _sources([4], vocab)
    for prefix in ([4], [5, 4]):
        forced = torch.tensor([prefix])
        hyps = beam_search(
            model, src, lengths, beam=64, nbest=4, max_len_a=0.0, max_len_b=max_tokens,
            penalty="none", prefix=forced,
        )[0]  # fmt: skip
        every = _exhaustive(model, src, lengths, vocab, max_tokens, "none", 0.0)
        expected = [(score, seq) for score, seq in every if seq[: len(prefix)] == prefix][:4]
        assert [h.tokens for h in hyps] == [seq for _, seq in expected]
        for hyp, (score, _) in zip(hyps, expected):
            assert hyp.score == pytest.approx(score, abs=1e-9)
        one = beam_search(model, src, lengths, beam=1, max_len_a=0.0, max_len_b=max_tokens,
                          penalty="none", prefix=forced)[0][0]  # fmt: skip
        greedy, score = greedy_search(model, src, lengths, 0.0, max_tokens, prefix=forced)
        assert one.tokens == greedy[0] and one.score == pytest.approx(float(score[0]))


def test_sentences_with_prefixes_joining_a_running_search_get_their_results_alone():
    model = _model("rnnsearch", 30, sharpen=2.0)
    src, lengths = _sources(LENGTHS, 30, seed=5)
    prefix = torch.full((len(LENGTHS), 3), -1)
    for i, row in enumerate([[7], [], [9, 8, 7], [], [5, 5], [12], [], [20, 21]]):
        prefix[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    options = dict(beam=3, nbest=3, max_len_b=2)
    batch, out, step = BeamBatch(model, **options), {}, 0
    while step <= max(JOINS) or len(batch):
        if step in JOINS:
            rows = torch.tensor(JOINS[step])
            n = int(lengths[rows].max())
            batch.add(JOINS[step], src[rows, :n], lengths[rows], prefix=prefix[rows])
        out.update(batch.step())
        step += 1
    for i in range(len(LENGTHS)):
        n, row = int(lengths[i]), prefix[i : i + 1]
        alone = beam_search(model, src[i : i + 1, :n], lengths[i : i + 1], prefix=row, **options)
        _same(alone[0], out[i])
        forced = [t for t in prefix[i].tolist() if t >= 0]
        assert all(h.tokens[: len(forced)] == forced for h in out[i])
