#!/usr/bin/env bash
# nnU-Net's 5-fold cross-validation on a SLURM cluster: one array job per configuration (one task per fold, each
# task is fold_job.sh), then nnUNetv2_find_best_configuration as a job that starts only when every fold succeeded:
#   train_folds_slurm.sh -d DATASET -c "CONFIG [CONFIG ...]" [-tr TRAINER] [-p PLANS] [-f 0-4]
#                        [-s "sbatch options, e.g. --gres=gpu:1 --time=24:00:00 -p gpu"] [-- nnUNetv2_train args]
# Every node needs: the same environment (nnunetv2 and nnunetv2-mednext installed: the package's start-up hook makes
# nnU-Net find the trainers, no nnUNet_extTrainer to set), and nnUNet_raw, nnUNet_preprocessed and nnUNet_results
# exported to folders every node sees (sbatch passes the submitting shell's environment by default).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dataset="" configs="" trainer=nnUNetTrainerMedNeXt plans=nnUNetPlans folds=0-4 opts=""
while [ $# -gt 0 ]; do
    case $1 in
        -d) dataset=$2; shift 2 ;;
        -c) configs=$2; shift 2 ;;
        -tr) trainer=$2; shift 2 ;;
        -p) plans=$2; shift 2 ;;
        -f) folds=$2; shift 2 ;;
        -s) opts=$2; shift 2 ;;
        --) shift; break ;;
        *) echo "train_folds_slurm.sh: unknown argument $1 (see the header of this script)" >&2; exit 2 ;;
    esac
done
if [ -z "$dataset" ] || [ -z "$configs" ]; then
    echo "usage: train_folds_slurm.sh -d DATASET -c CONFIG [-tr TRAINER] [-p PLANS] [-f 0-4] [-s OPTS] [-- args]" >&2
    exit 2
fi
for v in nnUNet_raw nnUNet_preprocessed nnUNet_results; do
    if [ -z "${!v:-}" ]; then echo "train_folds_slurm.sh: $v is not set; export it (a folder every node sees)" >&2; exit 2; fi
done
ids=()
for config in $configs; do
    # shellcheck disable=SC2086
    id=$(sbatch --parsable --array="$folds" --job-name="nnunet_${dataset}_${config}" $opts \
         "$here/fold_job.sh" "$dataset" "$config" "$trainer" "$plans" -- "$@")
    ids+=("${id%%;*}")
    echo "submitted $config folds $folds: job ${id%%;*}"
done
fold_list=$(python3 -c "import sys; a, _, b = sys.argv[1].partition('-'); print(*range(int(a), int(b or a) + 1))" "$folds")
dependency=$(IFS=:; echo "afterok:${ids[*]}")
final=$(sbatch --parsable --dependency="$dependency" --job-name="nnunet_${dataset}_best" \
        --wrap="nnUNetv2_find_best_configuration $dataset -c $configs -tr $trainer -p $plans -f $fold_list")
echo "submitted find_best_configuration: job ${final%%;*} (runs after $dependency)"
