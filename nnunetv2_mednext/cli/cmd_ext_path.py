"""``nnunetv2-mednext ext-path``: the folder to put on ``nnUNet_extTrainer`` when the start-up hook is disabled."""

from __future__ import annotations

import argparse

NAME = "ext-path"
HELP = "print the trainer folder for nnUNet_extTrainer (only needed without the automatic start-up hook)"
ORDER = 90


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser  # no options


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import nnunetv2_mednext

    print(Path(nnunetv2_mednext.__file__).resolve().parent / "_nnunet_ext")
    return 0
