#!/usr/bin/env bash
# One round of sampled back-translation (Edunov et al. 2018), measured on the Bible corpus.
#
#   recipes/back-translation.sh                        (defaults below; OUT/table.md at the end)
#   STEPS=1000 SAMPLING=topk:10 OUT=runs/bt recipes/back-translation.sh
#   MONO=news.en PARALLEL=my.tsv recipes/back-translation.sh      (your own data: see below)
#   CONFIG=configs/sample.yaml CORPUS=data STEPS=40 ...               (a smoke test, minutes)
#
# Target-side monolingual text: by default the training verses are split by chapter, every
# other chapter in order, into a half A that stays parallel and a half B of which only the
# English is kept. B is disjoint from the test set (whole chapters: the corpus splits by
# chapter) and from A. With MONO and PARALLEL, B's English is MONO and A is PARALLEL instead.
#
# Trains, for STEPS updates each (CONFIG: `configs/bible-es-en.yaml`; validated four times):
#   base     es→en on A
#   reverse  en→es on A                   (base and reverse side by side, one core each)
# then draws a Spanish source for each English line of B from `reverse` (`nmt translate
# --sampling`: Edunov et al. found sampled sources better than beam search's), and trains
#   bt       es→en on A + the drawn pairs  (both cores)
# and writes the test BLEU / chrF (beam 5) of base and bt to OUT/table.md. A step already
# done is kept (a rerun goes on where it stopped).
set -euo pipefail
cd "$(dirname "$0")/.."
CORPUS=${CORPUS:-../shared/data/bible-es-en}
OUT=${OUT:-runs/back-translation}
STEPS=${STEPS:-1000}
SAMPLING=${SAMPLING:-full}
CONFIG=${CONFIG:-configs/bible-es-en.yaml}
NMT=${NMT:-.venv/bin/nmt}
PY=${PY:-.venv/bin/python}
[ -x "$NMT" ] || make install
source recipes/steps.sh
mkdir -p "$OUT"

if [ ! -f "$OUT/b.en.txt" ]; then
    if [ -n "${MONO:-}" ]; then
        cp "${PARALLEL:?MONO needs PARALLEL, a TSV whose header names es and en}" "$OUT/a.tsv"
        cp "$MONO" "$OUT/b.en.txt.tmp"
    else  # every other chapter (Book.Chapter of `ref`) in corpus order goes to B
        "$PY" - "$CORPUS/train.tsv" "$OUT/a.tsv" "$OUT/b.en.txt.tmp" <<'EOF'
import sys
src, a_path, b_path = sys.argv[1:]
with open(src, encoding="utf-8") as f, open(a_path, "w", encoding="utf-8") as a, \
        open(b_path, "w", encoding="utf-8") as b:
    header = f.readline()
    a.write(header)
    en = header.rstrip("\n").split("\t").index("en")
    chapters: dict[str, int] = {}
    for line in f:
        fields = line.rstrip("\n").split("\t")
        chapter = fields[0].rsplit(".", 1)[0]
        if chapters.setdefault(chapter, len(chapters)) % 2:
            b.write(fields[en] + "\n")
        else:
            a.write(line)
EOF
    fi
    mv "$OUT/b.en.txt.tmp" "$OUT/b.en.txt"
fi

prep() {  # NAME TSV SRC TGT: a preprocessed store of TSV, translating SRC into TGT
    [ -f "$OUT/$1/manifest.json" ] || $NMT preprocess --config "$CONFIG" \
        --src "$3" --tgt "$4" --train "$2" --dev "$CORPUS/dev.tsv" --test "$CORPUS/test.tsv" \
        --out "$OUT/$1"
}

train() {  # DATA RUN CPUS: STEPS updates of the recipe's model
    train_steps "$CONFIG" "$OUT/$1" "$OUT/$2" "$3"
}

prep data-a "$OUT/a.tsv" es en
prep data-rev "$OUT/a.tsv" en es
train data-a base 0 &
base=$!
train data-rev reverse 1
wait $base

if [ ! -f "$OUT/b.es.txt" ]; then
    $NMT translate "$OUT/reverse/best.pt" -i "$OUT/b.en.txt" -o "$OUT/b.es.txt" \
        --sampling "$SAMPLING" --seed 1
fi
if [ ! -f "$OUT/bt.tsv" ]; then
    # A's rows, then a row per drawn pair (none for an empty draw) in A's columns
    "$PY" - "$OUT/a.tsv" "$OUT/b.es.txt" "$OUT/b.en.txt" "$OUT/bt.tsv.tmp" <<'EOF'
import sys
a_path, es_path, en_path, out_path = sys.argv[1:]
with open(a_path, encoding="utf-8") as a, open(out_path, "w", encoding="utf-8") as out:
    header = a.readline()
    out.write(header)
    out.writelines(a)
    columns = header.rstrip("\n").split("\t")
    with open(es_path, encoding="utf-8") as es, open(en_path, encoding="utf-8") as en:
        for source, target in zip(es, en):
            pair = {"es": source.rstrip("\n"), "en": target.rstrip("\n")}
            if pair["es"]:
                out.write("\t".join(pair.get(c, "bt") for c in columns) + "\n")
EOF
    mv "$OUT/bt.tsv.tmp" "$OUT/bt.tsv"
fi
prep data-bt "$OUT/bt.tsv" es en
train data-bt bt 0,1

for run in base bt; do  # test translations, beam 5
    data=data-a
    [ $run = bt ] && data=data-bt
    [ -f "$OUT/$run/test.hyp.txt" ] || $NMT translate "$OUT/$run/best.pt" \
        -i "$OUT/$data/test.es.txt" -o "$OUT/$run/test.hyp.txt" --beam 5
done
ln -sfn data-a "$OUT/data"  # the test references, for the table
$PY recipes/ablation_table.py "$OUT" "base=parallel half A ($(($(wc -l < "$OUT/a.tsv") - 1)) pairs)" \
    "bt=A + B's English with drawn sources ($(wc -l < "$OUT/b.en.txt") pairs more)" > "$OUT/table.md"
cat "$OUT/table.md"
