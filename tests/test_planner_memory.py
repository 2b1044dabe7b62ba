"""The MedNeXt planner's memory model against measured bytes (``benchmarks/calibrate_planner.py``).

The proxy counts the maps a training step keeps under selective recompute plus the largest branch's maps; the
planner's bytes per proxy unit must cover the peak a training step allocates on the GPU execution path (bf16
autocast with CUDA's float32 norms, and float32) without over-estimating it by more than the calibrated spread.
Planning with the same memory target gives more voxels per step with selective recompute than without.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from nnunetv2_mednext.networks import create_model, reference_topology
from nnunetv2_mednext.nnunet.planners import mednext_planner as mp

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import calibrate_planner

CASES = [("mednext_t", 2, (2, 1, 128, 128), 5), ("mednextv1_s_k3", 3, (2, 1, 32, 32, 32), 4)]


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}_{c[1]}d" for c in CASES])
def test_bytes_per_proxy_unit_covers_the_measured_peak(case: tuple) -> None:
    name, dims, shape, n_stages = case
    for amp, constant in ((True, mp.BYTES_PER_PROXY_UNIT_AMP), (False, mp.BYTES_PER_PROXY_UNIT_FP32)):
        peak, saved = calibrate_planner.measure(name, dims, shape, n_stages, amp)
        assert 0.65 * constant <= peak <= constant, (name, amp, peak)  # the calibrated spread is within 1.5x
        assert saved < peak  # the peak adds the maps backward re-creates and the gradients of activations


def test_proxy_with_recompute_is_a_fraction_of_all_maps() -> None:
    """What the planner gains: the estimated peak of a training step with recompute is 1.5-5x smaller."""
    with torch.device("meta"):
        for name, dims in (("mednext_t", 2), ("mednext_t", 3), ("mednextv1_s_k3", 3)):
            net = create_model(name, spatial_dims=dims, num_classes=4, deep_supervision=True,
                               topology=reference_topology(dims))
            patch = (256, 256) if dims == 2 else (128, 128, 128)
            on = float(net.compute_conv_feature_map_size(patch, recompute=True)) * mp.bytes_per_proxy_unit(True)
            off = float(net.compute_conv_feature_map_size(patch, recompute=False)) * mp.bytes_per_proxy_unit(False)
            assert 1.5 < off / on < 5.0, (name, dims, off / on)
