#!/usr/bin/env bash
# The reference recipe: from the Bible corpus to a scored model, for docs/results.md.
#
#   recipes/bible-es-en.sh [CORPUS_DIR] [OUT_DIR]      (defaults: ../shared/data/bible-es-en, runs/bible)
#   ARCH=rnnsearch MINUTES=20 recipes/bible-es-en.sh    (architecture and budget: luong, 40)
#   recipes/bible-es-en.sh CORPUS OUT --set model.layer_norm=true   (further args go to `nmt train`)
#
# Preprocesses once (OUT_DIR/data), trains ARCH with early stopping and a wall-clock budget
# (OUT_DIR/ARCH), averages the step checkpoints left at the end (the last `train.keep_last`
# validations), translates the test split with best.pt and the average, greedy and beam 5, and
# writes every score (with sacrebleu signatures) to OUT_DIR/ARCH/scores.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
CORPUS=${1:-../shared/data/bible-es-en}
OUT=${2:-runs/bible}
shift $(( $# < 2 ? $# : 2 ))
ARCH=${ARCH:-luong}
MINUTES=${MINUTES:-40}
NMT=${NMT:-.venv/bin/nmt}
[ -x "$NMT" ] || make install

if [ ! -f "$OUT/data/manifest.json" ]; then
    $NMT preprocess --config configs/bible-es-en.yaml --train "$CORPUS/train.tsv" \
        --dev "$CORPUS/dev.tsv" --test "$CORPUS/test.tsv" --out "$OUT/data"
fi
RUN=$OUT/$ARCH
$NMT train configs/bible-es-en.yaml --data "$OUT/data" --out "$RUN" --overwrite \
    --set model.arch="$ARCH" --set train.max_minutes="$MINUTES" "$@"
$NMT average "$RUN"/step-*.pt --out "$RUN/average.pt"

: > "$RUN/scores.jsonl"
for model in best average; do
    for beam in 1 5; do
        hyp=$RUN/test.$model.beam$beam.txt
        $NMT translate "$RUN/$model.pt" -i "$OUT/data/test.es.txt" -o "$hyp" --beam $beam
        echo "== $ARCH $model.pt beam $beam"
        $NMT evaluate "$hyp" "$OUT/data/test.en.txt" --metrics bleu,chrf
        $NMT evaluate "$hyp" "$OUT/data/test.en.txt" --metrics bleu,chrf --json \
            | python3 -c "import json,sys; print(json.dumps({'arch': '$ARCH', 'model': '$model', 'beam': $beam, 'scores': json.load(sys.stdin)}))" \
            >> "$RUN/scores.jsonl"
    done
done
