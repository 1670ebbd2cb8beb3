"""Input preparation: a line as the search takes it.

A line is normalised like the training data, its protected spans masked (`nmt.data.protect`)
and split into subwords. A line over the model's limit is split into parts that each fit
(`split_points`: at sentence ends, else clause ends, commas, spaces; a part with none is cut
into chunks), which are translated like lines and their translations joined; or, with
`decode.long_lines=truncate`, truncated. What was split, cut or left unprotected becomes a
warning naming the line. A prefix (target language) is masked with its source line's
placeholders and split into target subwords. `source_tensors` and `prefix_tensor` pad a batch
of prepared lines for the search.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch.nn.utils.rnn import pad_sequence

from nmt.data.corpus import normalize
from nmt.data.protect import MAX_SPANS, PLACEHOLDER, Masked, Protector
from nmt.data.tokenizer import EOS_ID, PAD_ID, Tokenizer
from nmt.errors import NmtError


@dataclass
class Prepared:
    """One input line ready for the search."""

    masked: Masked  # the normalised line with its protected spans replaced by placeholders
    ids: list[int]  # its subwords (truncated to the model's limit, or split at `cuts`)
    warnings: list[str]  # what was split, truncated or left unprotected ("line N ...")
    line: int = 1  # its line number in the input (sampling draws by it)
    prefix: list[int] = field(default_factory=list)  # what its translation must begin with
    prefix_text: str = ""  # the prefix as given, its spans masked
    cuts: list[int] = field(default_factory=list)  # where ids is split into parts; []: whole

    def parts(self) -> list[Prepared]:
        """The parts the search translates: the line itself, or (a line over the limit) its
        pieces between the cuts, each with the whole line's masked text, so that its
        placeholders keep their numbers; the prefix goes with the first part."""
        if not self.cuts:
            return [self]
        bounds = [0, *self.cuts, len(self.ids)]
        parts = [
            Prepared(self.masked, self.ids[start:end], [], self.line)
            for start, end in zip(bounds, bounds[1:])
        ]
        parts[0].prefix, parts[0].prefix_text = self.prefix, self.prefix_text
        return parts


def as_texts(
    texts: Iterable[str],
    name: str = "texts",
    first_line: int = 1,
    one_per: tuple[int, str] | None = None,
) -> list[str]:
    """`texts` as a list of str, or an NmtError that says what was given instead: the Python
    API takes any iterable of strings, and refuses a lone string (whose characters would be
    translated one by one), other types, and text that cannot be UTF-8 (a lone surrogate, as
    JSON's "\\ud800" decodes to), which the subword model cannot read. `one_per` (count, what):
    exactly one text per `what` (one prefix per text, one target per source)."""
    if isinstance(texts, (str, bytes)):
        raise NmtError(
            f"{name} is one {type(texts).__name__}, not a list of texts",
            name,
            f"pass a list: [{texts[:20]!r}]",
        )
    try:
        texts = list(texts)
    except TypeError:
        raise NmtError(
            f"{name} must be an iterable of str, not {type(texts).__name__}", name
        ) from None
    for line, text in enumerate(texts, first_line):
        if not isinstance(text, str):
            raise NmtError(
                f"{name} must hold str, but item {line} is {type(text).__name__}: {text!r:.40}",
                name,
                "decode bytes first (text.decode('utf-8')); give '' for an empty line",
            )
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise NmtError(
                f"item {line} holds U+{ord(text[exc.start]):04X} at character {exc.start + 1}, "
                "a lone surrogate: not a character, and not UTF-8",
                name,
                "send the character whole (both halves of a surrogate pair), or remove it",
            ) from None
    if one_per is not None and len(texts) != one_per[0]:  # (count, of what): one text each
        count, what = one_per
        raise NmtError(
            f"{count} {what}s but {len(texts)} {name}",
            name,
            f"give one {name.removesuffix('s')} per {what}, in the same order",
        )
    return texts


def prepare_lines(
    texts: Sequence[str],
    first_line: int,
    protector: Protector,
    tokenizer: Tokenizer,
    limit: int,
    xml: bool,
    long_lines: str = "split",
) -> list[Prepared]:
    """Normalise, mask and split each text into subwords; one over `limit` subwords is split
    into parts of at most `limit` (`long_lines="split"`) or truncated ("truncate"); `xml`: the
    texts hold markup, whose tags should pair up."""
    masked = [protector.mask(normalize(t)) for t in texts]
    ids = tokenizer.encode([m.text for m in masked])
    items = []
    for line, m, seq in zip(range(first_line, first_line + len(texts)), masked, ids):
        warnings = []
        if m.unprotected:
            warnings.append(
                f"line {line} has more than {MAX_SPANS} protected spans; the last "
                f"{m.unprotected} are translated as ordinary text"
            )
        if xml and (unpaired := m.unpaired_tags()):
            warnings.append(
                f"line {line}: {', '.join(unpaired)} has no partner tag; the line is not "
                "well-formed XML, and its translation will not be either"
            )
        cuts = []
        if len(seq) > limit and long_lines == "split":
            cuts = split_points(tokenizer.pieces(seq), limit)
            warnings.append(
                f"line {line} has {len(seq)} subwords, over the limit of {limit} "
                f"(decode.max_input_len); translated in {len(cuts) + 1} parts, their "
                "translations joined"
            )
        elif len(seq) > limit:
            warnings.append(
                f"line {line} has {len(seq)} subwords; truncated to the first {limit} "
                "(decode.max_input_len)"
            )
            seq = seq[:limit]
        items.append(Prepared(m, seq, warnings, line, cuts=cuts))
    return items


# Where a line may be split, best first: after a sentence or clause end, after a comma, at
# any space; each followed by a space (a subword that begins with SentencePiece's "▁").
_BOUNDARIES = (tuple(".!?;:"), (",",), ())


def split_points(pieces: Sequence[str], limit: int) -> list[int]:
    """Where to cut a line's subwords `pieces` into parts of at most `limit`: recursively, at
    the best kind of boundary that the part holds, the one nearest its middle; a part with no
    boundary at all is cut into chunks of `limit`. A placeholder is one subword, so a
    protected span is never cut."""

    def cut(start: int, end: int) -> list[int]:
        if end - start <= limit:
            return []
        for ends in _BOUNDARIES:
            inside = [
                i
                for i in range(start + 1, end)
                if pieces[i].startswith("\u2581") and (not ends or pieces[i - 1].endswith(ends))
            ]
            if inside:
                i = min(inside, key=lambda i: abs(2 * i - start - end))
                return [*cut(start, i), i, *cut(i, end)]
        return list(range(start + limit, end, limit))

    return cut(0, len(pieces))


def add_prefixes(
    items: Sequence[Prepared],
    prefixes: Sequence[str],
    protector: Protector | None,
    tokenizer: Tokenizer,
) -> None:
    """Give each line its prefix (one per line, "" for none): masked like the line (`protector`;
    None for a model without placeholders), normalised and split into target subwords."""
    for item, prefix in zip(items, prefixes, strict=True):
        item.prefix_text = prefix if protector is None else masked_prefix(item, prefix, protector)
    encoded = tokenizer.encode([normalize(item.prefix_text) for item in items])
    for item, prefix_ids in zip(items, encoded):
        item.prefix = prefix_ids


def masked_prefix(item: Prepared, prefix: str, protector: Protector) -> str:
    """A prefix with its source line's placeholders: forced as given, its spans count as
    emitted, and the search places the rest."""
    masked = None if PLACEHOLDER.search(prefix) else protector.mask_prefix(item.masked, prefix)
    if masked is None:
        raise NmtError(
            "the prefix holds a protected span (placeholder, tag, URL, term) that its "
            "source line does not hold as often, or a placeholder symbol",
            f"the prefix of line {item.line}",
            "give a prefix whose spans all come from its source line",
        )
    return masked


def source_tensors(items: Sequence[Prepared], device: torch.device) -> tuple[torch.Tensor, ...]:
    """Prepared lines as the search takes them: padded ids with eos [n, S], lengths [n]."""
    lengths = torch.tensor([len(item.ids) + 1 for item in items])
    sentences = [torch.tensor([*item.ids, EOS_ID]) for item in items]
    src = pad_sequence(sentences, batch_first=True, padding_value=PAD_ID)
    return src.to(device), lengths.to(device)


def prefix_tensor(items: Sequence[Prepared]) -> torch.Tensor | None:
    """The lines' prefixes [n, P], -1 after each one's end; None when none has one."""
    if not any(item.prefix for item in items):
        return None
    width = max(len(item.prefix) for item in items)
    return torch.tensor([[*item.prefix, *[-1] * (width - len(item.prefix))] for item in items])
