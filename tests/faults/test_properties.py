"""Property-based tests (hypothesis) of the line contracts that every other stage relies on.

The corpus readers (`decode_lines`, `count_lines`, `read_lines`, `TsvCorpus`, `TextCorpus`)
must turn any bytes into exactly one line per `\\n`-terminated line (a last line without a
newline counts), strip only the line ending and a leading BOM, and name the file and line of
anything they cannot read. `translate` must turn any bytes into exactly one output line per
input line, or fail with an error naming the input file and line. Hand-written tests check a
few inputs; these generate many, biased towards the characters that trip line splitters:
CR, VT, FF, the file/group/record separators, NEL, LS, PS, NUL, a BOM and invalid UTF-8.
"""

from __future__ import annotations

import gzip
import io
import json
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import assume, event, example, given, settings
from hypothesis import strategies as st

from nmt.data.corpus import TextCorpus, TsvCorpus, count_lines, decode_lines, read_lines
from nmt.errors import NmtError
from nmt.translate import Translator
from nmt.translate.files import run_files

BOM = b"\xef\xbb\xbf"
# Characters that some line splitter (str.splitlines, a terminal, a JSON reader) treats as a
# line break or that a reader might drop, as text; the toolkit splits at "\n" only.
TRICKY = ["\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029", "\x00"]
TRICKY += ["\ufeff", "\t", " "]
# Byte pieces that make up generated inputs: words, the tricky characters, line ends, a BOM,
# and invalid UTF-8 (a lone continuation byte, a truncated sequence, a byte never valid,
# an encoded surrogate).
PIECES = [b"hola", b"casa", "é".encode(), "€".encode(), "😀".encode()]
PIECES += [c.encode() for c in TRICKY] + [b"\n", b"\r\n", BOM]
BAD = [b"\x80", b"\xc3", b"\xe2\x82", b"\xff", b"\xed\xa0\x80"]

FAST = settings(max_examples=60, deadline=None)
FILES = settings(max_examples=25, deadline=None)


def tricky_bytes(bad: bool = True, max_pieces: int = 24) -> st.SearchStrategy[bytes]:
    """Bytes biased towards line-splitting characters, optionally with invalid UTF-8."""
    pieces = st.sampled_from(PIECES + BAD if bad else PIECES)
    joined = st.lists(pieces, max_size=max_pieces).map(b"".join)
    if not bad:
        return joined
    return st.one_of(joined, st.binary(max_size=40))


def split_lines(data: bytes) -> list[bytes]:
    """The lines of `data` as the toolkit counts them: split at b"\\n", a last line without a
    newline counts, a final newline adds no line. Each keeps everything but its "\\n"."""
    if not data:
        return []
    lines = data.split(b"\n")
    return lines[:-1] if lines[-1] == b"" else lines


def first_bad_line(lines: list[bytes]) -> int | None:
    """The 1-based number of the first line that is not UTF-8 (a BOM may open line 1)."""
    for i, raw in enumerate(lines):
        try:
            (raw.removeprefix(BOM) if i == 0 else raw).decode("utf-8")
        except UnicodeDecodeError:
            return i + 1
    return None


def expected_text(lines: list[bytes], errors: str = "replace") -> list[str]:
    """What a reader should yield: each line without its "\\r\\n" or "\\n" ending (a "\\r" at
    the very end of the file is taken as a cut "\\r\\n"), and line 1 without a BOM."""
    out = []
    for i, raw in enumerate(lines):
        raw = raw.removeprefix(BOM) if i == 0 else raw
        out.append(raw.removesuffix(b"\r").decode("utf-8", errors))
    return out


def read_all(lines: Iterator[str]) -> tuple[list[str], NmtError | None]:
    """The lines a reader yields before it stops, and the NmtError it stops with, if any."""
    got: list[str] = []
    try:
        for line in lines:
            got.append(line)
    except NmtError as exc:
        return got, exc
    return got, None


# --- decode_lines -----------------------------------------------------------------------------


