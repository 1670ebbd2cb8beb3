"""Read parallel corpora as streams of (source, target) pairs, and clean training pairs.

Three forms, all streamed so memory does not grow with the corpus:

- `text`: aligned files `PREFIX.SRC` and `PREFIX.TGT`, one sentence a line;
- `tsv`: one file whose header line names the columns (e.g. `ref  es  en`);
- `hf`: anything the `datasets` library loads (hub name, `save_to_disk` directory, local
  JSON/CSV/Parquet files), with either a `translation` column of {lang: text} dicts or one column
  per language. Arrow data is memory-mapped and read in batches.

Text and TSV are read by our own line reader rather than through `datasets`, so that a bad byte or
a short row is reported with its file and line number, and TSV fields are never subject to CSV
quoting rules. Files may be gzip-compressed (`.gz`).
"""

from __future__ import annotations

import contextlib
import gzip
import os
import re
import stat
import sys
import unicodedata
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from nmt.errors import NmtError
from nmt.fileio import os_error

Pair = tuple[str, str]
HF_FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}
_READ_CHUNK = 1 << 20


def _open_binary(path: Path) -> IO[bytes]:
    try:
        return gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")
    except OSError as exc:
        raise os_error(exc, path) from None


@contextlib.contextmanager
def _read_errors(name: str, line: Callable[[], int | None] = lambda: None) -> Iterator[None]:
    """Errors of reading a (possibly gzipped) file as NmtErrors naming the file and line."""
    fix = "check the file (copy or download it again)"
    try:
        yield
    except (gzip.BadGzipFile, zlib.error) as exc:
        raise NmtError(f"not gzip data, or corrupt ({exc})", _at(name, line()), fix) from None
    except EOFError:
        raise NmtError(
            "truncated: the compressed data ends early", _at(name, line()), fix
        ) from None
    except OSError as exc:
        raise os_error(exc, name) from None


def _at(name: str, line: int | None) -> str:
    return f"{name}:{line}" if line else name


def _require_file(path: Path, fix: str = "check the path") -> None:
    if path.is_dir():
        raise NmtError("this is a directory, not a file", str(path), "name a text file")
    if path.exists() and not path.is_file():
        raise NmtError(
            "not a regular file (a pipe or a device): a corpus is read more than once",
            str(path),
            "save it to a file first",
        )
    if not path.is_file():
        raise NmtError("file not found", str(path), fix)


@contextlib.contextmanager
def open_input(name: str) -> Iterator[tuple[IO[bytes], str, bool]]:
    """A text input: "-" is stdin; else a file (maybe gzipped), a named pipe or a device.
    Yields (binary stream, its name for errors, whether it is a regular file)."""
    if name == "-":
        if sys.stdin is None:
            raise NmtError("standard input is closed", "<stdin>", "give a file, or pipe text in")
        yield sys.stdin.buffer, "<stdin>", False
        return
    try:
        mode = os.stat(name).st_mode
    except FileNotFoundError:
        raise NmtError("input file not found", name, "check the path, or use - for stdin") from None
    except OSError as exc:
        raise os_error(exc, name) from None
    if stat.S_ISDIR(mode):
        raise NmtError("the input is a directory", name, "name a text file, or - for stdin")
    with _open_binary(Path(name)) as fh:
        yield fh, name, stat.S_ISREG(mode)


def count_lines(path: Path) -> int:
    """Lines in a file (a last line without a newline counts), reading bytes in large blocks."""
    return _line_counts(path)[0]


def _line_counts(path: Path) -> tuple[int, int]:
    """(lines, blank lines at the end) of a file, reading bytes in large blocks."""
    n, last, breaks = 0, b"\n", 0  # breaks: newlines in the run of line ends at the end
    with _open_binary(path) as fh, _read_errors(str(path)):
        while block := fh.read(_READ_CHUNK):
            n += block.count(b"\n")
            last = block[-1:]
            text = block.rstrip(b"\r\n")
            breaks = block[len(text) :].count(b"\n") + (0 if text else breaks)
    unterminated = last != b"\n"
    return n + unterminated, max(0, breaks - 1 + unterminated) if n else 0


def read_lines(path: Path) -> Iterator[str]:
    """Yield the lines of a UTF-8 file without their line ending; a BOM and CRLF are accepted.

    Invalid UTF-8, or a compressed file that is corrupt or cut short, is an NmtError naming
    the file and line.
    """
    _require_file(path)
    with _open_binary(path) as fh:
        yield from decode_lines(fh, str(path))


_UTF8_FIX = "convert it to UTF-8, e.g. `iconv -f latin1 -t utf-8`"


