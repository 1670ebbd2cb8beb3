"""Scoring given translations (forced decoding): the Python API behind `nmt score`.

    translator = Translator.from_checkpoint("runs/x/best.pt")
    score_pairs(translator, ["Hola."], ["Hello."])[0].score  # its normalised log-probability

The score of a target given its source is what the search would give that output: the sum of
the log-probabilities of its subwords and eos (an ensemble's are the mean of its models', as in
`nmt.decode.ensemble.Ensemble`), divided by the same length penalty (`penalty`, `alpha`). So the
beam's best hypothesis, scored, gets the search's score (tested). Both sides are prepared as for
translation (normalised, protected spans masked, the source truncated to the model's limit),
and pairs are batched by length. Used to filter noisy corpora and to rerank n-best lists.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import zip_longest
from pathlib import Path

import torch

from nmt.data.batching import length_batches
from nmt.data.corpus import count_lines, decode_lines, normalize, open_input
from nmt.data.store import pad_rows
from nmt.decode.hypothesis import length_penalty
from nmt.errors import NmtError
from nmt.fileio import json_line
from nmt.translate.files import UTF8_FIX, chunks, line_output, tsv_field
from nmt.translate.inputs import Prepared, as_texts
from nmt.translate.options import FORMATS
from nmt.translate.translator import Translator


@dataclass
class Scored:
    """One pair's score: normalised as the search does, and per target subword (eos last)."""

    score: float  # the sum of token_scores divided by the length penalty
    pieces: list[str]  # the target's subwords, then "</s>"
    token_scores: list[float]  # the log-probability of each piece


def score_pairs(
    translator: Translator,
    sources: Sequence[str],
    targets: Sequence[str],
    penalty: str | None = None,
    alpha: float | None = None,
    batch_tokens: int | None = None,
    first_line: int = 1,
    pieces: bool = False,
) -> list[Scored]:
    """Score each target given its source; None means the checkpoint's `decode` setting
    (batch_tokens: target subwords per batch, by default decode.batch_tokens / beam). With
    `pieces`, each target is subword pieces separated by spaces (a hypothesis's `pieces` from
    `translate --format jsonl`), scored as they are instead of segmented anew."""
    options = translator.decode_options(alpha=alpha, penalty=penalty)  # validated
    budget = batch_tokens or options.batch_tokens // options.beam
    src, tgt = _prepare(translator, sources, targets, first_line, pieces)
    lengths = [max(len(s.ids), len(t), 1) for s, t in zip(src, tgt)]
    out: list[Scored | None] = [None] * len(src)
    with torch.no_grad(), translator.runtime.autocast():
        for batch in length_batches(lengths, budget):
            token_scores = _forced([src[i].ids for i in batch], [tgt[i] for i in batch], translator)
            for i, scores in zip(batch, token_scores):
                total = sum(scores)
                pieces = [*translator.tgt_tokenizer.pieces(tgt[i]), "</s>"]
                lp = length_penalty(len(scores), options.penalty, options.alpha)
                out[i] = Scored(total / lp, pieces, scores)
    return out  # type: ignore[return-value]


def _prepare(
    translator: Translator,
    sources: Sequence[str],
    targets: Sequence[str],
    first_line: int,
    pieces: bool = False,
) -> tuple[list[Prepared], list[list[int]]]:
    """Sources as for translation; targets normalised and masked like their source (the k-th
    occurrence of a span on one side is the k-th on the other), then split into subwords."""
    src = translator.prepare(sources, first_line, long_lines="truncate")  # one source each
    targets = as_texts(targets, "targets", first_line, (len(src), "source"))
    if pieces:
        return src, [_piece_ids(translator, t, line) for line, t in enumerate(targets, first_line)]
    masked = []
    for line, (target, item) in enumerate(zip(targets, src), first_line):
        for message in item.warnings:
            translator.warn(f"warning: {message}")
        target = normalize(target)
        like_source = translator.protector.mask_like(item.masked, target)
        if like_source is None:
            translator.warn(
                f"warning: line {line}: the target's protected spans differ from the source's; "
                "it is scored as plain text"
            )
        masked.append(target if like_source is None else like_source)
    return src, translator.tgt_tokenizer.encode(masked)


