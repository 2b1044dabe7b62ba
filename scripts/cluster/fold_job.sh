#!/usr/bin/env bash
# One fold of nnU-Net's cross-validation, as one independent job (a SLURM array task, or a process of
# train_folds_local.sh):
#   fold_job.sh DATASET CONFIG TRAINER PLANS [FOLD] [-- extra nnUNetv2_train arguments]
# FOLD defaults to $SLURM_ARRAY_TASK_ID. A fold whose checkpoint_final.pth and validation summary exist is skipped; a
# fold with a checkpoint_latest.pth (a job that was stopped or preempted) continues from it (--c). Trains with --npz,
# which nnUNetv2_find_best_configuration needs to compare and ensemble configurations.
set -euo pipefail
if [ $# -lt 4 ]; then
    echo "usage: fold_job.sh DATASET CONFIG TRAINER PLANS [FOLD] [-- nnUNetv2_train args]" >&2
    exit 2
fi
dataset=$1 config=$2 trainer=$3 plans=$4
shift 4
fold=${SLURM_ARRAY_TASK_ID:-}
if [ $# -gt 0 ] && [ "$1" != "--" ]; then fold=$1; shift; fi
if [ $# -gt 0 ] && [ "$1" = "--" ]; then shift; fi
if [ -z "$fold" ]; then
    echo "fold_job.sh: no fold: pass FOLD or run it as a SLURM array task (--array=0-4)" >&2
    exit 2
fi
: "${nnUNet_results:?fold_job.sh: set nnUNet_raw, nnUNet_preprocessed and nnUNet_results (shared by every node)}"

# the fold's output folder, once nnU-Net has created it: $nnUNet_results/DatasetXXX_*/TRAINER__PLANS__CONFIG/fold_F
out=""
if [[ "$dataset" =~ ^[0-9]+$ ]]; then
    for d in "$nnUNet_results"/Dataset"$(printf %03d "$((10#$dataset))")"_*; do [ -d "$d" ] && out=$d; done
else
    out=$nnUNet_results/$dataset
fi
out=$out/${trainer}__${plans}__${config}/fold_${fold}
if [ -f "$out/checkpoint_final.pth" ] && [ -f "$out/validation/summary.json" ]; then
    echo "fold_job.sh: fold $fold of $trainer $config is done ($out); skipped"
    exit 0
fi
resume=()
if [ -f "$out/checkpoint_latest.pth" ]; then resume=(--c); fi
echo "fold_job.sh: nnUNetv2_train $dataset $config $fold -tr $trainer -p $plans --npz ${resume[*]} $*"
exec nnUNetv2_train "$dataset" "$config" "$fold" -tr "$trainer" -p "$plans" --npz ${resume[@]+"${resume[@]}"} "$@"
