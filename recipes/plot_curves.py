"""Learning curves for docs/results.md: dev BLEU (greedy) against training time or updates.

    python recipes/plot_curves.py runs/bible/rnnsearch runs/bible/luong ... -o docs/curves.png
    python recipes/plot_curves.py A B --x updates --labels "before,after" -o docs/curves-31.png

Reads each run directory's metrics.jsonl (the `valid` records) and labels it by its name, or by
--labels. Against updates, runs on different machines compare; against minutes, only runs on one.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402

AXES = {"minutes": "training time (minutes, 2-core CPU)", "updates": "updates"}


def curve(run: Path, x: str) -> tuple[list[float], list[float]]:
    """(minutes or updates, dev BLEU) of every validation of a run."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").open(encoding="utf-8")]
    valid = [r for r in records if r["event"] == "valid"]
    xs = [r["seconds"] / 60 if x == "minutes" else r["step"] for r in valid]
    return xs, [r["bleu"] for r in valid]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories (nmt train --out)")
    parser.add_argument("-o", "--out", type=Path, default=Path("docs/curves.png"))
    parser.add_argument("--x", choices=sorted(AXES), default="minutes", help="the x axis")
    parser.add_argument("--labels", help="comma-separated, one per run (default: the names)")
    args = parser.parse_args()
    labels = args.labels.split(",") if args.labels else [run.name for run in args.runs]
    if len(labels) != len(args.runs):
        parser.error(f"--labels has {len(labels)} names for {len(args.runs)} runs")
    fig = Figure(figsize=(7, 4.5), dpi=100)
    ax = fig.add_subplot()
    for run, label in zip(args.runs, labels, strict=True):
        xs, bleu = curve(run, args.x)
        ax.plot(xs, bleu, marker="o", markersize=3, label=label)
    ax.set_xlabel(AXES[args.x])
    ax.set_ylabel("dev BLEU (greedy)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
