#!/usr/bin/env bash
# One change at a time against the Bible recipe, at a fixed number of updates: the docs/results.md
# table of what EMA, subword regularisation, layer norm and deep transition are worth.
#
#   recipes/bible-ablation.sh NAME[=KEY=VALUE[,KEY=VALUE...]] ...
#   STEPS=1000 recipes/bible-ablation.sh base seed2=train.seed=2 ema=train.ema_decay=0.9999
#   SETS=model.arch=luong recipes/bible-ablation.sh base v4k=data.vocab_size=4000
#
# Each variant is CONFIG (default configs/bible-es-en.yaml) plus SETS and its own overrides,
# trained for STEPS updates (validated four times) into OUT/NAME; then its best.pt translates the
# test split with beam 5. A fixed number of updates, not minutes, so that the figures do not
# depend on what else ran on the machine; the variants run in one lane per core of CPUS
# (default "0 1"), one thread each, and a variant already trained is kept (rerun with more names
# to extend the table). Writes OUT/table.md. A variant that sets data.vocab_size, data.joint or
# data.spm_model_type gets its own preprocessed copy of the corpus (OUT/data-NAME).
#   CONFIG=configs/sample.yaml CORPUS=data STEPS=400 recipes/bible-ablation.sh ...  (the demo's)
#   NMT="python3 -m nmt" PY=python3 CPUS="$(seq -s' ' 0 7)" recipes/bible-ablation.sh ...
#       (8 lanes on a GPU machine, from the working tree: `auto` trains there on the GPU)
set -euo pipefail
cd "$(dirname "$0")/.."
CORPUS=${CORPUS:-../shared/data/bible-es-en}
OUT=${OUT:-runs/ablation}
STEPS=${STEPS:-1000}
SETS=${SETS:-}
CONFIG=${CONFIG:-configs/bible-es-en.yaml}
read -ra CPUS <<< "${CPUS:-0 1}"
NMT=${NMT:-.venv/bin/nmt}
PY=${PY:-.venv/bin/python}
command -v ${NMT%% *} > /dev/null || make install  # NMT may be a command line
source recipes/steps.sh
[ $# -gt 0 ] || { echo "usage: $0 NAME[=KEY=VALUE[,KEY=VALUE...]] ..." >&2; exit 2; }

if [ ! -f "$OUT/data/manifest.json" ]; then
    $NMT preprocess --config $CONFIG --train "$CORPUS/train.tsv" \
        --dev "$CORPUS/dev.tsv" --test "$CORPUS/test.tsv" --out "$OUT/data"
fi

variant() {  # SPEC CPU: train one variant on one core, then translate the test split
    local name=${1%%=*} sets=() prep=() run data=$OUT/data overrides=$SETS
    run=$OUT/${name}
    [[ $1 == *=* ]] && overrides+=${overrides:+,}${1#*=}
    if [ -n "$overrides" ]; then
        IFS=, read -ra kv <<< "$overrides"
        for pair in "${kv[@]}"; do
            sets+=(--set "$pair")
            case $pair in data.vocab_size=* | data.joint=* | data.spm_model_type=*)
                prep+=(--set "$pair") ;;
            esac
        done
    fi
    if [ ${#prep[@]} -gt 0 ]; then
        data=$OUT/data-$name
        [ -f "$data/manifest.json" ] || OMP_NUM_THREADS=1 taskset -c "$2" $NMT preprocess \
            --config $CONFIG --train "$CORPUS/train.tsv" --dev "$CORPUS/dev.tsv" \
            --test "$CORPUS/test.tsv" --out "$data" --set data.threads=1 "${prep[@]}" \
            > "$run.prep.log" 2>&1
    fi
    train_steps $CONFIG "$data" "$run" "$2" "${sets[@]}"
    if [ ! -f "$run/test.hyp.txt" ]; then
        OMP_NUM_THREADS=1 taskset -c "$2" $NMT translate "$run/best.pt" -i "$data/test.es.txt" \
            -o "$run/test.hyp.txt" --beam 5 2>> "$run.log"
    fi
}

lane() {  # CPU SPEC...: the variants of one core, one after another
    local cpu=$1; shift
    for spec in "$@"; do variant "$spec" "$cpu"; done
}
specs=("$@") pids=()
for c in "${!CPUS[@]}"; do  # lane c: every len(CPUS)-th variant from the c-th on
    mine=()
    for i in "${!specs[@]}"; do (( i % ${#CPUS[@]} == c )) && mine+=("${specs[$i]}"); done
    if [ ${#mine[@]} -gt 0 ]; then lane "${CPUS[$c]}" "${mine[@]}" & pids+=($!); fi
done
for pid in "${pids[@]}"; do wait "$pid"; done
$PY recipes/ablation_table.py "$OUT" "${specs[@]}" > "$OUT/table.md"
cat "$OUT/table.md"