def decode_lines(
    stream: Iterable[bytes], name: str, errors: str = "strict", fix: str = _UTF8_FIX
) -> Iterator[str]:
    """Decode the byte lines of a stream as UTF-8, dropping line endings (LF or CRLF) and a BOM.

    With errors="strict", invalid UTF-8 is an NmtError naming `name` and the line; with
    "replace", bad bytes become U+FFFD. Read errors (a corrupt or truncated .gz) name the line.
    """
    lineno = 0
    with _read_errors(name, lambda: lineno + 1):
        for lineno, raw in enumerate(stream, 1):  # noqa: B007 (read by the lambda above)
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                line = raw.decode("utf-8", errors=errors)
            except UnicodeDecodeError as exc:
                raise NmtError(
                    f"invalid UTF-8 (byte {exc.start + 1} of the line)",
                    f"{name}:{lineno}",
                    fix,
                ) from None
            yield line.removesuffix("\n").removesuffix("\r")


class TextCorpus:
    """Aligned plain-text files PREFIX.SRC and PREFIX.TGT."""

    def __init__(self, prefix: str, src: str, tgt: str):
        self.paths = (Path(f"{prefix}.{src}"), Path(f"{prefix}.{tgt}"))
        for path in self.paths:
            _require_file(path, "check the prefix and the language codes (PREFIX.SRC, PREFIX.TGT)")
        counts = [count_lines(p) for p in self.paths]
        if counts[0] != counts[1]:
            raise NmtError(
                f"source and target line counts differ: {self.paths[0]} has {counts[0]} lines, "
                f"{self.paths[1]} has {counts[1]}",
                str(self.paths[0]),
                "the files must be line-aligned: line i of one translates line i of the other",
            )
        self.size = counts[0]
        self.name = f"{prefix}.{{{src},{tgt}}}"

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[Pair]:
        return zip(read_lines(self.paths[0]), read_lines(self.paths[1]))


class TsvCorpus:
    """A tab-separated file whose header line names the columns; no quoting."""

    def __init__(self, path: str, src: str, tgt: str):
        self.path = Path(path)
        _require_file(self.path)
        first = next(read_lines(self.path), None)
        if first is None:
            raise NmtError(
                "the file is empty", str(self.path), "give a TSV file with a header line"
            )
        header = first.split("\t")
        missing = [lang for lang in (src, tgt) if lang not in header]
        if missing:
            raise NmtError(
                f"the header has no column named {' or '.join(map(repr, missing))}; "
                f"its columns are {header}",
                f"{self.path}:1",
                "the first line must name the columns, e.g. `id<TAB>es<TAB>en`",
            )
        twice = [lang for lang in dict.fromkeys((src, tgt)) if header.count(lang) > 1]
        if twice:
            raise NmtError(
                f"the header names the column {twice[0]!r} {header.count(twice[0])} times, so "
                "which one holds that language is ambiguous",
                f"{self.path}:1",
                "give every column its own name (e.g. rename the extra one to `en2`)",
            )
        self.columns = (header.index(src), header.index(tgt))
        self.width = len(header)
        lines, trailing_blank = _line_counts(self.path)
        self.size = lines - 1 - trailing_blank  # blank lines at the end are no rows
        self.name = str(self.path)

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[Pair]:
        lines = read_lines(self.path)
        next(lines)
        s, t = self.columns
        blank = None  # the first of a run of blank lines, an error unless the file ends there
        for lineno, line in enumerate(lines, 2):
            if not line:
                blank = blank or lineno
                continue
            if blank:
                raise NmtError(
                    f"a blank line where a row of {self.width} tab-separated fields belongs",
                    f"{self.path}:{blank}",
                    "remove the blank line (blank lines are allowed at the end only)",
                )
            fields = line.split("\t")
            if len(fields) != self.width:
                raise NmtError(
                    f"expected {self.width} tab-separated fields, found {len(fields)}",
                    f"{self.path}:{lineno}",
                    "give every row one field per column, separated by tabs; a field cannot "
                    "hold a tab or a line break (no quoting is applied)",
                )
            yield fields[s], fields[t]


class HFCorpus:
    """Anything `datasets` loads: hub name, `save_to_disk` directory, JSON/CSV/Parquet files.

    `spec` is `NAME_OR_PATH[:SPLIT]` (split defaults to `train`).
    """

    batch_size = 1000

    def __init__(self, spec: str, src: str, tgt: str, subset: str = ""):
        self.name, self.src, self.tgt = spec, src, tgt
        self.dataset = _load_hf(spec, subset)
        columns = list(self.dataset.column_names or [])
        if "translation" in columns:
            self.columns: tuple[str, ...] = ("translation",)
        elif src in columns and tgt in columns:
            self.columns = (src, tgt)
        else:
            raise NmtError(
                f"the dataset has neither a `translation` column nor columns `{src}` and "
                f"`{tgt}`; its columns are {columns}",
                spec,
                "use a dataset with {'translation': {src: ..., tgt: ...}} rows or one column "
                "per language",
            )

    def __len__(self) -> int:
        return len(self.dataset)

    def __iter__(self) -> Iterator[Pair]:
        for batch in self.dataset.select_columns(list(self.columns)).iter(self.batch_size):
            if self.columns == ("translation",):
                rows: Iterable[Any] = batch["translation"]
                pairs = ((r.get(self.src), r.get(self.tgt)) for r in rows)
            else:
                pairs = zip(batch[self.src], batch[self.tgt])
            for s, t in pairs:
                yield s or "", t or ""


