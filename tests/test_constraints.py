"""Constrained search: every placeholder of the source exactly once, tags nested, by
construction; against exhaustive enumeration on tiny models, and on random constraints."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_search import _exhaustive, _model, _sources

from nmt.decode.beam import beam_search
from nmt.decode.constraints import Constraints
from nmt.decode.greedy import greedy_search

SYMBOLS = [4, 5, 6]  # in these tiny vocabularies, ids 4-6 play the placeholders ｟0｠-｟2｠


def _valid(seq, need, partner, parent=None, symbols=SYMBOLS):
    """The constraint, written out: each needed placeholder once, no other placeholder, a
    closing tag only when its opening tag is the innermost open one, and an opening tag only
    inside the tag that encloses it in the source (`parent`; none: at the top)."""
    parent = parent or {}
    placed = [t for t in seq if t in symbols]
    if sorted(placed) != sorted(symbols[i] for i in need):
        return False
    stack = []
    for t in placed:
        i = symbols.index(t)
        if i in partner.values():
            if (stack[-1] if stack else -1) != parent.get(i, -1):
                return False
            stack.append(i)
        elif partner.get(i, -1) >= 0 and (not stack or stack.pop() != partner[i]):
            return False
    return True


CASES = [
    ([0], {}),  # one placeholder
    ([0, 2], {}),  # two, either order
    ([0, 1], {1: 0}),  # an opening tag (0) and its closing tag (1)
    ([0, 1, 2], {1: 0}),  # a tag pair and a placeholder, inside or outside it
]


@pytest.mark.parametrize("arch, feed", [("rnnsearch", False), ("luong", True)])
@pytest.mark.parametrize("need, partner", CASES)
def test_constrained_wide_beam_equals_exhaustive_search_over_valid_outputs(
    arch, feed, need, partner
):
    """With a beam wider than the number of prefixes, the constrained beam finds exactly the
    best outputs among those that obey the constraint (found by enumerating every output)."""
    vocab, max_tokens = 8, 4  # 4 generable tokens (3 of them placeholders) and eos
    model = _model(arch, vocab, feed)
    src, lengths = _sources([4], vocab)
    partners = [[partner.get(i, -1) for i in range(3)]]
    constraints = Constraints.build(SYMBOLS, [need], partners)
    hyps = beam_search(
        model, src, lengths, beam=400, nbest=5, alpha=0.0, penalty="none",
        max_len_a=0.0, max_len_b=max_tokens, constraints=constraints,
    )[0]  # fmt: skip
    every = _exhaustive(model, src, lengths, vocab, max_tokens, "none", 0.0)
    expected = [(s, seq) for s, seq in every if _valid(seq, need, partner)][:5]
    assert [h.tokens for h in hyps] == [seq for _, seq in expected]
    for hyp, (score, _) in zip(hyps, expected):
        assert hyp.score == pytest.approx(score, abs=1e-9)
    unconstrained = beam_search(model, src, lengths, beam=400, nbest=5, alpha=0.0,
                                penalty="none", max_len_a=0.0, max_len_b=max_tokens)[0]  # fmt: skip
    assert [h.tokens for h in unconstrained] == [seq for _, seq in every[:5]]


@pytest.mark.parametrize("arch, feed", [("rnnsearch", False), ("luong", True)])
def test_constrained_beam_keeps_the_sources_tree_of_tags_like_exhaustive_search(arch, feed):
    """<a><b></b></a> as placeholders 0-3 (a = 0/3, b = 1/2) plus one ordinary token: the
    constrained beam finds the best outputs of those whose tags nest exactly as in the
    source (b inside a, nothing crossing), as enumeration does."""
    symbols, vocab, max_tokens = [4, 5, 6, 7], 9, 5
    model = _model(arch, vocab, feed, seed=3)
    src, lengths = _sources([4], vocab)
    partner, parent = {3: 0, 2: 1}, {1: 0}
    constraints = Constraints.build(symbols, [[0, 1, 2, 3]], [[-1, -1, 1, 0]], [[-1, 0, -1, -1]])
    hyps = beam_search(
        model, src, lengths, beam=600, nbest=3, alpha=0.0, penalty="none",
        max_len_a=0.0, max_len_b=max_tokens, constraints=constraints,
    )[0]  # fmt: skip
    every = _exhaustive(model, src, lengths, vocab, max_tokens, "none", 0.0)
    valid = [(s, q) for s, q in every if _valid(q, [0, 1, 2, 3], partner, parent, symbols)]
    assert [h.tokens for h in hyps] == [seq for _, seq in valid[:3]]
    assert {tuple(t for t in q if t in symbols) for _, q in valid} == {(4, 5, 6, 7)}


SHAPES = [  # (partner, parent) of placeholders 0-3 for every index a sentence needs
    ({}, {}),  # placeholders, no tags
    ({1: 0}, {}),  # one pair: 0 opens, 1 closes
    ({1: 0, 3: 2}, {}),  # two pairs one after the other: <a></a><b></b>
    ({3: 0, 2: 1}, {1: 0}),  # nested: <a><b></b></a>
]


@st.composite
def _batch(draw):
    """A batch of 1-4 sentences, each needing placeholders of a random shape: plain ones
    (a random subset of 4), or tags in pairs, one after the other or nested."""
    needs, partners, parents = [], [], []
    for _ in range(draw(st.integers(1, 4))):
        partner, parent = draw(st.sampled_from(SHAPES))
        if partner:
            need = [0, 1, 2, 3] if len(partner) == 2 else [0, 1, *draw(st.sets(st.integers(2, 3)))]
        else:
            need = sorted(draw(st.sets(st.integers(0, 3), max_size=4)))
        needs.append(sorted(need))
        partners.append([partner.get(i, -1) for i in range(4)])
        parents.append([parent.get(i, -1) for i in range(4)])
    return needs, partners, parents


@settings(max_examples=40, deadline=None)
@given(_batch(), st.integers(0, 3), st.sampled_from([1, 3]), st.integers(0, 4))
def test_random_constraints_hold_for_every_hypothesis(batch, seed, beam, max_len_b):
    """Random models, placeholder sets and length limits (even limits too short for the
    placeholders): every hypothesis of greedy and beam search holds exactly the needed
    placeholders, its tags nested as in the source."""
    needs, partners, parents = batch
    symbols, vocab = [4, 5, 6, 7], 12
    model = _model("rnnsearch", vocab, seed=seed, sharpen=1.0)
    src, lengths = _sources([3 + i for i in range(len(needs))], vocab, seed=seed)
    constraints = Constraints.build(symbols, needs, partners, parents)
    outputs = [
        [h.tokens for h in hyps]
        for hyps in beam_search(
            model, src, lengths, beam=beam, nbest=beam, max_len_a=0.5, max_len_b=max_len_b,
            constraints=constraints,
        )
    ]  # fmt: skip
    greedy, _ = greedy_search(model, src, lengths, 0.5, max_len_b, constraints)
    for need, pairs, ups, hyps, first in zip(needs, partners, parents, outputs, greedy):
        partner = {i: p for i, p in enumerate(pairs) if p >= 0}
        parent = {i: p for i, p in enumerate(ups) if p >= 0}
        assert hyps, "every sentence gets a translation"
        for seq in [*hyps, first]:
            assert _valid(seq, need, partner, parent, symbols), (seq, need, partner, parent)


def test_without_constraints_placeholders_are_dropped_and_invented():
    """The property above is not vacuous: the same kind of model, unconstrained, drops needed
    placeholders and emits ones the source does not hold."""
    vocab = 12
    model = _model("rnnsearch", vocab, seed=1, sharpen=1.0)
    src, lengths = _sources([3, 4, 5, 6, 7, 8], vocab, seed=1)
    needs = [[0], [1, 2], [0, 1, 2], [], [2], [0, 1]]
    plain = [h[0].tokens for h in beam_search(model, src, lengths, beam=3, max_len_b=4)]
    broken = [not _valid(seq, need, {}) for seq, need in zip(plain, needs)]
    assert sum(broken) >= 3, plain


def test_a_closing_tag_waits_for_the_innermost_open_tag():
    """Two pairs, 0-3 and 1-2 inside it: the model is pushed to open 0, then 1, then to close
    0 (which would cross the pairs, as in <b><i></b></i>); it must close 1 first."""
    vocab = 10
    model = _model("rnnsearch", vocab, seed=2)
    with torch.no_grad():  # step by step, the model prefers ids 4, 5, 7, 6 in this order
        model.output.bias[4:8] += torch.tensor([40.0, 30.0, 10.0, 20.0]).double()
    symbols = [4, 5, 6, 7]
    src, lengths = _sources([5], vocab)
    nested = Constraints.build(symbols, [[0, 1, 2, 3]], [[-1, -1, 1, 0]], [[-1, 0, -1, -1]])
    unpaired = Constraints.build(symbols, [[0, 1, 2, 3]], [[-1, -1, -1, -1]])
    for constraints, order in ((nested, [0, 1, 2, 3]), (unpaired, [0, 1, 3, 2])):
        [tokens], _ = greedy_search(model, src, lengths, 1.5, 10, constraints)
        assert [symbols.index(t) for t in tokens if t in symbols] == order
