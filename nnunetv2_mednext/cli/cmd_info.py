"""``nnunetv2-mednext info``: versions, variants with parameter counts, and whether nnU-Net finds the trainers."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from nnunetv2_mednext.versions import installed_version

NAME = "info"
HELP = "installed versions, available variants (params), and whether nnU-Net finds the MedNeXt trainers"
ORDER = 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-lookup", action="store_true", help="skip the (slow, ~10 s) nnU-Net trainer lookup check")
    parser.add_argument("--trainers", action="store_true",
                        help="list every trainer (-tr name) and planner (-pl name) of this package and stop")
    parser.add_argument("--markdown", action="store_true",
                        help="with --trainers: the list as docs/trainers.md (markdown tables)")


def trainer_lookup_check(name: str = "nnUNetTrainerMedNeXt") -> tuple[bool, str]:
    """Resolve ``name`` with nnU-Net's own lookup in a fresh interpreter (as ``nnUNetv2_train`` would)."""
    code = (
        "from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name as f\n"
        f"c = f({name!r}); print('FOUND', c.__module__)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    found = [ln for ln in proc.stdout.splitlines() if ln.startswith("FOUND")]
    if proc.returncode == 0 and found:
        return True, found[-1].split(" ", 1)[1]
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
    return False, tail[0]


def list_trainers_and_planners() -> None:
    """One line per trainer (family table of ``trainers/variants.py``) and planner."""
    from nnunetv2_mednext.nnunet.planners import PLANNERS
    from nnunetv2_mednext.nnunet.trainers import TRAINERS

    print(f"trainers ({len(TRAINERS)}; nnUNetv2_train ... -tr NAME):")
    for name, cls in TRAINERS.items():
        print(f"  {name:<44} {(cls.__doc__ or '').strip().splitlines()[0].replace('``', '')}")
    print(f"\nplanners ({len(PLANNERS)}; nnunetv2-mednext plan_and_preprocess -pl NAME):")
    for name, cls in PLANNERS.items():
        print(f"  {name:<44} {(cls.__doc__ or '').strip().splitlines()[0].replace('``', '')}")


def run(args: argparse.Namespace) -> int:
    if args.trainers:
        if args.markdown:
            from nnunetv2_mednext.nnunet.trainers.catalog import catalog_markdown

            print(catalog_markdown(), end="")
        else:
            list_trainers_and_planners()
        return 0
    import nnunetv2
    import torch

    from nnunetv2_mednext import __version__
    from nnunetv2_mednext.networks import create_model, list_models, model_task

    print(f"nnunetv2-mednext {__version__}")
    for dist in ("nnunetv2", "torch", "dynamic-network-architectures", "numpy"):
        print(f"  {dist:<30} {installed_version(dist)}")
    print(f"  nnunetv2 location             {os.path.dirname(nnunetv2.__file__)}")
    print(f"  CUDA available                 {torch.cuda.is_available()}")
    print(f"  nnUNet_extTrainer              {os.environ.get('nnUNet_extTrainer', '(unset)')}")
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        print(f"  {var:<30} {os.environ.get(var, '(unset)')}")
    print("\nvariants (params at the reference topology: 2D 6 stages for seed, 3D 5 stages for v1; 1 -> 2 classes):")
    for name in list_models():
        task = model_task(name)
        if task == "segmentation":
            model = create_model(name, spatial_dims=3 if name.startswith("mednextv1") else 2)
        else:
            model = create_model(name)
        n = sum(p.numel() for p in model.parameters())
        print(f"  {name:<20} {task:<15} {n / 1e6:7.2f} M")
    if not args.no_lookup:
        ok, where = trainer_lookup_check()
        status = f"yes ({where})" if ok else f"NO: {where}"
        print(f"\nnnU-Net finds nnUNetTrainerMedNeXt: {status}")
        if not ok:
            print("  fix: reinstall the package (pip install ...), or export nnUNet_extTrainer=$(nnunetv2-mednext ext-path)")
            return 1
    return 0
