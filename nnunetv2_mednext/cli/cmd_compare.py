"""``nnunetv2-mednext compare -d DATASET -m Trainer__Plans__config ...``: a table and a plot across models and folds.

Reads $nnUNet_results/DatasetXXX_Name/<model>/fold_N/: validation/summary.json (or evaluates the predictions there
when --hd95 is asked for), training_log*.txt ("Epoch time: X s"), checkpoint_final.pth (parameter count) and
<subdir>/inference_time.json when present. Missing folds are listed. Writes comparison.md/.json/.png to --out, and
comparison_cases.png (each model's best, median and worst case: the image with reference and predicted outlines)
when the raw images are found (--raw or $nnUNet_raw).
Test-set predictions: put them in fold_N/<name>/ and pass --subdir <name> --gt nnUNet_raw/DatasetXXX/labelsTs.
"""

from __future__ import annotations

import argparse

NAME = "compare"
HELP = "compare trained models (Trainer__Plans__config) across folds: DSC/HD95 table, params, epoch time, plot"
DESCRIPTION = __doc__
ORDER = 41


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-d", "--dataset", required=True, help="dataset id or DatasetXXX_Name")
    parser.add_argument("-m", "--models", nargs="+", required=True, help="Trainer__Plans__configuration, one or more")
    parser.add_argument("-f", "--folds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="folds (default 0 1 2 3 4)")
    parser.add_argument("--results", help="nnU-Net results root (default $nnUNet_results)")
    parser.add_argument("--subdir", default="validation", help="prediction folder inside fold_N (default validation)")
    parser.add_argument("--gt", help="reference labels for evaluating predictions (default: nnU-Net's gt_segmentations)")
    parser.add_argument("--hd95", choices=("none", "mm", "transunet"), default="none",
                        help="evaluate the predictions for HD95 in mm or under TransUNet's rules (default: reuse Dice)")
    parser.add_argument("--names", nargs="+", help="display names, one per model")
    parser.add_argument("-o", "--out", default="comparison", help="output folder (default ./comparison)")
    parser.add_argument("--raw", help="nnU-Net raw root for the case pictures (default $nnUNet_raw)")
    parser.add_argument("-np", "--num-processes", type=int, default=1, help="evaluation worker processes (default 1)")


def run(args: argparse.Namespace) -> int:
    from nnunetv2_mednext.evaluation.compare import compare_models, markdown, write_comparison

    comp = compare_models(args.dataset, args.models, folds=args.folds, results=args.results, subdir=args.subdir,
                          gt=args.gt, hd95=args.hd95, names=args.names, num_processes=args.num_processes)
    paths = write_comparison(comp, args.out, raw=args.raw)
    print(markdown(comp))
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return 0
