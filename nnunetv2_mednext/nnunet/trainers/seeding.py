"""Reproducible runs: ``NNUNETV2_MEDNEXT_SEED=N`` seeds Python, NumPy and torch before a trainer builds anything.

nnU-Net itself does not seed; repeated runs then differ in initial weights, patch sampling and augmentation. The
benchmarks train every model with several explicit seeds so that the spread between runs can be reported.
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from nnunetv2_mednext.errors import MedNeXtUserError

SEED_ENV = "NNUNETV2_MEDNEXT_SEED"


def seed_from_env() -> int | None:
    """Seed every generator from ``NNUNETV2_MEDNEXT_SEED`` when it is set; returns the seed (``None``: unset)."""
    value = os.environ.get(SEED_ENV, "").strip()
    if not value:
        return None
    if not value.isdigit():
        raise MedNeXtUserError(f"{SEED_ENV}={value!r} is not valid; fix: use a non-negative integer, e.g. 0")
    seed = int(value)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return seed