def _load_hf(spec: str, subset: str) -> Any:
    """Load one split through `datasets`: saved directory, local data files, or hub name."""
    import datasets

    path, split = spec, "train"
    head, sep, tail = spec.rpartition(":")
    if sep and head and "/" not in tail:
        path, split = head, tail
    local = Path(path)
    try:
        if local.is_dir() and any(
            (local / f).exists() for f in ("state.json", "dataset_dict.json")
        ):
            loaded = datasets.load_from_disk(str(local))
            if isinstance(loaded, datasets.DatasetDict):
                if split not in loaded:
                    raise NmtError(
                        f"no split `{split}`; the splits are {list(loaded)}",
                        spec,
                        f"append the split to the path, e.g. {path}:{next(iter(loaded))}",
                    )
                loaded = loaded[split]
            return loaded
        builder = HF_FILE_BUILDERS.get(local.suffix.lower()) if local.is_file() else None
        if builder:
            return datasets.load_dataset(builder, data_files=str(local), split="train")
        return datasets.load_dataset(path, subset or None, split=split)
    except NmtError:
        raise
    except Exception as exc:  # datasets raises many types (hub, file, schema errors)
        raise NmtError(
            f"`datasets` could not load it: {type(exc).__name__}: {str(exc).splitlines()[0]}",
            spec,
            "give a TSV file, a text prefix (PREFIX.src/PREFIX.tgt), a save_to_disk directory, "
            "JSON/CSV/Parquet files, or a hub name where the hub is reachable; "
            "set --format to say which",
        ) from None


def open_corpus(path: str, src: str, tgt: str, fmt: str = "auto", hf_subset: str = ""):
    """Open a corpus in the given format, or tell the format from the path when `fmt` is auto."""
    if fmt == "auto":
        fmt = detect_format(path, src, tgt)
    if fmt == "text":
        return TextCorpus(path, src, tgt)
    if fmt == "tsv":
        return TsvCorpus(path, src, tgt)
    return HFCorpus(path, src, tgt, hf_subset)


def detect_format(path: str, src: str, tgt: str) -> str:
    """`text` if PATH.SRC or PATH.TGT exists, `tsv` for a .tsv file, otherwise `hf`."""
    p = Path(path)
    if Path(f"{path}.{src}").is_file() or Path(f"{path}.{tgt}").is_file():
        return "text"  # TextCorpus names the file that is missing, if one is
    suffix = Path(p.name.lower().removesuffix(".gz")).suffix
    if not p.exists() and suffix in (".tsv", ".txt", *HF_FILE_BUILDERS):
        raise NmtError("file not found", path, "check the path")
    if not p.is_file():
        return "hf"  # a directory, NAME:split, or a hub name
    if suffix == ".tsv":
        return "tsv"
    if suffix in HF_FILE_BUILDERS:
        return "hf"
    raise NmtError(
        "cannot tell the corpus format from the file name",
        path,
        f"pass --format tsv (header names the columns) or give a text prefix whose files are "
        f"PREFIX.{src} and PREFIX.{tgt}",
    )


# --- cleaning -------------------------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x9f\u200b\ufeff]")
_SPACE = re.compile(r"\s+")
DROP_RULES = ("empty", "too_long", "ratio", "duplicate")


def normalize(text: str) -> str:
    """Unicode NFC, control characters removed, whitespace runs collapsed to one space."""
    if not unicodedata.is_normalized("NFC", text):
        text = unicodedata.normalize("NFC", text)
    return _SPACE.sub(" ", _CONTROL.sub("", text)).strip()


@dataclass
class Cleaner:
    """Normalises training pairs and drops those that break a rule, counting each rule.

    Duplicates are not dropped here, since that needs the whole corpus: see `first_occurrences`.
    """

    max_words: int
    max_ratio: float

    def __post_init__(self) -> None:
        self.counts: Counter[str] = Counter({rule: 0 for rule in DROP_RULES})

    def rule_broken(self, src: str, tgt: str) -> str | None:
        """The name of the first rule the (normalised) pair breaks, or None."""
        if not src or not tgt:
            return "empty"
        ns, nt = src.count(" ") + 1, tgt.count(" ") + 1
        if max(ns, nt) > self.max_words:
            return "too_long"
        if max(ns, nt) > self.max_ratio * min(ns, nt):
            return "ratio"
        return None

    def __call__(self, pairs: Iterable[Pair]) -> Iterator[Pair]:
        for src, tgt in pairs:
            src, tgt = normalize(src), normalize(tgt)
            rule = self.rule_broken(src, tgt)
            if rule:
                self.counts[rule] += 1
            else:
                yield src, tgt


def first_occurrences(keys: Iterable[int]) -> np.ndarray:
    """Boolean mask over `keys` that is True where a key is seen for the first time."""
    arr = np.fromiter(keys, dtype=np.int64)
    keep = np.zeros(len(arr), dtype=bool)
    keep[np.unique(arr, return_index=True)[1]] = True
    return keep
