"""Protected spans: text that a translation must carry through unchanged (or as given).

Software strings hold printf conversions (`%s`, `%1$d`), brace fields (`{0}`), shell variables,
XML tags and entities, URLs and e-mail addresses; a translation that drops or alters one crashes
a program or breaks a page. Each span is replaced by an indexed placeholder token (`｟0｠`,
`｟1｠`, ... in order of appearance) that SentencePiece keeps whole (a user-defined symbol), so
the model learns where placeholders go; `nmt.decode.constraints` makes the search emit each of the
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

# What each pattern name matches. Escapes (`%%`, `{{`, `}}`) are spans of their own: a lost
# escape changes what a format string means.
PATTERNS: dict[str, str] = {
    "printf": (
        r"%%"  # a literal percent, matched first so that it is never part of another span
        r"|%\([A-Za-z_]\w*\)[-+#0]*\d*(?:\.\d+)?[diouxXeEfFgGcrsa]"  # Python: %(name)s
        r"|%\{[A-Za-z_]\w*\}|%<[A-Za-z_]\w*>[-+#0]*\d*(?:\.\d+)?[A-Za-z]"  # Ruby: %{n}, %<n>d
        r"|%(?:\d+\$)?@"  # Objective-C and Swift: %@, %1$@
        r"|%(?:\d+\$)?[-+#0']*(?:\d+|\*)?(?:\.(?:\d+|\*))?(?:hh|ll|[hlLqjzt])?[diouxXeEfFgGaAcsp]"
        r"|%\d+(?![\w$@])"  # Qt and KDE: %1, %2
    ),
    "brace": (
        r"\{\{\s*[\w.-]+\s*\}\}"  # i18next, Angular, Jinja: {{name}}
        r"|\{\d*\}|\{[A-Za-z_][\w.]*(?:[:!][^{}\s]*)?\}|\{\d+[:!][^{}\s]*\}"  # Python, C#
        r"|\{\w+,\s*(?:number|date|time|plural|select|selectordinal|choice|spellout|ordinal"
        r"|duration)(?:\s*,[^{}]*)?\}"  # ICU MessageFormat, without nested messages
        r"|\{\{|\}\}"  # escaped braces of Python and C# format strings
    ),
    # ${name} (a template's fields may begin with a digit: ${24Hour}), $NAME, and $1 to $9 (not
    # $100, a price)
    "shell": r"\$\{\w[^{}\s]*\}|\$[A-Za-z_]\w*|\$\d(?!\d)",
    "xml": (
        r"<!--.*?-->|<\?.*?\?>|<!\[CDATA\[.*?\]\]>"  # comments, PIs, CDATA: whole, contents unread
        r"|</?[A-Za-z_][\w:.-]*(?:\s+[\w:.-]+\s*=\s*(?:\"[^\"<]*\"|'[^'<]*'))*\s*/?>"
        r"|&(?:#\d+|#x[0-9A-Fa-f]+|[A-Za-z]\w*);"
    ),
    "url": r"\b(?:https?|ftp)://[^\s<>\"]*[^\s<>\".,;:!?)'»]|\bwww\.[^\s<>\"]*[^\s<>\".,;:!?)'»]",
    "email": r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}\b",
}
# a tag's slash, name and self-closing slash; attribute values are read as XML reads them (a
# quoted `>` does not end the tag)
_TAG = re.compile(r"<(/?)([A-Za-z_][\w:.-]*)(?:[^>\"']|\"[^\"]*\"|'[^']*')*?(/?)>")


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
    if re.search(r"\\\d|\(\?P=|\(\?\(", value):
        return "back-references are not supported (the pattern is joined with others)"
    try:
        if value and re.compile(value).match(""):
            return "it matches the empty string, which would protect nothing"
        re.compile(f"(?P<term>x)|(?P<placeholder>y)|(?:{value})")  # as it will be joined
    except re.error as exc:
        return f"not a regular expression that can be joined with others: {exc}"
    return None


@dataclass(frozen=True)
class Span:
    """One protected span of a source line: its text there, and what the output gets back."""

    source: str
    target: str
    partner: int = -1  # for a closing tag: the index of its opening tag (nesting); else -1
    parent: int = -1  # for an opening tag: the index of the tag it is nested in; else -1
    term: bool = False  # a glossary term (reported per line), not a pattern match
    around: tuple[str, str] = ("", "")  # the characters before and after it ("": line end)


@dataclass
class Masked:
    """A line with its spans replaced by placeholders ｟0｠ ... ｟n-1｠ (spans[i] is ｟i｠)."""

    text: str
    spans: list[Span] = field(default_factory=list)
    unprotected: int = 0  # spans past the MAX_SPANS-th, left as text

    def unpaired_tags(self) -> list[str]:
        """Tags with no partner in the line (a `<p>` never closed, a `</b>` never opened): XML
        markup holding one is not well-formed, and neither is its translation."""
        opened = {s.partner for s in self.spans if s.partner >= 0}
        return [
            s.source
            for i, s in enumerate(self.spans)
            if s.partner < 0 and i not in opened and _pairable_tag(s)
        ]

    def restore(self, output: str, escape_xml: bool = False) -> str:
        """`output` (a translation of `text`) with each placeholder replaced by its span's
        target. A span that no word touched in the source touches none in the output (a URL
        glued to a word is a broken link), and two spans apart in the source stay apart. With
        `escape_xml`, bare `&`, `<` and `>` in the rest are escaped, so that the result is
        well-formed XML whenever the spans are."""
        if not self.spans:
            return output
        parts = PLACEHOLDER.split(output)  # text, index, text, index, ..., text
        out = _escape(parts[0]) if escape_xml else parts[0]
        previous: Span | None = None  # the span just written, if no text followed it
        for i in range(1, len(parts), 2):
            index, after = int(parts[i]), _escape(parts[i + 1]) if escape_xml else parts[i + 1]
            if index >= len(self.spans):  # not one of ours: left as it is
                out, previous = out + placeholder(index) + after, None
                continue
            span = self.spans[index]
            before, after_it = span.around
            if previous is not None:  # two spans in a row, which the source had apart
                glued = _apart(previous.around[1]) or _apart(before)
            else:  # a span glued to a word, which the source had not
                glued = not _WORD_START.match(before) and bool(_WORD_END.search(out))
            if glued:
                out += " "
            out += _escape(span.target) if escape_xml and span.term else span.target
            if not _WORD_START.match(after_it) and _WORD_START.match(after):
                out += " "
            out += after
            previous = None if after else span
        return out


_WORD_END, _WORD_START = re.compile(r"\w\Z"), re.compile(r"\w")


def _apart(neighbour: str) -> bool:
    return not neighbour or neighbour.isspace()


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
        """(start, end, span) of every span, left to right."""
        found = []
        for m in self.regex.finditer(text):
            if not m[0]:
                continue
            term = m.lastgroup == "term"
            target = m[0]
            if term:
                target = self._term_target(m[0])
            before, after = text[m.start() - 1 : m.start()], text[m.end() : m.end() + 1]
            found.append(
                (m.start(), m.end(), Span(m[0], target, term=term, around=(before, after)))
            )
        return found

    def _term_target(self, found: str) -> str:
        """The glossary's target for a term as found in the text (in any case, with
        ignore_case: casefold() misses some of what the regex matches, e.g. Turkish ı)."""
        if not self.ignore_case:
            return self.glossary[found]
        if found.casefold() in self._folded:
            return self._folded[found.casefold()]
        return next(v for k, v in self.glossary.items() if re.fullmatch(re.escape(k), found, re.I))

    def keeps(self, masked: Masked, output: str) -> bool:
        """Whether `output` (restored) holds exactly the pattern spans masked out of the
        source: the search guarantees the placeholders, but a model can also spell a span
        out of ordinary subwords (`%` then `d`), which a printf would read as an argument."""
        expected = Counter(s.source for s in masked.spans if not s.term)
        found = Counter(s.source for _, _, s in self.find(output) if not s.term)
        return found == expected

    def mask(self, text: str) -> Masked:
        """`text` with its spans replaced by placeholders in order of appearance (the first
        MAX_SPANS of them; `Masked.unprotected` counts the rest, left as text)."""
        if not self.enabled:
            return Masked(text)
        out, last = [], 0
        found = self.find(text)
        for i, (start, end, _) in enumerate(found[:MAX_SPANS]):
            out += [text[last:start], placeholder(i)]
            last = end
        out.append(text[last:])
        spans = _pair_tags([span for _, _, span in found[:MAX_SPANS]])
        return Masked("".join(out), spans, max(0, len(found) - MAX_SPANS))

    def mask_pair(self, src: str, tgt: str) -> tuple[str, str] | None:
        """Both sides masked, the target's spans numbered like the source's (the k-th
        occurrence of a text on one side is the k-th on the other); None if the two sides'
        spans differ as multisets (the pair is then kept as it is)."""
        source = self.mask(src)
        target = self.mask_like(source, tgt)
        return None if target is None else (source.text, target)

    def mask_like(self, source: Masked, tgt: str) -> str | None:
        """`tgt` masked with the placeholders of its already masked source (see `mask_pair`);
        None if their spans differ as multisets."""
        target = self.find(tgt)
        if Counter(s.source for s in source.spans) != Counter(s.source for _, _, s in target):
            return None
        return self.mask_prefix(source, tgt)

    def mask_prefix(self, source: Masked, prefix: str) -> str | None:
        """The start of a translation masked with its source's placeholders, the k-th
        occurrence of a span as the source's k-th; None if it holds a span more often than
        the source does (the translation could not keep every span exactly once)."""
        found = self.find(prefix)
        if not found:
            return prefix
        if source.unprotected:
            return None
        slots: dict[str, list[int]] = {}
        for i, s in enumerate(source.spans):
            slots.setdefault(s.source, []).append(i)
        out, last = [], 0
        for start, end, span in found:
            if not slots.get(span.source):
                return None
            out += [prefix[last:start], placeholder(slots[span.source].pop(0))]
            last = end
        out.append(prefix[last:])
        return "".join(out)


def _pairable_tag(span: Span) -> re.Match[str] | None:
    """The tag's match if the span is an opening or closing tag (not a self-closing one, nor
    a glossary term)."""
    m = _TAG.fullmatch(span.source)
    return m if m is not None and not span.term and not m[3] else None


def _pair_tags(spans: Sequence[Span]) -> list[Span]:
    """Spans with each closing tag pointing at its opening tag (`partner`) and each paired
    opening tag at the paired tag that encloses it (`parent`). Names compare without case; a
    closing tag closes the innermost open tag of its name, and tags left open inside it (e.g.
    an HTML `<br>`) stay unpaired, as does a closing tag with no open tag of its name."""
    stack: list[tuple[str, int]] = []
    partner = {}
    for i, span in enumerate(spans):
        m = _pairable_tag(span)
        if m is None:
            continue
        name = m[2].casefold()
        if not m[1]:
            stack.append((name, i))
        elif any(n == name for n, _ in stack):
            while stack[-1][0] != name:
                stack.pop()
            partner[i] = stack.pop()[1]
    opened, parents, enclosing = set(partner.values()), {}, []
    for i in range(len(spans)):  # a second pass over the pairs alone gives the parents
        if i in opened:
            parents[i] = enclosing[-1] if enclosing else -1
            enclosing.append(i)
        elif i in partner:
            enclosing.pop()
    return [
        dataclasses.replace(s, partner=partner.get(i, -1), parent=parents.get(i, -1))
        for i, s in enumerate(spans)
    ]


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
    from nmt.data.corpus import normalize, read_lines  # numpy: not for every `nmt --help`

    terms: dict[str, str] = {}
    for lineno, line in enumerate(read_lines(Path(path)), 1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t")
        where = f"{path}:{lineno}"
        if len(fields) != 2 or not fields[0].strip() or not fields[1].strip():
            got = f"{len(fields)} field(s)" if len(fields) != 2 else "an empty term"
            raise NmtError(
                f"a glossary line is `source<TAB>target`, got {got}: {line!r}",
                where,
                "one term pair per line, separated by one tab",
            )
        source, target = normalize(fields[0]), normalize(fields[1])  # as the input will be
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
