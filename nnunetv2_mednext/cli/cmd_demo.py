"""``nnunetv2-mednext demo``: the whole nnU-Net pipeline on a built-in synthetic dataset, on CPU, in minutes."""

from __future__ import annotations

import argparse

NAME = "demo"
HELP = ("plan -> preprocess -> train -> predict -> evaluate on a synthetic dataset: MedNeXt vs nnU-Net's U-Net (both "
        "recipes)")
ORDER = 5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", help="folder for nnUNet_raw/_preprocessed/_results (default: a new temp folder)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per trainer (default 2)")
    parser.add_argument("--iters", type=int, default=25, help="training iterations per epoch (default 25)")
    parser.add_argument("--val-iters", type=int, default=4, help="validation iterations per epoch (default 4)")
    parser.add_argument("--n-train", type=int, default=16, help="synthetic training cases (default 16)")
    parser.add_argument("--size", type=int, default=64, help="image size in pixels (default 64)")
    parser.add_argument("--trainers", nargs="+", default=None,
                        help="trainers to compare (default: MedNeXt, nnU-Net's U-Net with nnU-Net's recipe and with "
                             "the MedNeXt recipe)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads per command (default 1: on a shared or 2-core machine more threads are "
                             "slower)")
    parser.add_argument("--baselines", nargs="+", default=[], choices=("resenc",),
                        help="extra rows: resenc = nnU-Net's ResEnc-M preset (planner nnUNetPlannerResEncM, plans "
                             "nnUNetResEncUNetMPlans), nnU-Net's recipe, same budget")
    parser.add_argument("--overwrite", action="store_true", help="replace earlier demo results in --workdir")


def run(args: argparse.Namespace) -> int:
    import tempfile

    from nnunetv2_mednext.errors import MedNeXtUserError
    from nnunetv2_mednext.nnunet.demo import DEFAULT_TRAINERS, run_demo

    for name in ("epochs", "iters", "val_iters", "n_train", "size", "threads"):
        if getattr(args, name) < 1:
            raise MedNeXtUserError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.size % 32:
        raise MedNeXtUserError(f"--size must be a multiple of 32 (the U-Nets downsample 5 times), got {args.size}")
    workdir = args.workdir or tempfile.mkdtemp(prefix="mednext_demo_")
    run_demo(workdir, args.epochs, args.iters, args.val_iters, args.n_train, 4, args.size,
             args.trainers or DEFAULT_TRAINERS, args.overwrite, threads=args.threads, baselines=args.baselines)
    return 0
