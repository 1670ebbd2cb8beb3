"""The software-strings recipe's helpers (recipes/software-en-fr.sh).

software_table.py xml-set DEV_LOHELP_TSV PREFIX   # synthetic XML: PREFIX.en.txt, PREFIX.fr.txt
software_table.py table OUT SEED [SEED ...]       # the markdown table, from OUT's runs
"""

from __future__ import annotations

import random
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from nmt.data.protect import Protector, span_fidelity, spans_of
from nmt.evaluate import corpus_metrics

TAGS = [
    ("<emph>", "</emph>"),
    ('<item type="menuitem">', "</item>"),
    ('<link href="text/shared/00/00000001.xhp">', "</link>"),
]


def xml_set(tsv: Path, prefix: Path, lines: int = 300, seed: int = 1) -> None:
    """Help paragraphs (6+ words) with one to three inline elements around word runs (one
    nested in another a third of the time) and sometimes an entity or an empty element."""
    rng = random.Random(seed)
    rows = [r.split("\t") for r in tsv.read_text(encoding="utf-8").splitlines()[1:]]
    src_out, ref_out = [], []
    for _, en, fr in rows:
        words = en.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").split(" ")
        if len(words) < 6:
            continue
        for _ in range(rng.randint(1, 3)):
            start = rng.randrange(len(words) - 1)
            end = rng.randrange(start + 1, min(len(words), start + 5) + 1)
            if any("<" in w or ">" in w for w in words[start:end]):
                continue  # keep elements apart: nesting comes from the case below
            open_, close = rng.choice(TAGS)
            words[start] = open_ + words[start]
            words[end - 1] += close
            if rng.random() < 1 / 3 and end - start >= 3:  # an element inside it
                inner = rng.randrange(start + 1, end - 1)
                words[inner] = f"<emph>{words[inner]}</emph>"
        if rng.random() < 0.3:
            words.insert(rng.randrange(len(words) + 1), rng.choice(["<br/>", "&amp;"]))
        src_out.append(" ".join(words))
        ref_out.append(fr)
        if len(src_out) == lines:
            break
    prefix.with_suffix(".en.txt").write_text("".join(s + "\n" for s in src_out), encoding="utf-8")
    prefix.with_suffix(".fr.txt").write_text("".join(r + "\n" for r in ref_out), encoding="utf-8")


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def _well_formed(line: str) -> bool:
    try:
        ET.fromstring(f"<p>{line}</p>")
        return True
    except ET.ParseError:
        return False


def table(out: Path, seeds: list[str]) -> str:
    everything, tags = Protector("all"), Protector("xml")
    src = _lines(out / "data-plain" / "test.en.txt")
    ref = _lines(out / "data-plain" / "test.fr.txt")
    spanned = [i for i, s in enumerate(src) if everything.find(s)]
    xml_src = _lines(out / "split" / "xml.en.txt")

    def fidelity(outputs: list[str]) -> str:
        """Lines with spans whose every span is in the output; lines (all) whose output holds
        exactly the source's spans, none lost or added; lines with spans that do."""
        kept = sum(not spans_of(src[i], everything) - spans_of(outputs[i], everything)
                   for i in spanned) / len(spanned)  # fmt: skip
        some = span_fidelity([src[i] for i in spanned], [outputs[i] for i in spanned], everything)
        return f"{kept:.1%} | {span_fidelity(src, outputs, everything):.1%} | {some:.1%}"

    def well_formed(lines: list[str]) -> str:
        return f"{sum(map(_well_formed, lines)) / len(lines):.1%}"

    rows = [
        "| model | seed | BLEU | chrF | spans kept | exact, all lines | exact, lines with spans "
        "| XML well-formed | XML tags kept |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| human reference | | | | {fidelity(ref)} | {well_formed(xml_src)} (source) | |",
    ]
    for kind in ("plain", "protect"):
        for seed in seeds:
            run = out / f"{kind}-seed{seed}"
            hyp, xml_hyp = _lines(run / "test.hyp.txt"), _lines(run / "xml.hyp.txt")
            bleu, chrf = (s.score for s in corpus_metrics(hyp, [ref], ("bleu", "chrf")))
            name = "protected" if kind == "protect" else "unprotected"
            rows.append(
                f"| {name} | {seed} | {bleu:.2f} | {chrf:.2f} | {fidelity(hyp)} "
                f"| {well_formed(xml_hyp)} | {span_fidelity(xml_src, xml_hyp, tags):.1%} |"
            )
    notes = (
        f"\n{len(src)} test strings (packages dpkg and pidgin-data, held out of training), "
        f"{len(spanned)} of them with protected spans; XML: {len(xml_src)} synthetic help "
        "paragraphs (recipes/software_table.py xml-set), the protected models with --markup xml.\n"
    )
    return "\n".join(rows) + "\n" + notes


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "xml-set":
        xml_set(Path(args[0]), Path(args[1]))
    else:
        print(table(Path(args[0]), args[1:]))
