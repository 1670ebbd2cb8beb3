"""What the protected-span patterns catch in a TSV corpus, and what looks like a placeholder or
an escape but is caught by none: the measurement behind docs/notes/2026-12-04-span-coverage.md.

    python recipes/span_coverage.py ../shared/data/software-en-fr/train.gettext.tsv
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

from nmt.data.corpus import read_lines
from nmt.data.protect import Protector

PATTERNS = "printf,brace,shell"
# forms that look like placeholders or escapes, whether or not a pattern means them
SUSPECTS = {
    "${...}": r"\$\{[^}\s]*\}",
    "$NAME, $1": r"\$[A-Za-z0-9_]+",
    "%%": r"%%",
    "{{ or }}": r"\{\{|\}\}",
    "{...}": r"\{[^{}\s]{1,30}\}",
    "%x": r"%[^\s%]",
}


def coverage(texts: list[str]) -> list[tuple[str, int, int, list[tuple[str, int]]]]:
    """Per suspect form: how often it occurs, how often outside every span, the top misses."""
    protector = Protector(PATTERNS)
    spans = [[(s, e) for s, e, _ in protector.find(t)] for t in texts]
    rows = []
    for name, rx in SUSPECTS.items():
        total, missed = 0, Counter()
        for text, found in zip(texts, spans):
            for m in re.finditer(rx, text):
                total += 1
                if not any(s <= m.start() and m.end() <= e for s, e in found):
                    missed[m[0]] += 1
        rows.append((name, total, sum(missed.values()), missed.most_common(6)))
    return rows


def main() -> None:
    lines = read_lines(Path(sys.argv[1]))
    next(lines)  # the header
    texts = [text for line in lines for text in line.split("\t")[1:]]
    print(f"| form | found | outside every span ({PATTERNS}) | most common there |")
    print("|---|---|---|---|")
    for name, total, missed, top in coverage(texts):
        shown = ", ".join(f"`{form}` {n}".replace("|", "\\|") for form, n in top)
        print(f"| `{name}` | {total} | {missed} | {shown} |")


if __name__ == "__main__":
    main()
