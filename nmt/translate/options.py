"""Translate's option rules, in one place: the search settings of a request (`DecodeOptions`,
each validated like its config key), and the rules of `nmt translate`'s and `nmt score`'s
options: which values are valid and which options need which others. The commands check them
all before any line is read: first those that need no model (`check_translate_files`,
`check_score_files`), then, once it is loaded, those that do (`check_model_options`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nmt.config import DecodeConfig, checked
from nmt.errors import NmtError
from nmt.fileio import refuse_input_as_output

if TYPE_CHECKING:
    from nmt.decode.sampling import Sampler
    from nmt.translate.translator import Translator

FORMATS = ("text", "tsv", "jsonl")
# The defaults of options that only apply with another one: a value other than these is "given".
TEMPERATURE, SEED, PLOT_LINES = 1.0, 1, 10


@dataclass
class DecodeOptions:
    """How a request's lines are decoded (`Translator.decode_options`)."""

    beam: int
    nbest: int
    alpha: float
    penalty: str
    batch_tokens: int
    attention: bool
    sampler: Sampler | None = None  # draw one translation per line instead of searching
    shortlist: bool = False  # score each line's lexical shortlist alone (when the model has one)

    @classmethod
    def build(
        cls,
        dc: DecodeConfig,
        beam: int | None,
        nbest: int,
        alpha: float | None,
        penalty: str | None,
        batch_tokens: int | None,
        attention: bool,
        sampling: str | None,
        temperature: float,
        seed: int,
        shortlist: bool | None = None,
    ) -> DecodeOptions:
        """Each setting validated like its config key and named by its flag; None: dc's."""

        def option(key: str, value: object, flag: str) -> Any:
            return getattr(dc, key) if value is None else checked(f"decode.{key}", value, flag)

        options = cls(
            beam=option("beam_size", beam, "--beam"),
            nbest=nbest,
            alpha=option("alpha", alpha, "--alpha"),
            penalty=option("length_penalty", penalty, "--penalty"),
            batch_tokens=option("batch_tokens", batch_tokens, "--batch-tokens"),
            attention=attention,
            shortlist=dc.shortlist if shortlist is None else shortlist,
        )
        if sampling is not None:
            for flag, value in (("--beam", beam or 1), ("--nbest", nbest)):
                if value > 1:
                    raise NmtError(
                        "sampling draws one translation per line, without a beam",
                        flag,
                        f"leave out {flag} (or --sampling)",
                    )
            from nmt.decode.sampling import Sampler  # here: the CLI imports no torch

            options.beam, options.sampler = 1, Sampler.parse(sampling, temperature, seed)
        if nbest < 1:
            raise NmtError(f"an n-best list of {nbest}", "--nbest", "ask for 1 or more")
        if nbest > options.beam:
            raise NmtError(
                f"an n-best list of {nbest} needs a beam of at least {nbest}, not {options.beam}",
                "--nbest",
                f"add --beam {nbest}",
            )
        return options


def check_translate_files(
    checkpoints: Sequence[Path],
    input: str,
    output: str,
    *,
    fmt: str,
    errors: str,
    nbest: int,
    attention: bool,
    plot_attention: Path | None,
    plot_lines: int,
    sampling: str | None,
    temperature: float,
    seed: int,
    glossary: Path | None,
    glossary_ignore_case: bool,
    markup: str | None,
    prefix_file: Path | None,
) -> None:
    """`nmt translate`'s rules that need no model, checked before any file is read, in the
    order that decides which of several problems is reported."""
    check_output_options(fmt, nbest, attention, errors)
    check_needed(
        ("--temperature", temperature != TEMPERATURE, "--sampling", sampling),
        ("--seed", seed != SEED, "--sampling", sampling),
        ("--plot-lines", plot_lines != PLOT_LINES, "--plot-attention", plot_attention),
        ("--glossary-ignore-case", glossary_ignore_case, "--glossary", glossary),
    )
    refuse_input_as_output(output, [input, prefix_file, glossary, *checkpoints])
    if markup not in (None, "xml"):
        raise NmtError(
            f"unknown markup {markup!r}", "--markup", "use --markup xml, or leave it out"
        )
    not_both_stdin(("--input", input), ("--prefix-file", prefix_file))


def check_model_options(
    translator: Translator, attention: bool, plot_attention: Path | None, **decode: Any
) -> None:
    """`nmt translate`'s rules that need the model: every search setting (`decode`, as
    `Translator.decode_options` takes them; the checkpoint's are the defaults), and attention
    only from a model that has it."""
    translator.decode_options(attention=attention, **decode)
    if decode.get("shortlist") and translator.shortlist is None:
        raise NmtError(
            "this checkpoint has no lexical shortlist",
            "--shortlist",
            "leave --shortlist out, or add one: nmt shortlist CHECKPOINT --data DIR --out NEW.pt",
        )
    if (attention or plot_attention) and not translator.has_attention:
        raise NmtError(
            "this model has no attention weights to show (rnnenc reads a fixed summary)",
            "--attention" if attention else "--plot-attention",
            "leave the option out, or use an rnnsearch or luong model",
        )


def check_score_files(
    checkpoints: Sequence[Path], source: str, target: str, output: str, fmt: str, errors: str
) -> None:
    """`nmt score`'s rules, checked before any file is read (its search settings are checked
    with its first pairs, `nmt.translate.forced.score_pairs`)."""
    check_output_options(fmt, 1, False, errors)
    not_both_stdin(("--source", source), ("--target", target))
    refuse_input_as_output(output, [source, target, *checkpoints])


def check_output_options(fmt: str, nbest: int, attention: bool, errors: str) -> None:
    """What the output format can hold, and how undecodable input is handled."""
    if fmt not in FORMATS:
        raise NmtError(f"unknown format {fmt!r}", "--format", "use text, tsv or jsonl")
    if errors not in ("strict", "replace"):
        raise NmtError(f"unknown error mode {errors!r}", "--errors", "use strict or replace")
    if nbest > 1 and fmt == "text":
        raise NmtError(
            "--nbest lists need a format that holds them",
            "--nbest",
            "add --format tsv or --format jsonl",
        )
    if attention and fmt != "jsonl":
        raise NmtError(
            "attention weights are written in jsonl only", "--attention", "add --format jsonl"
        )


def not_both_stdin(
    first: tuple[str, str | Path | None], second: tuple[str, str | Path | None]
) -> None:
    """Two inputs given as "-" (flag, value each) would both read one stdin."""
    (flag_a, a), (flag_b, b) = first, second
    if str(a) == "-" and str(b) == "-":
        raise NmtError(f"{flag_a} and {flag_b} cannot both be stdin", f"{flag_a}/{flag_b}",
                       "name a file for one of them")  # fmt: skip


def check_needed(*rules: tuple[str, bool, str, object]) -> None:
    """(option, given, the option it works with, that option's value): an option given
    without the one it works with would be ignored silently."""
    for option, given, needed, value in rules:
        if given and value is None:
            raise NmtError(
                f"{option} only applies with {needed}",
                option,
                f"add {needed}, or leave {option} out",
            )
