"""Regenerate this directory's sample from the full corpus (run once by a maintainer).

    python data/make_sample.py ../shared/data/bible-es-en data

Train: 10,000 verses drawn uniformly (seed 0) from train.tsv, kept in Bible order, so the sample
covers every book. Dev and test: the first whole chapters of dev.tsv and test.tsv that add up to
about 500 verses, so no chapter is split across files (as in the full corpus).
"""

import random
import sys
from pathlib import Path


def whole_chapters(rows: list[str], target: int) -> list[str]:
    out: list[str] = []
    for row in rows:
        chapter = row.split("\t", 1)[0].rsplit(".", 1)[0]
        if len(out) >= target and chapter != out[-1].split("\t", 1)[0].rsplit(".", 1)[0]:
            break
        out.append(row)
    return out


def main(src: Path, dst: Path) -> None:
    for name in ("train", "dev", "test"):
        header, *rows = (src / f"{name}.tsv").read_text(encoding="utf-8").splitlines()
        if name == "train":
            keep = sorted(random.Random(0).sample(range(len(rows)), 10_000))
            rows = [rows[i] for i in keep]
        else:
            rows = whole_chapters(rows, 500)
        (dst / f"{name}.tsv").write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
        print(f"{name}: {len(rows)} pairs")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