def _piece_ids(translator: Translator, target: str, line: int) -> list[int]:
    """The ids of a target given as space-separated pieces; a piece the vocabulary lacks is an
    error naming it (SentencePiece would read it as <unk>)."""
    given = target.split()
    ids = translator.tgt_tokenizer.symbol_ids(given) if given else []
    if ids is None:
        unknown = next(p for p in given if translator.tgt_tokenizer.symbol_ids([p]) is None)
        raise NmtError(
            f"line {line}: {unknown!r} is not a piece of the model's target vocabulary",
            "--pieces",
            "give the pieces `nmt translate --format jsonl` lists, or leave --pieces out",
        )
    return ids


def _forced(
    sources: list[list[int]], targets: list[list[int]], translator: Translator
) -> list[list[float]]:
    """Teacher-forced log-probabilities of each target's subwords and eos (one batch)."""
    device = translator.runtime.device
    src = torch.from_numpy(pad_rows(sources, eos=True)).to(device)  # [B, S]
    src_lengths = torch.tensor([len(s) + 1 for s in sources], device=device)
    tgt = torch.from_numpy(pad_rows(targets, bos=True, eos=True)).to(device)  # [B, T + 1]
    tgt_in, tgt_out = tgt[:, :-1], tgt[:, 1:]  # as training's batches (ParallelDataset.batch)
    log_probs = torch.stack(  # [models, B, T, V] → [B, T, V]: the search's ensemble mean
        [m.log_probs(m.features(src, src_lengths, tgt_in)) for m in translator.models]
    ).mean(0)
    picked = log_probs.gather(2, tgt_out.unsqueeze(2)).squeeze(2)  # [B, T]
    return [row[: len(t) + 1] for row, t in zip(picked.tolist(), targets)]


def format_scored(scored: Scored, fmt: str, line: int, source: str, target: str) -> str:
    """One output line (no newline): text is the score; tsv `source<TAB>target<TAB>score`;
    jsonl an object with the score and each subword's log-probability."""
    if fmt == "text":
        return f"{scored.score:.6f}"
    if fmt == "tsv":
        return f"{tsv_field(source)}\t{tsv_field(target)}\t{scored.score:.6f}"
    return json_line(
        {
            "line": line,
            "source": source,
            "target": target,
            "score": round(scored.score, 6),
            "pieces": scored.pieces,
            "token_scores": [round(x, 6) for x in scored.token_scores],
        }
    )


def _pairs(sources: Iterable[str], targets: Iterable[str], names: tuple[str, str]) -> Iterator:
    """Source and target lines side by side; a file shorter than the other is an error."""
    done = object()
    for line, (source, target) in enumerate(zip_longest(sources, targets, fillvalue=done), 1):
        if source is done or target is done:
            short, long = names if source is done else names[::-1]
            raise NmtError(
                f"{short} ends at line {line - 1}, but {long} goes on",
                short,
                "give the source and the target one line per pair, the same number of lines",
            )
        yield source, target


def run_files(
    translator: Translator,
    source: str,
    target: str,
    output: str,
    fmt: str = "text",
    errors: str = "strict",
    chunk_lines: int = 2000,
    **options,
) -> int:
    """`nmt score`: the pairs of two files (or stdin for one of them) to a file, written
    atomically with a progress bar, or stdout; one output line per pair, in order."""
    if fmt not in FORMATS:
        raise NmtError(f"unknown format {fmt!r}", "--format", f"use one of {', '.join(FORMATS)}")
    with open_input(source) as (src_stream, src_name, regular), open_input(target) as tgt:
        tgt_stream, tgt_name, _ = tgt
        pairs = _pairs(
            decode_lines(src_stream, src_name, errors, UTF8_FIX),
            decode_lines(tgt_stream, tgt_name, errors, UTF8_FIX),
            (src_name, tgt_name),
        )
        total = count_lines(Path(source)) if regular else None
        done = 0
        with line_output(output, total, "score") as (write, advance, warn):
            if output != "-":
                translator.warn = warn
            for chunk in chunks(pairs, chunk_lines):
                sources, targets = [s for s, _ in chunk], [t for _, t in chunk]
                scored = score_pairs(translator, sources, targets, first_line=done + 1, **options)
                write(
                    "".join(
                        format_scored(r, fmt, done + i + 1, s, t) + "\n"
                        for i, (r, s, t) in enumerate(zip(scored, sources, targets))
                    )
                )
                done += len(chunk)
                advance(len(chunk))
        return done
