"""``nnunetv2-mednext ext-path``: the folder to put on ``nnUNet_extTrainer`` when the start-up hook is disabled."""

from __future__ import annotations

import argparse

NAME = "ext-path"
HELP = "print the trainer folder for nnUNet_extTrainer (only needed without the automatic start-up hook)"
ORDER = 90


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser  # no options


def run(args: argparse.Namespace) -> int:
    from nnunetv2_mednext.nnunet.startup_hook import shim_folder

    print(shim_folder())
    return 0
