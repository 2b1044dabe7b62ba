"""``nnunetv2-mednext evaluate GT_FOLDER PRED_FOLDER``: per case / per class Dice and HD95, summary and tables.

Files are paired by name (.nii.gz, .nii, .png, ...). HD95 comes in two conventions (--mode): ``mm`` uses the image
spacing (empty masks give NaN HD95, skipped in means) and ``transunet`` follows TransUNet's calculate_metric_percase
(HD95 in voxels, spacing ignored; empty prediction -> DSC 0, HD95 0; prediction on an empty reference -> DSC 1,
HD95 0). Writes summary.json, per_case.csv, summary.csv and table.md (paper column order) to --out.
"""

from __future__ import annotations

import argparse

NAME = "evaluate"
HELP = "Dice and HD95 (mm and/or TransUNet pixel rules) of a prediction folder; JSON/CSV/markdown reports"
DESCRIPTION = __doc__
ORDER = 40


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("gt", help="folder with the reference label maps")
    parser.add_argument("pred", help="folder with the predicted label maps (same file names)")
    parser.add_argument("-o", "--out", help="report folder (default PRED/evaluation)")
    parser.add_argument("--mode", choices=("both", "mm", "transunet"), default="both",
                        help="HD95 convention(s): mm (spacing), transunet (voxels + its empty-mask rules), both")
    parser.add_argument("--no-hd95", action="store_true", help="Dice only (fast)")
    parser.add_argument("-l", "--labels", type=int, nargs="+", help="foreground labels to score (default: dataset.json)")
    parser.add_argument("--dataset-json", help="dataset.json for label names (default: PRED/ or GT/../dataset.json)")
    parser.add_argument("--method", help="row name in the tables (default: the prediction folder's name)")
    parser.add_argument("--file-ending", help="e.g. .nii.gz or .png (default: the most common one in GT)")
    parser.add_argument("--allow-missing", action="store_true", help="score cases without a prediction as empty")
    parser.add_argument("--only-predicted", action="store_true",
                        help="score only the references that have a prediction (e.g. one fold's validation folder "
                             "against nnU-Net's gt_segmentations)")
    parser.add_argument("-np", "--num-processes", type=int, default=1, help="worker processes (default 1)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from nnunetv2_mednext.evaluation.evaluate import evaluate_folders, markdown_report, write_reports

    result = evaluate_folders(args.gt, args.pred, labels=args.labels, dataset_json=args.dataset_json, mode=args.mode,
                              with_hd95=not args.no_hd95, file_ending=args.file_ending,
                              num_processes=args.num_processes, allow_missing=args.allow_missing,
                              only_predicted=args.only_predicted)
    method = args.method or Path(args.pred).resolve().name
    out = Path(args.out) if args.out else Path(args.pred) / "evaluation"
    paths = write_reports(result, out, method)
    print(markdown_report(result, method))
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return 0
