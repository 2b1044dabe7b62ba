#!/usr/bin/env bash
# nnU-Net's 5-fold cross-validation as independent processes on one machine (the fallback of the SLURM script), then
# nnUNetv2_find_best_configuration once every fold is done:
#   train_folds_local.sh -d DATASET -c "CONFIG [CONFIG ...]" [-tr TRAINER] [-p PLANS] [-f "0 1 2 3 4"] [-j JOBS]
#                        [-l LOG_DIR] [-- extra nnUNetv2_train arguments, e.g. -device cpu]
# -j: folds trained at the same time (default 1; one per GPU, e.g. with CUDA_VISIBLE_DEVICES set per job by you).
# Each fold writes LOG_DIR/CONFIG_fold_F.log. A failed fold stops nothing else; the script then names the failed
# folds and their logs and exits 1 without running find_best_configuration. Rerunning it skips finished folds and
# continues interrupted ones.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dataset="" configs="" trainer=nnUNetTrainerMedNeXt plans=nnUNetPlans folds="0 1 2 3 4" jobs=1 logs=fold_logs
while [ $# -gt 0 ]; do
    case $1 in
        -d) dataset=$2; shift 2 ;;
        -c) configs=$2; shift 2 ;;
        -tr) trainer=$2; shift 2 ;;
        -p) plans=$2; shift 2 ;;
        -f) folds=$2; shift 2 ;;
        -j) jobs=$2; shift 2 ;;
        -l) logs=$2; shift 2 ;;
        --) shift; break ;;
        *) echo "train_folds_local.sh: unknown argument $1 (see the header of this script)" >&2; exit 2 ;;
    esac
done
if [ -z "$dataset" ] || [ -z "$configs" ]; then
    echo "usage: train_folds_local.sh -d DATASET -c CONFIG [-tr TRAINER] [-p PLANS] [-f FOLDS] [-j JOBS] [-- args]" >&2
    exit 2
fi
mkdir -p "$logs"
declare -A pids=()
failed=()
reap() {  # wait until one running fold has ended (plain polling: bash 4 has no `wait -n -p`); record failures
    local name pid rc
    while true; do
        for name in "${!pids[@]}"; do
            pid=${pids[$name]}
            if ! kill -0 "$pid" 2>/dev/null; then
                if wait "$pid"; then rc=0; else rc=$?; fi
                [ "$rc" -eq 0 ] || failed+=("$name (exit $rc, log $logs/$name.log)")
                unset "pids[$name]"
                return
            fi
        done
        sleep 1
    done
}
for config in $configs; do
    for fold in $folds; do
        while [ "${#pids[@]}" -ge "$jobs" ]; do reap; done
        name=${config}_fold_${fold}
        "$here/fold_job.sh" "$dataset" "$config" "$trainer" "$plans" "$fold" -- "$@" > "$logs/$name.log" 2>&1 &
        pids[$name]=$!
        echo "started $name (pid $!, log $logs/$name.log)"
    done
done
while [ "${#pids[@]}" -gt 0 ]; do reap; done
if [ "${#failed[@]}" -gt 0 ]; then
    printf 'train_folds_local.sh: failed: %s\n' "${failed[@]}" >&2
    exit 1
fi
# shellcheck disable=SC2086
nnUNetv2_find_best_configuration "$dataset" -c $configs -tr "$trainer" -p "$plans" -f $folds
