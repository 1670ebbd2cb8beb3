"""Line-aligned text files for `nmt translate` and `nmt score`: exactly one output line per
input line, in order, whatever the input (a file, a pipe, a terminal, stdin) or the output
(a file written atomically under a progress bar, or stdout flushed line by line).

Files are read in large chunks, which sort well by length; pipes and terminals in chunks of
whatever lines have arrived, so each translation goes out as soon as its line is in. The output
formats (text, tsv, jsonl) and the per-line inputs beside the text (prefixes) live here too.
"""

from __future__ import annotations

import contextlib
import queue
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from tqdm import tqdm

from nmt.data.corpus import count_lines, decode_lines, open_input
from nmt.errors import NmtError
from nmt.fileio import atomic_open, json_line
from nmt.translate.outputs import Result
from nmt.translate.translator import Translator

T = TypeVar("T")


def chunks(lines: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of up to `size` lines (files: large chunks sort well by length)."""
    chunk: list[T] = []
    for line in lines:
        chunk.append(line)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def live_chunks(lines: Iterable[str], size: int, linger: float = 0.05) -> Iterator[list[str]]:
    """Chunks of whatever lines have arrived (at most `size`), for pipes and terminals.

    A reader thread queues lines as they come; each chunk waits for one line, then takes what
    else arrives within `linger` seconds. So a pipe gets each translation as soon as its line
    is in, while a fast producer still gets batched decoding.
    """
    inbox: queue.Queue = queue.Queue(maxsize=4 * size)
    done = object()

    def read() -> None:
        try:
            for line in lines:
                inbox.put(line)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer below
            inbox.put(exc)
        inbox.put(done)

    threading.Thread(target=read, daemon=True).start()
    finished = False
    while not finished:
        chunk = []
        item = inbox.get()
        while True:
            if item is done:
                finished = True
                break
            if isinstance(item, BaseException):
                raise item
            chunk.append(item)
            if len(chunk) == size:
                break
            try:
                item = inbox.get(timeout=linger)
            except queue.Empty:
                break
        if chunk:
            yield chunk


def format_result(result: Result, fmt: str, line: int, source: str, attention: bool = False) -> str:
    """One output line for one input line (no newline): text is the best translation; tsv is
    `translation<TAB>score` per hypothesis; jsonl is a JSON object with every hypothesis (and,
    with `attention`, its attention weights over the source pieces)."""
    if fmt == "text":  # no hypothesis only if the model's scores were not finite
        return result.hypotheses[0].text if result.hypotheses else ""
    if fmt == "tsv":
        return "\t".join(f"{tsv_field(h.text)}\t{h.score:.4f}" for h in result.hypotheses)
    record = {
        "line": line,
        "source": source,
        "source_pieces": result.source_pieces,
        "hypotheses": [
            {
                "text": h.text,
                "score": round(h.score, 6),
                "pieces": h.pieces,
                **(
                    {"attention": _rounded(h.attention)}
                    if attention and h.attention is not None
                    else {}
                ),
            }
            for h in result.hypotheses
        ],
    }
    if result.terms is not None:
        record["glossary"] = [{"source": src, "target": tgt} for src, tgt in result.terms]
    return json_line(record)


def tsv_field(text: str) -> str:
    """Text as one TSV column: a tab inside it (a source or prefix may hold one) becomes a
    space, so that every line keeps its number of columns."""
    return text.replace("\t", " ")


def _rounded(matrix: list[list[float]]) -> list[list[float]]:
    return [[round(x, 4) for x in row] for row in matrix]


def translate_stream(
    translator: Translator,
    chunked_lines: Iterable[list[str]],
    write: Callable[[str], None],
    fmt: str = "text",
    attention: bool = False,
    plot_dir: Path | None = None,
    plot_lines: int = 10,
    on_chunk: Callable[[int], None] = lambda n: None,
    prefixes: Prefixes | None = None,
    **options,
) -> int:
    """Translate chunks of lines, writing exactly one output line per input line, in order.

    `write` receives each chunk's output (newline-terminated lines); `on_chunk` the number of
    lines done. `attention` adds the attention weights to jsonl output; with `plot_dir`, the
    first `plot_lines` lines get a heatmap, line-N.png; with `prefixes`, each translation
    begins with its line's. Options go to `translate_nbest`. Returns the number of lines.
    """
    done = 0
    for lines in chunked_lines:
        plotting = plot_dir is not None and done < plot_lines
        results = translator.translate_nbest(
            lines,
            first_line=done + 1,
            attention=attention or plotting,
            prefixes=None if prefixes is None else prefixes.take(done, len(lines)),
            **options,
        )
        write(
            "".join(
                format_result(r, fmt, done + i + 1, line, attention) + "\n"
                for i, (r, line) in enumerate(zip(results, lines))
            )
        )
        if plotting:
            _plot(results[: plot_lines - done], done + 1, plot_dir)
        done += len(lines)
        on_chunk(len(lines))
    if prefixes is not None:
        prefixes.take(done, 0)
    return done


@dataclass
class Prefixes:
    """The lines of a prefix file (`translate --prefix-file`), one per input line."""

    lines: list[str]
    name: str

    def take(self, start: int, count: int) -> list[str]:
        """The prefixes of input lines start+1 .. start+count; an error where the file and
        the input do not line up (count 0: the input has ended at `start`)."""
        end = start + count
        if end > len(self.lines) or (count == 0 and start != len(self.lines)):
            raise NmtError(
                f"the prefix file has {len(self.lines)} lines, the input "
                + (f"{start}" if count == 0 else f"more than {len(self.lines)}"),
                self.name,
                "give one prefix per input line (an empty line for none)",
            )
        return self.lines[start:end]


def _plot(results: list[Result], first_line: int, plot_dir: Path) -> None:
    """Heatmaps of the best hypotheses' attention (lines without attention are skipped)."""
    from nmt.translate.plot import plot_attention

    plot_dir.mkdir(parents=True, exist_ok=True)
    for i, r in enumerate(results):
        best = r.hypotheses[0]
        if best.attention is not None and r.source_pieces:
            path = plot_dir / f"line-{first_line + i}.png"
            plot_attention(best.attention, r.source_pieces, [*best.pieces, "</s>"], path)


def read_prefixes(path: Path, errors: str = "strict") -> Prefixes:
    """A prefix file: UTF-8 lines (errors name the line)."""
    with open_input(str(path)) as (stream, name, _):
        return Prefixes(list(decode_lines(stream, name, errors, UTF8_FIX)), name)


def plot_directory(path: Path) -> None:
    """Create the directory for attention heatmaps before any line is translated, so that a
    path that cannot be one fails at once."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise NmtError(
            "this path is a file; the heatmaps need a directory", str(path),
            "name a directory (it is created)",
        ) from None  # fmt: skip


UTF8_FIX = "convert it to UTF-8 (e.g. `iconv -f latin1 -t utf-8`), or pass --errors replace"


def run_files(
    translator: Translator,
    input: str,
    output: str,
    errors: str = "strict",
    chunk_lines: int = 2000,
    **options,
) -> int:
    """`nmt translate`: from a file or stdin ("-") to a file (written atomically, with a
    progress bar) or stdout (flushed after every chunk). Options go to `translate_stream`."""
    with open_input(input) as (stream, name, regular):
        lines = decode_lines(stream, name, errors, UTF8_FIX)
        if regular:  # a file: large chunks sort well by length; its size sets the progress bar
            total, chunked = count_lines(Path(input)), chunks(lines, chunk_lines)
            if options.get("prefixes") is not None:  # line counts compared before any work
                options["prefixes"].take(total, 0)
        else:  # a pipe or a terminal: translate each line as soon as it has arrived
            total, chunked = None, live_chunks(lines, chunk_lines)
        return _write_output(translator, chunked, output, total, options)


def _write_output(
    translator: Translator,
    chunked: Iterable[list[str]],
    output: str,
    total: int | None,
    options: dict[str, Any],
) -> int:
    with line_output(output, total, "translate") as (write, advance, warn):
        if output != "-":
            translator.warn = warn
        return translate_stream(translator, chunked, write, on_chunk=advance, **options)


@contextlib.contextmanager
def line_output(
    output: str, total: int | None, desc: str
) -> Iterator[tuple[Callable[[str], None], Callable[[int], None], Callable[[str], None]]]:
    """Where a command's output lines go: stdout ("-"), flushed after every write so that a
    pipe gets each line at once, or a file, written atomically under a progress bar of
    `total` lines. Yields write(text), advance(lines done) and warn(message), which prints a
    warning on stderr without breaking the bar."""
    if output == "-":

        def write(text: str) -> None:
            sys.stdout.write(text)
            sys.stdout.flush()

        yield write, lambda n: None, lambda message: print(message, file=sys.stderr)
        return
    with (
        atomic_open(Path(output)) as fh,
        tqdm(total=total, unit="line", file=sys.stderr, desc=desc, disable=None) as bar,
    ):
        yield fh.write, bar.update, lambda message: bar.write(message, file=sys.stderr)
