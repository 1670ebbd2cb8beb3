"""Output assembly: the search's hypotheses of one line as text.

Each hypothesis is detokenised, begins with the line's prefix as given (not as its subwords
spell it), and gets its protected spans put back (XML-escaped around them with markup). With
placeholders, a hypothesis that spells out a span of its own goes after those that do not. A line
split into parts (over the model's limit) gets its parts' hypotheses joined (`join_parts`),
without attention weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from nmt.data.protect import Protector
from nmt.data.tokenizer import Tokenizer
from nmt.decode.hypothesis import Hypothesis, length_penalty
from nmt.translate.inputs import Prepared


@dataclass
class Translation:
    """One hypothesis for one input line."""

    text: str  # detokenised output
    score: float  # log-probability divided by the length penalty
    pieces: list[str]  # output subwords (without eos)
    attention: list[list[float]] | None = None  # [len(pieces) + 1][len(source pieces) + 1]


@dataclass
class Result:
    """Everything decoded for one input line: its subwords and its n-best list (best first)."""

    source_pieces: list[str]
    hypotheses: list[Translation]
    terms: list[tuple[str, str]] | None = None  # glossary terms applied; None: no glossary


def assemble(
    item: Prepared,
    hyps: list[Hypothesis],
    nbest: int,
    tokenizers: tuple[Tokenizer, Tokenizer],
    protector: Protector,
    placeholders: bool,
    xml: bool,
    texts: list[str] | None = None,
) -> Result:
    """One line's result: its best `nbest` hypotheses with the spans put back (`tokenizers`:
    source, target; `placeholders`: the model carries protected spans; `xml`: the output is
    markup, escaped around its tags; `texts`: the hypotheses' texts, placeholders in, when
    they are not their tokens detokenised, as a split line's are)."""
    src_tokenizer, tgt_tokenizer = tokenizers
    masked = item.masked
    texts = _texts(item, hyps, tgt_tokenizer) if texts is None else texts
    if placeholders:
        spelled = [not protector.keeps(masked, masked.restore(t)) for t in texts]
        order = sorted(range(len(hyps)), key=spelled.__getitem__)  # stable: by score
        hyps, texts = [hyps[i] for i in order], [texts[i] for i in order]
    translations = [
        Translation(
            masked.restore(text, escape_xml=xml),
            h.score,
            tgt_tokenizer.pieces(h.tokens),
            None if h.attention is None else h.attention.tolist(),
        )
        for text, h in zip(texts, hyps[:nbest])
    ]
    terms = [(s.source, s.target) for s in masked.spans if s.term]
    return Result(
        src_tokenizer.pieces(item.ids) + ["</s>"],
        translations,
        terms if protector.glossary else None,
    )


def join_parts(
    item: Prepared,
    parts: Sequence[list[Hypothesis]],
    tokenizer: Tokenizer,
    penalty: str,
    alpha: float,
    nbest: int,
) -> tuple[list[Hypothesis], list[str]]:
    """A split line's n-best list (`parts`: each of `item.parts()`'s n-best lists) and its
    texts, placeholders in. First the parts' best joined; then up to `nbest - 1` more, each the
    best with one part's hypothesis swapped for a lower one, those that lose the least
    log-probability, by score. A joined hypothesis's text is its parts' texts joined with a
    space, its tokens theirs in order, its score their summed log-probabilities divided by the
    length penalty of them all (eos counted once per part); no attention. Empty lists if a part
    found nothing."""
    if not all(parts):
        return [], []
    texts = [_texts(part, hyps, tokenizer) for part, hyps in zip(item.parts(), parts)]
    logp = [[h.score * length_penalty(len(h.tokens) + 1, penalty, alpha) for h in hyps]
            for hyps in parts]  # fmt: skip
    swaps = sorted(
        ((k, rank) for k, hyps in enumerate(parts) for rank in range(1, len(hyps))),
        key=lambda swap: logp[swap[0]][0] - logp[swap[0]][swap[1]],
    )
    choices = [[0] * len(parts)]
    for k, rank in swaps[: nbest - 1]:
        choices.append([rank if i == k else 0 for i in range(len(parts))])
    joined = []
    for choice in choices:
        best = [hyps[rank] for hyps, rank in zip(parts, choice)]
        total = sum(part[rank] for part, rank in zip(logp, choice))
        length = sum(len(h.tokens) + 1 for h in best)
        score = float(total / length_penalty(length, penalty, alpha))
        text = " ".join(t[rank] for t, rank in zip(texts, choice) if t[rank])
        joined.append((Hypothesis([t for h in best for t in h.tokens], score), text))
    joined[1:] = sorted(joined[1:], key=lambda pair: -pair[0].score)
    return [h for h, _ in joined], [text for _, text in joined]


def empty_result(nbest: int, glossary: bool) -> Result:
    """An empty line's result: `nbest` empty translations, so that every line's n-best list
    has the same length."""
    return Result([], [Translation("", 0.0, [])] * nbest, [] if glossary else None)


def _texts(item: Prepared, hyps: list[Hypothesis], tokenizer: Tokenizer) -> list[str]:
    """The hypotheses' texts (placeholders in), each beginning with the line's prefix as
    given, where the subwords spell the prefix normalised, with unknown characters as ⁇."""
    texts = [tokenizer.decode(h.tokens) for h in hyps]
    if not item.prefix:
        return texts
    head = tokenizer.decode(item.prefix)
    return [_as_given(item.prefix_text, head, text) for text in texts]


def _as_given(prefix: str, head: str, text: str) -> str:
    """`text` with its start `head` (the prefix as its subwords spell it) replaced by the
    prefix as given; unchanged if it does not start so."""
    if not text.startswith(head):
        return text
    rest = text[len(head) :]
    return prefix + (rest.lstrip() if prefix[-1:].isspace() else rest)


def no_translation(line: int) -> str:
    """The warning for a line whose search found nothing (its result has no hypotheses)."""
    return (
        f"line {line}: no translation found (the model's scores are not finite: NaN or "
        "overflowing weights?); it is left empty"
    )
