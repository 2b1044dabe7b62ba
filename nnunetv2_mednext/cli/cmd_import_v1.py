"""``nnunetv2-mednext import-v1``: Roy et al.'s official MedNeXt checkpoint (nnU-Net v1 fork) -> nnU-Net v2 model folder.

    nnunetv2-mednext import-v1 TaskXXX/nnUNetTrainerV2_MedNeXt_S_kernel3__nnUNetPlansv2.1/fold_0/model_final_checkpoint.model \\
        -o $nnUNet_results/Dataset004_Hippocampus/nnUNetTrainerMedNeXtV1_S_k3__nnUNetMedNeXtV1ImportPlans__3d_fullres
    nnUNetv2_predict -i IN -o OUT -d 4 -c 3d_fullres -tr nnUNetTrainerMedNeXtV1_S_k3 -p nnUNetMedNeXtV1ImportPlans -f 0

Reads ``model_final_checkpoint.model`` and the ``.pkl`` next to it; writes ``plans.json``, ``dataset.json`` and
``fold_<f>/checkpoint_final.pth`` into the output folder (other folds of the same model can be added to it).
"""

from __future__ import annotations

import argparse

NAME = "import-v1"
HELP = "convert a MedNeXt checkpoint of Roy et al.'s nnU-Net v1 fork into an nnU-Net v2 model folder"
DESCRIPTION = __doc__
ORDER = 26


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="model_final_checkpoint.model (the .pkl must sit next to it)")
    parser.add_argument("-o", "--output", required=True,
                        help="model folder to write (e.g. $nnUNet_results/DatasetXXX_Name/TRAINER__PLANS__CONFIG)")
    parser.add_argument("--fold", help="fold folder name to write (default: the fold the v1 training used)")
    parser.add_argument("--trainer", help="target trainer (default nnUNetTrainerMedNeXtV1_<size>_k<kernel>, from the weights)")
    parser.add_argument("-c", "--configuration", help="configuration name (default 3d_fullres, 3d_lowres or 2d from the plans)")
    parser.add_argument("--dataset-json", help="the dataset's dataset.json (v1 or v2) for label and channel names")
    parser.add_argument("--dataset-name", help="dataset name written to the plans (default from the v1 TaskXXX folder)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing files in the output folder")


def run(args: argparse.Namespace) -> int:
    from nnunetv2_mednext.nnunet.trainers.import_v1 import IMPORT_PLANS_NAME, import_v1_checkpoint

    info = import_v1_checkpoint(args.checkpoint, args.output, args.fold, args.trainer, args.configuration,
                                args.dataset_json, args.dataset_name, args.overwrite)
    print(f"wrote {info['output']}/fold_{info['fold']}/checkpoint_final.pth: {info['variant']} ({info['source_trainer']}, "
          f"epoch {info['epoch']}) -> {info['trainer']}, configuration {info['configuration']}; "
          f"{len(info['dropped'])} official tensors without effect dropped (depthwise biases, unused heads)")
    if info["missing_heads"]:
        print("note: the checkpoint has no deep-supervision heads (trained without deep supervision); they keep their "
              "initial values and do not affect predictions")
    print(f"next: nnUNetv2_predict_from_modelfolder -i INPUT -o OUTPUT -m {info['output']} -f {info['fold']}")
    print(f"  or, with the folder at $nnUNet_results/<dataset>/{info['trainer']}__{IMPORT_PLANS_NAME}__"
          f"{info['configuration']}: nnUNetv2_predict -d <dataset> -c {info['configuration']} -tr {info['trainer']} "
          f"-p {IMPORT_PLANS_NAME} -f {info['fold']} -i INPUT -o OUTPUT")
    return 0
