"""Learning curves for docs/results.md: dev BLEU (greedy) against training wall-clock time.

    python recipes/plot_curves.py runs/bible/rnnsearch runs/bible/luong ... -o docs/curves.png

Reads each run directory's metrics.jsonl (the `valid` records) and labels it by its name.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402


def curve(run: Path) -> tuple[list[float], list[float]]:
    """(minutes, dev BLEU) of every validation of a run."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").open(encoding="utf-8")]
    valid = [r for r in records if r["event"] == "valid"]
    return [r["seconds"] / 60 for r in valid], [r["bleu"] for r in valid]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories (nmt train --out)")
    parser.add_argument("-o", "--out", type=Path, default=Path("docs/curves.png"))
    args = parser.parse_args()
    fig = Figure(figsize=(7, 4.5), dpi=100)
    ax = fig.add_subplot()
    for run in args.runs:
        minutes, bleu = curve(run)
        ax.plot(minutes, bleu, marker="o", markersize=3, label=run.name)
    ax.set_xlabel("training time (minutes, 2-core CPU)")
    ax.set_ylabel("dev BLEU (greedy)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
