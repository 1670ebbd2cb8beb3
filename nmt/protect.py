"""Protected spans: text that a translation must carry through unchanged (or as given).

Software strings hold printf conversions (`%s`, `%1$d`), brace fields (`{0}`), shell variables,
XML tags and entities, URLs and e-mail addresses; a translation that drops or alters one crashes
a program or breaks a page. Each span is replaced by an indexed placeholder token (`｟0｠`,
`｟1｠`, ... in order of appearance) that SentencePiece keeps whole (a user-defined symbol), so
the model learns where placeholders go; `nmt.constraints` makes the search emit each of the
source's placeholders exactly once (tags properly nested), and `Masked.restore` puts the
original text back. Glossary terms go through the same mechanism: the span is the source term,
and what is put back is the target term.

One function masks everything: `Protector.mask` (translation and validation) and
`Protector.mask_pair` (preprocessing, where both sides must hold the same spans).
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nmt.errors import NmtError

MAX_SPANS = 32  # placeholder symbols in a vocabulary; further spans of a line stay text
OPEN, CLOSE = "｟", "｠"
PLACEHOLDER = re.compile(f"{OPEN}(\\d+){CLOSE}")

# What each pattern name matches. `%%` is consumed without being a span (a literal percent).
PATTERNS: dict[str, str] = {
    "printf": (
        r"%%"  # literal percent: matched here so that it is never part of another span
        r"|%\([A-Za-z_]\w*\)[-+#0]*\d*(?:\.\d+)?[diouxXeEfFgGcrsa]"  # %(name)s
        r"|%(?:\d+\$)?[-+#0']*(?:\d+|\*)?(?:\.(?:\d+|\*))?(?:hh|ll|[hlLqjzt])?[diouxXeEfFgGaAcspn]"
        r"|%\d+"  # Qt and KDE: %1, %2
    ),
    "brace": r"\{\d*\}|\{[A-Za-z_][\w.]*(?:[:!][^{}\s]*)?\}|\{\d+[:!][^{}\s]*\}",
    "shell": r"\$\{[A-Za-z_]\w*\}|\$[A-Za-z_]\w*",
    "xml": (
        r"</?[A-Za-z_][\w:.-]*(?:\s+[\w:.-]+\s*=\s*(?:\"[^\"<]*\"|'[^'<]*'))*\s*/?>"
        r"|&(?:#\d+|#x[0-9A-Fa-f]+|[A-Za-z]\w*);"
    ),
    "url": r"\b(?:https?|ftp)://[^\s<>\"]*[^\s<>\".,;:!?)'»]|\bwww\.[^\s<>\"]*[^\s<>\".,;:!?)'»]",
    "email": r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}\b",
}
_TAG = re.compile(r"<(/?)([A-Za-z_][\w:.-]*)[^>]*?(/?)>")


def placeholder(index: int) -> str:
    return f"{OPEN}{index}{CLOSE}"


def placeholder_symbols() -> list[str]:
    """The user-defined SentencePiece symbols of a vocabulary with protected spans."""
    return [placeholder(i) for i in range(MAX_SPANS)]


def model_protection(
    tokenizers: tuple[Any, Any], settings: Mapping[str, str] | None
) -> tuple[Protector, tuple[list[int], list[int]] | None]:
    """How a model's inputs are masked (`settings`: the checkpoint's vocab["protect"]) and its
    placeholders' ids in its (source, target) tokenizers; a protector that masks nothing and
    None for a model trained without protected spans."""
    ids = tuple(tok.symbol_ids(placeholder_symbols()) for tok in tokenizers)
    if ids[0] is None or ids[1] is None:
        return Protector(), None
    settings = settings or {}
    return Protector(settings.get("patterns", ""), settings.get("regex", "")), ids


def check_pattern_names(value: str) -> str | None:
    """Why `value` (data.protect) is invalid, or None: comma-separated names or `all`."""
    names = [n.strip() for n in value.split(",") if n.strip()]
    unknown = [n for n in names if n not in PATTERNS and n != "all"]
    if unknown:
        return f"unknown pattern {', '.join(unknown)}; choose from all, {', '.join(PATTERNS)}"
    return None


def check_regex(value: str) -> str | None:
    """Why `value` (data.protect_regex) is invalid, or None."""
    try:
        if value and re.compile(value).match(""):
            return "it matches the empty string, which would protect nothing"
    except re.error as exc:
        return f"not a regular expression: {exc}"
    return None


@dataclass(frozen=True)
class Span:
    """One protected span of a source line: its text there, and what the output gets back."""

    source: str
    target: str
    partner: int = -1  # for a closing tag: the index of its opening tag (nesting); else -1
    term: bool = False  # a glossary term (reported per line), not a pattern match
    apart: tuple[bool, bool] = (False, False)  # space (or the line's end) before, after it


@dataclass
class Masked:
    """A line with its spans replaced by placeholders ｟0｠ ... ｟n-1｠ (spans[i] is ｟i｠)."""

    text: str
    spans: list[Span] = field(default_factory=list)

    def restore(self, output: str, escape_xml: bool = False) -> str:
        """`output` (a translation of `text`) with each placeholder replaced by its span's
        target; a span that stood apart from words in the source is kept apart from them (a URL
        glued to a word is a broken link). With `escape_xml`, bare `&`, `<` and `>` in the rest
        are escaped, so that the result is well-formed XML whenever the spans are."""
        parts = PLACEHOLDER.split(output)  # text, index, text, index, ..., text
        out = _escape(parts[0]) if escape_xml else parts[0]
        for i in range(1, len(parts), 2):
            index, after = int(parts[i]), _escape(parts[i + 1]) if escape_xml else parts[i + 1]
            span = self.spans[index] if index < len(self.spans) else Span("", "")
            if span.apart[0] and out[-1:].isalnum():
                out += " "
            out += span.target
            if span.apart[1] and after[:1].isalnum():
                out += " "
            out += after
        return out


_BARE = re.compile(r"&(?!(?:#\d+|#x[0-9A-Fa-f]+|[A-Za-z]\w*);)|<|>")


def _escape(text: str) -> str:
    return _BARE.sub(lambda m: {"&": "&amp;", "<": "&lt;", ">": "&gt;"}[m[0]], text)


class Protector:
    """Finds and masks the protected spans of lines: named patterns, an extra user pattern
    and glossary terms (longest first, whole words), in one left-to-right scan."""

    def __init__(
        self,
        patterns: str = "",
        regex: str = "",
        glossary: Mapping[str, str] | None = None,
        ignore_case: bool = False,
    ):
        names = [n.strip() for n in patterns.split(",") if n.strip()]
        if "all" in names:
            names = list(PATTERNS)
        for key, problem in (
            ("data.protect", check_pattern_names(patterns)),
            ("data.protect_regex", check_regex(regex)),
        ):
            if problem:
                raise NmtError(f"`{key}`: {problem}", key, f"see `{key}` in docs/config.md")
        self.patterns, self.user_regex = patterns, regex
        self.glossary = dict(glossary or {})
        self.ignore_case = ignore_case
        alternatives = []
        if self.glossary:  # terms first: at one position, the longest term wins
            terms = sorted(self.glossary, key=len, reverse=True)
            words = "|".join(re.escape(t) for t in terms)
            flags = "(?i:" if ignore_case else "(?:"
            alternatives.append(f"(?P<term>(?<!\\w){flags}{words})(?!\\w))")
        alternatives.append(f"(?P<placeholder>{PLACEHOLDER.pattern})")  # never a second meaning
        alternatives += [f"(?:{PATTERNS[n]})" for n in names]
        if regex:
            alternatives.append(f"(?:{regex})")
        self.enabled = bool(names or regex or self.glossary)
        self.regex = re.compile("|".join(alternatives))
        self._folded = {k.casefold(): v for k, v in self.glossary.items()}

    def find(self, text: str) -> list[tuple[int, int, Span]]:
        """(start, end, span) of every span, left to right, at most MAX_SPANS."""
        found = []
        for m in self.regex.finditer(text):
            if m[0] == "%%" or not m[0]:
                continue
            term = m.lastgroup == "term"
            target = m[0]
            if term:
                target = self._folded[m[0].casefold()] if self.ignore_case else self.glossary[m[0]]
            before, after = text[m.start() - 1 : m.start()], text[m.end() : m.end() + 1]
            apart = (not before or before.isspace(), not after or after.isspace())
            found.append((m.start(), m.end(), Span(m[0], target, term=term, apart=apart)))
            if len(found) == MAX_SPANS:
                break
        return found

    def keeps(self, masked: Masked, output: str) -> bool:
        """Whether `output` (restored) holds exactly the pattern spans masked out of the
        source: the search guarantees the placeholders, but a model can also spell a span
        out of ordinary subwords (`%` then `d`), which a printf would read as an argument."""
        expected = Counter(s.source for s in masked.spans if not s.term)
        found = Counter(s.source for _, _, s in self.find(output) if not s.term)
        return found == expected

    def mask(self, text: str) -> Masked:
        """`text` with its spans replaced by placeholders in order of appearance."""
        if not self.enabled:
            return Masked(text)
        out, last = [], 0
        found = self.find(text)
        for i, (start, end, _) in enumerate(found):
            out += [text[last:start], placeholder(i)]
            last = end
        out.append(text[last:])
        return Masked("".join(out), _pair_tags([span for _, _, span in found]))

    def mask_pair(self, src: str, tgt: str) -> tuple[str, str] | None:
        """Both sides masked, the target's spans numbered like the source's (the k-th
        occurrence of a text on one side is the k-th on the other); None if the two sides'
        spans differ as multisets (the pair is then kept as it is)."""
        source, target = self.mask(src), self.find(tgt)
        if Counter(s.source for s in source.spans) != Counter(s.source for _, _, s in target):
            return None
        if not target:
            return src, tgt
        slots: dict[str, list[int]] = {}
        for i, s in enumerate(source.spans):
            slots.setdefault(s.source, []).append(i)
        out, last = [], 0
        for start, end, span in target:
            out += [tgt[last:start], placeholder(slots[span.source].pop(0))]
            last = end
        out.append(tgt[last:])
        return source.text, "".join(out)


def _pair_tags(spans: Sequence[Span]) -> list[Span]:
    """Spans with each closing tag pointing at its opening tag, where the line's tags nest
    (a closing tag that does not close the innermost open tag is left unpaired)."""
    stack: list[tuple[str, int]] = []
    paired = list(spans)
    for i, span in enumerate(spans):
        m = _TAG.fullmatch(span.source)
        if m is None or span.term or m[3]:
            continue
        if not m[1]:
            stack.append((m[2], i))
        elif stack and stack[-1][0] == m[2]:
            paired[i] = dataclasses.replace(span, partner=stack.pop()[1])
    return paired


def spans_of(text: str, protector: Protector) -> Counter[str]:
    """The multiset of protected spans in `text` (placeholder fidelity compares these)."""
    return Counter(span.source for _, _, span in protector.find(text))


def span_fidelity(sources: Sequence[str], outputs: Sequence[str], protector: Protector) -> float:
    """The share of lines whose output holds exactly the source's spans, as a multiset."""
    if len(sources) != len(outputs):
        raise ValueError(f"{len(sources)} sources but {len(outputs)} outputs")
    same = sum(spans_of(s, protector) == spans_of(o, protector) for s, o in zip(sources, outputs))
    return same / max(len(sources), 1)


def read_glossary(path: Path) -> dict[str, str]:
    """A glossary file: UTF-8 lines `source<TAB>target` (blank lines and #-comments skipped)."""
    from nmt.data.corpus import read_lines  # numpy: not for every `nmt --help`

    terms: dict[str, str] = {}
    for lineno, line in enumerate(read_lines(Path(path)), 1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t")
        where = f"{path}:{lineno}"
        if len(fields) != 2 or not fields[0].strip() or not fields[1].strip():
            raise NmtError(
                f"a glossary line is `source<TAB>target`, got {len(fields)} field(s): {line!r}",
                where,
                "one term pair per line, separated by one tab",
            )
        source, target = fields[0].strip(), fields[1].strip()
        if source in terms and terms[source] != target:
            raise NmtError(
                f"the term {source!r} is given twice, as {terms[source]!r} and {target!r}",
                where,
                "keep one translation per source term",
            )
        terms[source] = target
    if not terms:
        raise NmtError("the glossary has no terms", str(path), "give source<TAB>target lines")
    return terms
