"""What a lexical shortlist keeps: for a checkpoint that holds one and a test TSV, per setting
(K pieces per source piece, N frequent pieces), the mean list size, the share of the full
search's output pieces inside each line's list, and how many beam outputs change (with the BLEU
of both). docs/notes/2026-12-04-shortlist.md has the figures.

    .venv/bin/python scripts/shortlist_coverage.py CHECKPOINT data/test.tsv \
        --settings 25:100,50:200,100:500 --beam 5
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time

import torch

from nmt.data.store import pad_rows
from nmt.data.tokenizer import PAD_ID
from nmt.decode.shortlist import complete
from nmt.evaluate import corpus_metrics
from nmt.translate import Translator
from nmt.translate.inputs import source_tensors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("test", help="TSV with a header naming the source and target columns")
    parser.add_argument("--settings", default="25:100,50:200,100:500")
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    translator = Translator.from_checkpoint(args.checkpoint)
    if translator.shortlist is None:
        sys.exit(f"{args.checkpoint} holds no shortlist: add one with `nmt shortlist`")
    src_lang, tgt_lang = translator.languages
    with open(args.test, encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))
    sources, refs = [r[src_lang] for r in rows], [r[tgt_lang] for r in rows]
    start = time.perf_counter()
    full = translator.translate_nbest(sources, beam=args.beam, shortlist=False)
    print(f"full search: {time.perf_counter() - start:.0f} s", file=sys.stderr)
    sp = translator.tgt_tokenizer.sp
    outputs = [[sp.piece_to_id(p) for p in r.hypotheses[0].pieces] for r in full]
    full_text = [r.hypotheses[0].text for r in full]
    bleu_full = corpus_metrics(full_text, [refs])[0].score
    src, lengths = source_tensors(translator.prepare(sources), torch.device("cpu"))
    for setting in args.settings.split(","):
        k, n = map(int, setting.split(":"))
        translator.cfg.decode.shortlist_k, translator.cfg.decode.shortlist_frequent = k, n
        masks = complete(translator.shortlist.masks(src, k, n), None, None)  # [B, V]
        inside = [[bool(masks[i, t]) for t in out] for i, out in enumerate(outputs)]
        short = translator.translate(sources, beam=args.beam, shortlist=True)
        differ = [a != b for a, b in zip(short, full_text)]
        whole = [all(x) for x in inside]
        print(json.dumps({
            "k": k, "n": n, "beam": args.beam, "lines": len(sources),
            "mean_list": round(float(masks.sum(1).float().mean()), 1),
            "vocab": masks.shape[1],
            "pieces_inside": round(sum(map(sum, inside)) / sum(map(len, inside)), 4),
            "mass_inside": round(mass_inside(translator, src, lengths, outputs, masks), 4),
            "lines_inside": sum(whole),
            "lines_differ": sum(differ),
            "lines_differ_inside": sum(d and w for d, w in zip(differ, whole)),
            "bleu_full": round(bleu_full, 2),
            "bleu_shortlist": round(corpus_metrics(short, [refs])[0].score, 2),
        }), flush=True)  # fmt: skip


@torch.no_grad()
def mass_inside(
    translator: Translator,
    src: torch.Tensor,
    lengths: torch.Tensor,
    outputs: list[list[int]],
    masks: torch.Tensor,
    chunk: int = 16,
) -> float:
    """The mean probability (full softmax) that each line's list holds at each step of its
    full search's output, eos included: the share a list's softmax renormalises away."""
    model, total, steps = translator.models[0], 0.0, 0
    for start in range(0, len(outputs), chunk):
        rows = slice(start, start + chunk)
        tgt_in = torch.from_numpy(pad_rows(outputs[rows], bos=True))  # [b, T]
        real = torch.from_numpy(pad_rows(outputs[rows], eos=True)) != PAD_ID  # [b, T]
        width = int(lengths[rows].max())
        probs = model(src[rows, :width], lengths[rows], tgt_in).softmax(-1)  # [b, T, V]
        inside = (probs * masks[rows].unsqueeze(1)).sum(-1)  # [b, T]
        total, steps = total + float(inside[real].sum()), steps + int(real.sum())
    return total / steps


if __name__ == "__main__":
    main()
