"""``nnunetv2-mednext doctor``: the device check (GPU paths, speed, memory vs the planner); CPU subset without CUDA."""

from __future__ import annotations

import argparse
import sys

NAME = "doctor"
HELP = ("device check: AMP/bf16/compile/channels-last/checkpointing training steps, planner memory model, GPU routes, "
        "predictor")
DESCRIPTION = (
    "Checks the CUDA training paths on synthetic batches at nnU-Net plan shapes (no dataset needed) and writes "
    "device_check.json and device_check.md. Without CUDA it runs the CPU subset and lists what it skipped. "
    "Same as python benchmarks/device_check.py. See docs/gpu.md."
)
ORDER = 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from nnunetv2_mednext.doctor.cli import add_arguments as add

    add(parser)


def run(args: argparse.Namespace) -> int:
    from nnunetv2_mednext.doctor.cli import run as run_check

    argv = sys.argv[sys.argv.index("doctor") + 1:] if "doctor" in sys.argv else []
    return run_check(args, argv)