@FAST
@given(data=tricky_bytes())
def test_decode_lines_yields_one_line_per_line_or_names_the_bad_one(data: bytes) -> None:
    """Strict decoding yields one str per line, or stops at the first line that is not UTF-8
    with an NmtError naming `name:LINE`, having yielded the lines before it."""
    lines = split_lines(data)
    bad = first_bad_line(lines)
    got, error = read_all(decode_lines(io.BytesIO(data), "in.txt"))
    if bad is None:
        assert error is None
        assert len(got) == len(lines)
    else:
        assert error is not None, f"no error for invalid UTF-8 on line {bad}"
        assert error.where == f"in.txt:{bad}"
        assert f"in.txt:{bad}" in str(error)
        assert len(got) == bad - 1
    assert all("\n" not in line for line in got)


@FAST
@given(data=tricky_bytes())
def test_decode_lines_replace_never_raises_and_keeps_the_count(data: bytes) -> None:
    """With errors="replace" every input gives exactly one str per line."""
    got = list(decode_lines(io.BytesIO(data), "in.txt", errors="replace"))
    assert len(got) == len(split_lines(data))
    if first_bad_line(split_lines(data)) is not None:
        assert any("\ufffd" in line for line in got)


@FAST
@given(data=tricky_bytes())
@example(data=b"a\r\r\nb\n")  # text ending in CR, then a CRLF ending: keep the text's CR
def test_decode_lines_strips_only_the_line_end_and_a_leading_bom(data: bytes) -> None:
    """Each line is its bytes decoded, less one "\\r\\n" or "\\n" ending; a BOM is dropped on
    line 1 only, and every other character (CR inside a line, NEL, LS, PS, NUL) is kept."""
    lines = split_lines(data)
    got = list(decode_lines(io.BytesIO(data), "in.txt", errors="replace"))
    assert got == expected_text(lines)


# --- count_lines and read_lines -------------------------------------------------------------


