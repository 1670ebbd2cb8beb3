# Sourced by the recipes that train for a fixed number of updates, not minutes, so that their
# figures do not depend on what else ran on the machine. Needs NMT and STEPS set.

# train_steps CONFIG DATA RUN CPUS [NMT TRAIN OPTIONS...]: STEPS updates of CONFIG's model on
# the preprocessed DATA into RUN (validated four times, logged to RUN.log), on the CPUs listed
# in CPUS (e.g. 0 or 0,1), one thread each. A run already trained is kept.
train_steps() {
    local config=$1 data=$2 run=$3 cpus=$4 threads
    shift 4
    [ -f "$run/trained" ] && return
    threads=$(tr ',' '\n' <<< "$cpus" | wc -l)
    OMP_NUM_THREADS=$threads taskset -c "$cpus" $NMT train "$config" --data "$data" \
        --out "$run" --overwrite --set train.max_minutes=0 --set train.max_steps="$STEPS" \
        --set train.valid_every=$((STEPS / 4)) --set train.threads="$threads" "$@" \
        > "$run.log" 2>&1
    touch "$run/trained"
}
