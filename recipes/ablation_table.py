"""The table of recipes/bible-ablation.sh and back-translation.sh: dev BLEU at each validation
and test BLEU/chrF of best.pt (beam 5), one row per variant, in the order given. (Not speed:
the variants share the cores; `nmt bench train --variant` measures that.)

ablation_table.py OUT NAME[=KEY=VALUE,...|=DESCRIPTION] ...
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from nmt.evaluate import corpus_metrics


def row(out: Path, spec: str) -> str:
    """One variant's row, from its metrics.jsonl and its test translation."""
    name, _, sets = spec.partition("=")
    run = out / name
    metrics = run / "metrics.jsonl"
    events = (
        [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.exists() else []
    )
    valid = [e for e in events if e["event"] == "valid"]
    curve = " / ".join(f"{e['bleu']:.2f}" for e in valid)
    steps = "/".join(str(e["step"]) for e in valid)
    change = sets.replace(",", ", ") or "(the recipe)"
    return f"| {name} | {change} | {curve} ({steps}) | {test(out, run)} |"


def test(out: Path, run: Path) -> str:
    """Test BLEU / chrF of the run's test translation, or why there is none (a run cut short)."""
    if not (run / "trained").exists() or not (run / "test.hyp.txt").exists():
        return "not finished"
    hyp = (run / "test.hyp.txt").read_text(encoding="utf-8").splitlines()
    ref = (out / "data" / "test.en.txt").read_text(encoding="utf-8").splitlines()
    bleu, chrf = (s.score for s in corpus_metrics(hyp, [ref], ("bleu", "chrf")))
    return f"{bleu:.2f} / {chrf:.2f}"


def main(out: Path, specs: list[str]) -> None:
    print("| variant | change | dev BLEU, greedy (updates) | test BLEU / chrF, beam 5 |")
    print("|---|---|---|---|")
    for spec in specs:
        print(row(out, spec))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
