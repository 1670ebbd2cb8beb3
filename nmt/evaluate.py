"""Corpus-level BLEU, chrF and TER through sacrebleu, with signatures, and the BLEU gate.

Scores are always computed on detokenised text with sacrebleu's defaults (13a tokenisation for
BLEU, case-sensitive), so they compare with published numbers; the signature printed beside each
score says exactly how it was computed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sacrebleu.metrics import BLEU, CHRF, TER

from nmt.data.corpus import decode_lines, open_input
from nmt.errors import NmtError

METRICS = {"bleu": BLEU, "chrf": CHRF, "ter": TER}


@dataclass(frozen=True)
class Score:
    """One corpus score as sacrebleu reports it."""

    name: str
    score: float
    signature: str
    text: str

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "score": round(self.score, 4),
            "signature": self.signature,
            "verbose": self.text,
        }


def corpus_metrics(
    hyps: Sequence[str], refs: Sequence[Sequence[str]], metrics: Sequence[str] = ("bleu", "chrf")
) -> list[Score]:
    """Score `hyps` against one or more reference streams, each exactly as long as `hyps`
    (sacrebleu would score the common part of streams of unequal length)."""
    unknown = [m for m in metrics if m not in METRICS]
    if unknown or not metrics:
        raise NmtError(
            f"unknown metric {', '.join(unknown)}" if unknown else "no metric given",
            "--metrics",
            f"choose from: {', '.join(METRICS)}",
        )
    for i, ref in enumerate(refs, 1):
        if len(ref) != len(hyps):
            raise NmtError(
                f"{len(hyps)} hypotheses but {len(ref)} references (reference stream {i})",
                "scoring",
                "hypotheses and references must be line-aligned, one sentence per line",
            )
    scores = []
    for name in metrics:
        metric = METRICS[name]()
        result = metric.corpus_score(list(hyps), [list(r) for r in refs])
        scores.append(Score(name, result.score, str(metric.get_signature()), str(result)))
    return scores


def _read(path: Path) -> list[str]:
    """The lines of a file, a pipe or stdin ("-"), decoded like every input (BOM, CRLF,
    invalid UTF-8 an error)."""
    with open_input(str(path)) as (stream, name, _):
        return list(decode_lines(stream, name))


def file_metrics(hyp: Path, refs: Sequence[Path], metrics: Sequence[str]) -> list[Score]:
    """Score a hypothesis file against reference files; line counts must match."""
    hyps = _read(hyp)
    ref_lines = [_read(r) for r in refs]
    for path, lines in zip(refs, ref_lines):
        if len(lines) != len(hyps):
            raise NmtError(
                f"{hyp} has {len(hyps)} lines but {path} has {len(lines)}",
                str(path),
                "hypotheses and references must be line-aligned, one sentence per line",
            )
    if not hyps:
        raise NmtError(
            "nothing to score: the files have no lines",
            str(hyp),
            "check that the translation step wrote its output",
        )
    return corpus_metrics(hyps, ref_lines, metrics)


def bleu_gate(scores: Sequence[Score], min_bleu: float) -> str | None:
    """A message if BLEU is below `min_bleu`, else None (the gate passes). A gate of NaN
    would pass everything, so it is an error."""
    if not math.isfinite(min_bleu):
        raise NmtError(f"must be a finite number, got {min_bleu}", "--min-bleu", "give e.g. 25")
    bleu = next((s for s in scores if s.name == "bleu"), None)
    if bleu is None:
        raise NmtError(
            "--min-bleu needs BLEU among the metrics", "--metrics", "add bleu to --metrics"
        )
    if bleu.score < min_bleu:
        return f"BLEU {bleu.score:.2f} is below the required minimum {min_bleu:.2f}"
    return None
