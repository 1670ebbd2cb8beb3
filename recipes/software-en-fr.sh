#!/usr/bin/env bash
# Software strings, English→French: does protecting placeholders keep them, and at what cost?
#
#   recipes/software-en-fr.sh [CORPUS_DIR] [OUT_DIR]   (defaults: ../shared/data/software-en-fr, runs/software)
#   STEPS=800 SEEDS="1 2" recipes/software-en-fr.sh     (the training budget in updates; the seeds)
#
# 1. Holds out two packages of the gettext training split as the test set (dpkg: a command-line
#    tool; pidgin-data: a GUI), so no test string's package was seen in training.
# 2. Preprocesses twice, identically but for `--protect all` (placeholders, tags, URLs masked).
# 3. Trains the Bible recipe's model (configs/bible-es-en.yaml's sizes) for a fixed number of
#    updates per seed, with and without protection; runs of one seed can share the 2 cores.
# 4. Translates the test set (beam 5; the protected models' search is constrained), and a
#    synthetic XML set (LibreOffice help paragraphs from the dev split with inline tags put in)
#    with --markup xml; scores BLEU/chrF and placeholder fidelity (recipes/software_table.py),
#    and writes the table to OUT_DIR/table.md.
set -euo pipefail
cd "$(dirname "$0")/.."
CORPUS=${1:-../shared/data/software-en-fr}
OUT=${2:-runs/software}
STEPS=${STEPS:-800}
SEEDS=${SEEDS:-1 2}
NMT=${NMT:-.venv/bin/nmt}
PY=${PY:-.venv/bin/python}
[ -x "$NMT" ] || make install
HELD_OUT='^(dpkg|pidgin-data)/'

mkdir -p "$OUT/split"
if [ ! -f "$OUT/split/test.tsv" ]; then
    head -1 "$CORPUS/train.gettext.tsv" > "$OUT/split/train.tmp"
    head -1 "$CORPUS/train.gettext.tsv" > "$OUT/split/test.tmp"
    tail -n +2 "$CORPUS/train.gettext.tsv" | grep -Ev "$HELD_OUT" >> "$OUT/split/train.tmp"
    tail -n +2 "$CORPUS/train.gettext.tsv" | grep -E "$HELD_OUT" >> "$OUT/split/test.tmp"
    mv "$OUT/split/train.tmp" "$OUT/split/train.tsv"
    mv "$OUT/split/test.tmp" "$OUT/split/test.tsv"
fi
[ -f "$OUT/split/xml.en.txt" ] || $PY recipes/software_table.py xml-set "$CORPUS/dev.lohelp.tsv" "$OUT/split/xml"

for kind in plain protect; do
    protect=$([ $kind = protect ] && echo all || echo "")
    if [ ! -f "$OUT/data-$kind/manifest.json" ]; then
        $NMT preprocess --config configs/bible-es-en.yaml --src en --tgt fr --format tsv \
            --train "$OUT/split/train.tsv" --dev "$CORPUS/dev.gettext.tsv" \
            --test "$OUT/split/test.tsv" --protect "$protect" --out "$OUT/data-$kind"
    fi
done

train() {  # KIND SEED CPU: one run on one core with one thread, then its translations
    local run=$OUT/$1-seed$2 xml=()
    if [ ! -f "$run/trained" ]; then
        OMP_NUM_THREADS=1 taskset -c "$3" $NMT train configs/bible-es-en.yaml \
            --data "$OUT/data-$1" --out "$run" --overwrite \
            --set train.seed="$2" --set train.max_steps="$STEPS" --set train.max_minutes=0 \
            --set train.valid_every=$((STEPS / 4)) --set train.threads=1 > "$run.log" 2>&1
        touch "$run/trained"
    fi
    [ "$1" = protect ] && xml=(--markup xml)
    OMP_NUM_THREADS=1 taskset -c "$3" $NMT translate "$run/best.pt" -i "$OUT/data-$1/test.en.txt" \
        -o "$run/test.hyp.txt" 2>> "$run.log"
    OMP_NUM_THREADS=1 taskset -c "$3" $NMT translate "$run/best.pt" -i "$OUT/split/xml.en.txt" \
        -o "$run/xml.hyp.txt" "${xml[@]}" 2>> "$run.log"
}
for seed in $SEEDS; do
    train plain "$seed" 0 & train protect "$seed" 1 & wait
done
$PY recipes/software_table.py table "$OUT" $SEEDS > "$OUT/table.md"
cat "$OUT/table.md"
