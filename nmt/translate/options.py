"""The rules of `nmt translate`'s and `nmt score`'s options, in one place: which values are valid
and which options need which others, checked before any line is read."""

from __future__ import annotations

from pathlib import Path

from nmt.errors import NmtError


def check_output_options(fmt: str, nbest: int, attention: bool, errors: str) -> None:
    if fmt not in ("text", "tsv", "jsonl"):
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
