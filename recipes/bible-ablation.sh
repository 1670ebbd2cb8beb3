#!/usr/bin/env bash
# One change at a time against the Bible recipe, at a fixed number of updates: the docs/results.md
# table of what EMA, subword regularisation, layer norm and deep transition are worth.
#
#   recipes/bible-ablation.sh NAME[=KEY=VALUE[,KEY=VALUE...]] ...
#   STEPS=1000 recipes/bible-ablation.sh base seed2=train.seed=2 ema=train.ema_decay=0.9999
#
# Each variant is configs/bible-es-en.yaml plus its --set overrides, trained for STEPS updates
# (validated four times) into OUT/NAME, then its best.pt translates the test split with beam 5.
# A fixed number of updates, not minutes, so that the figures do not depend on what else ran on
# the machine; the variants run two at a time, one per core with one thread each, and a variant
# already trained is kept (rerun with more names to extend the table). Writes OUT/table.md.
set -euo pipefail
cd "$(dirname "$0")/.."
CORPUS=${CORPUS:-../shared/data/bible-es-en}
OUT=${OUT:-runs/ablation}
STEPS=${STEPS:-1000}
NMT=${NMT:-.venv/bin/nmt}
PY=${PY:-.venv/bin/python}
[ -x "$NMT" ] || make install
source recipes/steps.sh
[ $# -gt 0 ] || { echo "usage: $0 NAME[=KEY=VALUE[,KEY=VALUE...]] ..." >&2; exit 2; }

if [ ! -f "$OUT/data/manifest.json" ]; then
    $NMT preprocess --config configs/bible-es-en.yaml --train "$CORPUS/train.tsv" \
        --dev "$CORPUS/dev.tsv" --test "$CORPUS/test.tsv" --out "$OUT/data"
fi

variant() {  # SPEC CPU: train one variant on one core, then translate the test split
    local name=${1%%=*} sets=() run
    run=$OUT/${name}
    if [[ $1 == *=* ]]; then
        IFS=, read -ra kv <<< "${1#*=}"
        for pair in "${kv[@]}"; do sets+=(--set "$pair"); done
    fi
    train_steps configs/bible-es-en.yaml "$OUT/data" "$run" "$2" "${sets[@]}"
    if [ ! -f "$run/test.hyp.txt" ]; then
        OMP_NUM_THREADS=1 taskset -c "$2" $NMT translate "$run/best.pt" -i "$OUT/data/test.es.txt" \
            -o "$run/test.hyp.txt" --beam 5 2>> "$run.log"
    fi
}

lane() {  # CPU SPEC...: the variants of one core, one after another
    local cpu=$1; shift
    for spec in "$@"; do variant "$spec" "$cpu"; done
}
specs=("$@")
lane0=() lane1=()
for i in "${!specs[@]}"; do
    if (( i % 2 == 0 )); then lane0+=("${specs[$i]}"); else lane1+=("${specs[$i]}"); fi
done
lane 0 "${lane0[@]}" & pid0=$!
if [ ${#lane1[@]} -gt 0 ]; then lane 1 "${lane1[@]}"; fi
wait $pid0
$PY recipes/ablation_table.py "$OUT" "${specs[@]}" > "$OUT/table.md"
cat "$OUT/table.md"
