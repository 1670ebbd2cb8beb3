"""Output assembly: the search's hypotheses of one line as text.

Each hypothesis is detokenised, begins with the line's prefix as given (not as its subwords
spell it), and gets its protected spans put back (XML-escaped around them with markup). With
placeholders, a hypothesis that spells out a span of its own goes after those that do not.
"""

from __future__ import annotations

from dataclasses import dataclass

from nmt.data.protect import Protector
from nmt.data.tokenizer import Tokenizer
from nmt.decode.hypothesis import Hypothesis
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
) -> Result:
    """One line's result: its best `nbest` hypotheses with the spans put back (`tokenizers`:
    source, target; `placeholders`: the model carries protected spans; `xml`: the output is
    markup, escaped around its tags)."""
    src_tokenizer, tgt_tokenizer = tokenizers
    masked = item.masked
    texts = _texts(item, hyps, tgt_tokenizer)
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
