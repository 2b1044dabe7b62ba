"""CPU thread count for nnU-Net trainings: honour ``OMP_NUM_THREADS``, which ``nnUNetv2_train -device cpu`` overrides."""

from __future__ import annotations

import os

import torch


def apply_thread_env(device: torch.device) -> int | None:
    """On CPU, set torch's intra-op threads from ``OMP_NUM_THREADS`` (nnU-Net sets all cores); returns what was set.

    With more threads than free cores, OpenMP threads spin-wait on descheduled peers and a CPU training can slow down
    by an order of magnitude; ``OMP_NUM_THREADS=1 nnUNetv2_train ... -device cpu`` is the way out.
    """
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    if torch.device(device).type != "cpu" or not value.isdigit() or int(value) < 1:
        return None
    torch.set_num_threads(int(value))
    return int(value)
