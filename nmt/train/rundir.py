"""A training run's directory: which files are the run's, and its metrics log.

A run directory holds `config.yaml`, `metrics.jsonl`, `last.pt`, `best.pt`, `step-N.pt` and
`dev.hyp.txt`. Only these names are ever replaced or deleted (`--overwrite`, checkpoint
rotation): a user's own `my-model.pt` or `step-avg.pt` beside them is never touched. The
directory is locked while a run writes to it (`fileio.locked_dir`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nmt.errors import NmtError
from nmt.fileio import atomic_write_bytes, is_internal, json_line, read_json_lines

RUN_MARKERS = ("config.yaml", "metrics.jsonl", "last.pt", "dev.hyp.txt")
METRICS = "metrics.jsonl"
_STEP = re.compile(r"step-(\d+)\.pt")


def is_run_file(name: str) -> bool:
    """Whether `nmt train` writes a file of this name (and so may replace or delete it)."""
    return name in RUN_MARKERS or name == "best.pt" or _STEP.fullmatch(name) is not None


def step_checkpoints(run_dir: Path) -> list[Path]:
    """The run's `step-N.pt` files, oldest step first."""
    numbered = [(_STEP.fullmatch(p.name), p) for p in Path(run_dir).iterdir()]
    return [p for _, p in sorted((int(m[1]), p) for m, p in numbered if m)]


def rotate_step_checkpoints(run_dir: Path, keep: int) -> None:
    """Delete all but the newest `keep` step checkpoints (only files named step-N.pt)."""
    steps = step_checkpoints(run_dir)
    for old in steps[: max(0, len(steps) - keep)]:
        old.unlink(missing_ok=True)


def prepare(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to mix two runs in one directory; with `overwrite`, delete the old run's files
    and nothing else. `run_dir` exists and is locked."""
    names = [p.name for p in run_dir.iterdir() if not is_internal(p.name)]
    holds_run = any(name in RUN_MARKERS for name in names)
    if resume:
        if not (run_dir / "last.pt").is_file():
            raise NmtError(
                "--resume, but there is no last.pt to resume from",
                str(run_dir),
                "start the run over with --overwrite (instead of --resume)"
                if holds_run
                else "start the run without --resume",
            )
        return
    if holds_run and not overwrite:
        raise NmtError(
            "the run directory holds another run",
            str(run_dir),
            "pass --resume to continue it, --overwrite to start over, or choose another --out",
        )
    if names and not holds_run:
        raise NmtError(
            "the run directory is not empty and holds no run; nothing was changed",
            str(run_dir),
            "choose another --out",
        )
    for name in names:
        if is_run_file(name):
            (run_dir / name).unlink(missing_ok=True)


def append_record(run_dir: Path, record: dict[str, Any]) -> None:
    """Append one record to metrics.jsonl (one line whatever it holds; NaN as null)."""
    with (Path(run_dir) / METRICS).open("a", encoding="utf-8") as fh:
        fh.write(json_line(record) + "\n")


def truncate_metrics(run_dir: Path, step: int, warn: Callable[[str], None]) -> None:
    """Drop records logged after the checkpoint we resume from (they will be logged again),
    and any record a crash tore (with a warning)."""
    path = Path(run_dir) / METRICS
    if path.exists():
        kept = [
            r
            for r in read_json_lines(path, warn)
            if isinstance(r, dict) and isinstance(r.get("step"), int) and r["step"] <= step
        ]
        atomic_write_bytes(path, "".join(json_line(r) + "\n" for r in kept).encode("utf-8"))
