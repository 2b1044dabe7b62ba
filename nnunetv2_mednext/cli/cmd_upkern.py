"""``nnunetv2-mednext upkern``: k5 initial weights from a trained MedNeXtV1 k3 nnU-Net checkpoint (Roy et al.).

    nnunetv2-mednext upkern $nnUNet_results/Dataset004_Hippocampus/nnUNetTrainerMedNeXtV1_S_k3__nnUNetPlans__3d_fullres/fold_0/checkpoint_final.pth -o k5_init.pth
    nnUNetv2_train 4 3d_fullres 0 -tr nnUNetTrainerMedNeXtV1_S_k5 -pretrained_weights k5_init.pth

Depthwise kernels are resized (trilinear in 3D, bilinear in 2D); every other tensor is copied unchanged.
"""

from __future__ import annotations

import argparse

NAME = "upkern"
HELP = "UpKern: initialise a MedNeXtV1 k5 training from a trained k3 checkpoint (-pretrained_weights file)"
DESCRIPTION = __doc__
ORDER = 25


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="checkpoint_final.pth of a nnUNetTrainerMedNeXtV1_*_k3 training")
    parser.add_argument("-o", "--output", required=True, help="file to write (for nnUNetv2_train -pretrained_weights)")
    parser.add_argument("--trainer", help="target trainer (default: the source trainer with _k5)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")


def run(args: argparse.Namespace) -> int:
    from nnunetv2_mednext.nnunet.trainers.upkern_checkpoint import upkern_checkpoint

    info = upkern_checkpoint(args.checkpoint, args.output, args.trainer, args.overwrite)
    print(f"wrote {args.output}: {info['resized']} depthwise kernels resized, {info['copied']} tensors copied "
          f"({info['source_trainer']} -> {info['target_trainer']})")
    print(f"next: nnUNetv2_train DATASET {info['configuration']} FOLD -tr {info['target_trainer']} "
          f"-pretrained_weights {args.output}")
    return 0
