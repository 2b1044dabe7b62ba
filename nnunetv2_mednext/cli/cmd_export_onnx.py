"""``nnunetv2-mednext export-onnx -m MODEL_FOLDER [-f FOLDS] [-chk NAME]``: each fold's network as ONNX, next to its
checkpoint, checked against PyTorch.

MODEL_FOLDER is nnU-Net's training output folder ($nnUNet_results/DatasetXXX_Name/Trainer__Plans__Configuration),
of this package's trainers or stock nnU-Net ones. For every fold it writes fold_N/<checkpoint>.onnx (deep
supervision off, one tile of the plan's patch size, dynamic batch axis, opset in the file's metadata) and
fold_N/<checkpoint>.onnx.json (opset, tile, checkpoint hash and time, the check). The check runs the export and
PyTorch on a random tile and, when $nnUNet_preprocessed holds the dataset, on real tiles; a difference above the
tolerance is an error and leaves no file. Needs the deploy extra: pip install 'nnunetv2-mednext[deploy]'.
"""

from __future__ import annotations

import argparse

NAME = "export-onnx"
HELP = "export each fold's network of a trained model folder to ONNX (checked against PyTorch)"
DESCRIPTION = __doc__
ORDER = 45


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-m", "--model-folder", required=True,
                        help="training output folder: $nnUNet_results/DatasetXXX_Name/Trainer__Plans__Configuration")
    parser.add_argument("-f", "--folds", nargs="+", default=None,
                        help="folds to export (numbers or 'all'; default: every fold holding the checkpoint)")
    parser.add_argument("-chk", "--checkpoint", default="checkpoint_final.pth",
                        help="checkpoint file name inside fold_N (default checkpoint_final.pth)")
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default 17)")


def run(args: argparse.Namespace) -> int:
    from nnunetv2_mednext.nnunet.deploy.onnx_export import OPSET, export_model

    export_model(args.model_folder, args.folds, args.checkpoint, opset=args.opset or OPSET)
    return 0