@FAST
@given(data=tricky_bytes(bad=False), gz=st.booleans())
def test_count_lines_agrees_with_read_lines(data: bytes, gz: bool) -> None:
    """`count_lines` is the number of lines `read_lines` yields, plain or gzipped."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ("in.txt.gz" if gz else "in.txt")
        path.write_bytes(gzip.compress(data) if gz else data)
        n = count_lines(path)
        assert n == len(list(read_lines(path)))
        assert n == len(split_lines(data))


# --- TsvCorpus ------------------------------------------------------------------------------

# Field text: anything but the separators; the tricky characters are common.
FIELD = st.text(
    alphabet=st.one_of(
        st.sampled_from([c for c in TRICKY if c not in "\t\r"]),
        st.characters(blacklist_characters="\t\n\r", blacklist_categories=("Cs",)),
    ),
    max_size=8,
)
PAIRS = st.lists(st.tuples(FIELD, FIELD), max_size=6)
HEADERS = st.sampled_from(["id\tes\ten", "es\ten", "en\tes", "en\tid\tes", "es\ten\tnote"])


def tsv_lines(header: str, pairs: list[tuple[str, str]]) -> list[str]:
    """The header and one row a pair, each field in the column the header names."""
    columns = header.split("\t")
    rows = []
    for i, (es, en) in enumerate(pairs):
        values = {"id": str(i), "note": "", "es": es, "en": en}
        rows.append("\t".join(values[c] for c in columns))
    return [header, *rows]


def write_file(tmp: str, name: str, data: bytes) -> Path:
    """Write `data` to tmp/name, gzip-compressed if the name ends in .gz."""
    path = Path(tmp) / name
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    return path


@FILES
@given(
    pairs=PAIRS,
    header=HEADERS,
    eol=st.sampled_from(["\n", "\r\n"]),
    end=st.sampled_from(["", "\n", "\n\n", "\n\n\n", "\r\n\r\n", "\n\r\n"]),
    bom=st.booleans(),
    gz=st.booleans(),
)
def test_tsv_round_trips_rows(
    pairs: list[tuple[str, str]], header: str, eol: str, end: str, bom: bool, gz: bool
) -> None:
    """Rows written as tab-separated lines read back exactly, and `len` counts them, whatever
    the line endings, a BOM, blank lines at the end, or gzip."""
    data = (BOM if bom else b"") + (eol.join(tsv_lines(header, pairs)) + end).encode()
    with tempfile.TemporaryDirectory() as tmp:
        path = write_file(tmp, "c.tsv.gz" if gz else "c.tsv", data)
        corpus = TsvCorpus(str(path), "es", "en")
        assert list(corpus) == pairs
        assert len(corpus) == len(pairs)


@FILES
@given(
    pairs=PAIRS.filter(lambda p: len(p) >= 2),
    data=st.data(),
    blanks=st.integers(1, 3),
    eol=st.sampled_from(["\n", "\r\n"]),
)
def test_tsv_blank_line_inside_is_an_error_naming_it(
    pairs: list[tuple[str, str]], data: st.DataObject, blanks: int, eol: str
) -> None:
    """A run of blank lines between rows is an NmtError naming the file and its first line;
    the rows before it are read."""
    at = data.draw(st.integers(1, len(pairs) - 1), label="rows before the blank lines")
    lines = tsv_lines("id\tes\ten", pairs)
    lines[1 + at : 1 + at] = [""] * blanks
    with tempfile.TemporaryDirectory() as tmp:
        path = write_file(tmp, "c.tsv", (eol.join(lines) + eol).encode())
        got, error = read_all(iter(TsvCorpus(str(path), "es", "en")))
        assert error is not None
        assert error.where == f"{path}:{at + 2}"  # the header is line 1, row 1 is line 2
        assert got == pairs[:at]


# --- TextCorpus -----------------------------------------------------------------------------

LINE = st.text(
    alphabet=st.one_of(
        st.sampled_from(TRICKY),
        st.characters(blacklist_characters="\n", blacklist_categories=("Cs",)),
    ),
    max_size=8,
).map(lambda s: s.rstrip("\r"))  # a CR before the newline would read as a CRLF ending


def text_bytes(lines: list[str], final_newline: bool) -> bytes:
    """The lines as a UTF-8 file, with or without a final newline."""
    text = "\n".join(lines)
    if lines and (final_newline or not lines[-1]):  # a last empty line needs its newline
        text += "\n"
    return text.encode()


@FILES
@given(lines=st.lists(st.tuples(LINE, LINE), max_size=6), final=st.booleans(), gz=st.booleans())
def test_text_corpus_round_trips_aligned_lines(
    lines: list[tuple[str, str]], final: bool, gz: bool
) -> None:
    """Aligned lines written to PREFIX.es and PREFIX.en read back as the same pairs."""
    src, tgt = [s for s, _ in lines], [t for _, t in lines]
    src[:1] = [s.lstrip("\ufeff") for s in src[:1]]  # a BOM opening line 1 is no text
    tgt[:1] = [t.lstrip("\ufeff") for t in tgt[:1]]
    suffix = ".gz" if gz else ""
    with tempfile.TemporaryDirectory() as tmp:
        write_file(tmp, f"c.es{suffix}", text_bytes(src, final))
        write_file(tmp, f"c.en{suffix}", text_bytes(tgt, final))
        if gz:  # TextCorpus reads PREFIX.LANG: name the gzipped files by their language
            corpus = TextCorpus(f"{tmp}/c", f"es{suffix}", f"en{suffix}")
        else:
            corpus = TextCorpus(f"{tmp}/c", "es", "en")
        assert list(corpus) == list(zip(src, tgt))
        assert len(corpus) == len(lines)


@FILES
@given(src=st.lists(LINE, max_size=5), tgt=st.lists(LINE, max_size=5), final=st.booleans())
def test_text_corpus_different_line_counts_are_an_error(
    src: list[str], tgt: list[str], final: bool
) -> None:
    """Files with different numbers of lines are refused, with both counts in the message."""
    assume(len(src) != len(tgt))
    with tempfile.TemporaryDirectory() as tmp:
        write_file(tmp, "c.es", text_bytes(src, final))
        write_file(tmp, "c.en", text_bytes(tgt, final))
        with pytest.raises(NmtError) as caught:
            TextCorpus(f"{tmp}/c", "es", "en")
        assert f"has {len(src)} lines" in str(caught.value)
        assert f"has {len(tgt)}" in str(caught.value)


# --- translate: one line out per line in -------------------------------------------------------

TRANSLATE = settings(max_examples=10, deadline=None)


@pytest.fixture(scope="module")
def translator(run: Path) -> Translator:
    """The fault suite's tiny trained run (tests/faults/conftest.py): its translations are
    poor, but every code path runs."""
    loaded = Translator.from_checkpoint(run / "last.pt", device="cpu", precision="fp32")
    loaded.warn = lambda message: None
    return loaded


def translate_bytes(
    translator: Translator, data: bytes, fmt: str, errors: str, beam: int, chunk: int
) -> tuple[Path, bytes | None, NmtError | None]:
    """Translate `data` from a file; returns the input path, the output bytes (None if no
    output file was written) and the NmtError raised, if any."""
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "in.txt", Path(tmp) / "out.txt"
        src.write_bytes(data)
        error = None
        try:
            run_files(
                translator, str(src), str(out), errors=errors, chunk_lines=chunk, fmt=fmt, beam=beam
            )
        except NmtError as exc:
            error = exc
        translator.warn = lambda message: None  # run_files points it at its progress bar
        return src, (out.read_bytes() if out.exists() else None), error


def check_lines(output: bytes, data: bytes, fmt: str) -> None:
    """One output line per input line: "\\n"-terminated, and no other line break inside, for
    any splitter; jsonl lines are JSON objects numbering and quoting their input line."""
    expected = len(split_lines(data))
    assert output.count(b"\n") == expected
    assert output == b"" or output.endswith(b"\n")
    text = output.decode("utf-8")
    assert len(text.splitlines()) == expected
    if fmt == "jsonl":
        sources = list(decode_lines(io.BytesIO(data), "in", errors="replace"))
        for i, line in enumerate(text.splitlines(), 1):
            record = json.loads(line)
            assert record["line"] == i
            assert record["source"] == sources[i - 1]
    if fmt == "tsv":
        for line in text.splitlines():
            assert re.fullmatch(r"[^\t]*\t-?\d+\.\d{4}", line), line


@TRANSLATE
@given(
    data=tricky_bytes(max_pieces=16),
    fmt=st.sampled_from(["text", "tsv", "jsonl"]),
    beam=st.integers(1, 2),
    chunk=st.integers(1, 3),
)
def test_translate_replace_gives_one_line_per_input_line(
    translator: Translator, data: bytes, fmt: str, beam: int, chunk: int
) -> None:
    """With errors="replace", any bytes give exactly one output line per input line."""
    _, output, error = translate_bytes(translator, data, fmt, "replace", beam, chunk)
    assert error is None
    assert output is not None
    check_lines(output, data, fmt)


@TRANSLATE
@given(
    data=st.one_of(tricky_bytes(bad=False, max_pieces=16), tricky_bytes(max_pieces=16)),
    fmt=st.sampled_from(["text", "tsv", "jsonl"]),
    chunk=st.integers(1, 3),
)
def test_translate_strict_gives_one_line_per_input_line_or_names_the_bad_line(
    translator: Translator, data: bytes, fmt: str, chunk: int
) -> None:
    """With errors="strict", valid UTF-8 gives one line out per line in; invalid UTF-8 is an
    NmtError naming the input file and the first bad line, and leaves no output file."""
    src, output, error = translate_bytes(translator, data, fmt, "strict", 1, chunk)
    bad = first_bad_line(split_lines(data))
    event("valid UTF-8" if bad is None else "invalid UTF-8")
    if bad is None:
        assert error is None
        assert output is not None
        check_lines(output, data, fmt)
    else:
        assert error is not None
        assert f"{src}:{bad}" in str(error)
        assert output is None


@settings(max_examples=20, deadline=None)
@given(
    lines=st.lists(
        st.lists(st.sampled_from(["hola", "casa", *TRICKY]), max_size=5).map("".join),
        min_size=1,
        max_size=4,
    ),
    fmt=st.sampled_from(["text", "tsv", "jsonl"]),
)
def test_translate_line_breaks_inside_lines_stay_inside(
    translator: Translator, lines: list[str], fmt: str
) -> None:
    """Valid UTF-8 lines full of CR, VT, FF, separators, NEL, LS, PS, NUL and BOMs: still one
    output line per input line."""
    data = "\n".join(lines).encode() + b"\n"
    _, output, error = translate_bytes(translator, data, fmt, "strict", 1, 2)
    assert error is None
    assert output is not None
    check_lines(output, data, fmt)
