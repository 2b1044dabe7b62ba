"""``nnunetv2-mednext predict``: nnUNetv2_predict with a choice of what runs the network (--backend).

Takes exactly nnUNetv2_predict's arguments (read from the installed nnU-Net) plus
--backend {torch,onnxruntime,openvino}. nnU-Net's predictor does everything else: preprocessing, the
Gaussian-weighted sliding window, mirroring (off with --disable_tta), fold ensembling, resampling and export,
--save_probabilities, -prev_stage_predictions. torch is nnU-Net's PyTorch network
(NNUNETV2_MEDNEXT_MIRROR_BATCH=8: the mirrored copies of a tile as one batch, same numbers); onnxruntime and openvino run each fold's ONNX export, which is made (and checked) on first use and made
anew when the checkpoint changed since. The exported backends need the deploy extra:
pip install 'nnunetv2-mednext[deploy]'.

Example: nnunetv2-mednext predict -i imagesTs -o pred -d 4 -c 3d_fullres -tr nnUNetTrainerMedNeXt -f 0
-device cpu --backend onnxruntime
"""

from __future__ import annotations

import argparse

NAME = "predict"
HELP = "nnUNetv2_predict with --backend torch|onnxruntime|openvino (exports made on first use)"
DESCRIPTION = __doc__
ORDER = 46
BACKENDS = ("torch", "onnxruntime", "openvino")


def full_parser(prog: str) -> argparse.ArgumentParser:
    """nnU-Net's nnUNetv2_predict parser plus --backend (building it imports nnU-Net: only when needed)."""
    from nnunetv2_mednext.nnunet.deploy.predict import add_arguments as add_all

    parser = argparse.ArgumentParser(prog=prog, description=__doc__.replace("``", ""),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_all(parser)
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # the rest of the arguments are nnU-Net's, parsed in run(); -h shows them all
    parser.add_argument("--backend", choices=BACKENDS, default="torch",
                        help="what runs the network (default torch)")
    parser.set_defaults(_accepts_extra=True)
    parser.format_help = lambda: full_parser(parser.prog).format_help()  # type: ignore[method-assign]


def run(args: argparse.Namespace) -> int:
    from nnunetv2_mednext.nnunet.deploy.predict import run as run_predict

    parser = full_parser("nnunetv2-mednext predict")
    full = parser.parse_args([*getattr(args, "extra", []), "--backend", args.backend])
    return run_predict(full)
