"""Calibrate the MedNeXt planner's memory model: a training step's bytes per unit of the network's proxy.

``compute_conv_feature_map_size`` counts the maps a training step keeps for backward under selective recompute,
plus the largest branch's maps (re-created in backward one branch at a time). For each network and shape below, one
forward + backward runs on the GPU execution path (plain ops, selective recompute; the CPU-only fused nodes of
``networks/fastops.py`` are off) and prints the peak bytes allocated during the step (``peak_allocated_bytes``) and
the bytes autograd saves for backward, per proxy unit:

* under bf16 autocast with ``group_norm``/``layer_norm`` in float32 as CUDA autocast runs them (``cuda_norm_policy``):
  the planner's ``BYTES_PER_PROXY_UNIT_AMP`` is the top of this range;
* in float32: ``BYTES_PER_PROXY_UNIT_FP32`` (the device check's CPU rows);
* under bf16 autocast with CUDA norms and selective recompute off, per unit of the proxy without recompute (every
  map of every block): ``BYTES_PER_PROXY_UNIT_NO_RECOMPUTE``.

Usage::

    python benchmarks/calibrate_planner.py            # about 3 minutes on one core
"""

from __future__ import annotations

import contextlib

import torch

from nnunetv2_mednext.networks import create_model, reference_topology
from nnunetv2_mednext.networks.fastops import reference_ops
from nnunetv2_mednext.networks.memory import cuda_norm_policy, peak_allocated_bytes, saved_tensor_bytes
from nnunetv2_mednext.networks.recompute import recompute_suspended
from nnunetv2_mednext.nnunet.planners import mednext_planner as mp

CASES = [  # (variant, spatial dims, input shape (batch 2), stages)
    ("mednext_t", 2, (2, 1, 192, 192), 6),
    ("mednext_t", 3, (2, 1, 64, 64, 64), 5),
    ("mednext_t", 3, (2, 1, 32, 64, 96), 4),
    ("mednext_s", 2, (2, 1, 256, 256), 7),
    ("mednext_b", 2, (2, 1, 256, 256), 7),
    ("mednextv1_s_k3", 2, (2, 1, 192, 192), 6),
    ("mednextv1_s_k3", 3, (2, 1, 64, 64, 64), 5),
    ("mednextv1_b_k3", 2, (2, 1, 256, 256), 7),
    ("mednextv1_m_k5", 3, (2, 1, 32, 64, 64), 5),
]


def measure(name: str, dims: int, shape: tuple[int, ...], n_stages: int, amp: bool,
            recompute: bool = True) -> tuple[float, float]:
    """(peak bytes, saved bytes) of one training step per proxy unit, on the GPU execution path."""
    torch.manual_seed(0)
    net = create_model(name, spatial_dims=dims, num_classes=4, deep_supervision=True,
                       topology=reference_topology(dims, n_stages), checkpointing=False).train()
    for p in net.parameters():  # gradients exist from the second step on
        p.grad = torch.zeros_like(p)
    x = torch.randn(*shape)
    proxy = int(net.compute_conv_feature_map_size(shape[2:], recompute=recompute)) * shape[0]

    def forward() -> torch.Tensor:
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if amp else contextlib.nullcontext()
        policy = contextlib.nullcontext() if recompute else recompute_suspended()
        with reference_ops(), policy, cuda_norm_policy(), autocast:
            return sum(o.float().sum() for o in net(x))

    saved = saved_tensor_bytes(forward, list(net.parameters()))
    peak = peak_allocated_bytes(lambda: forward().backward())
    return peak / proxy, saved / proxy


def main() -> None:
    torch.set_num_threads(1)
    print(f"{'variant':<16} {'input':<16} {'bf16 peak':>9} {'bf16 saved':>10} {'fp32 peak':>9} {'fp32 saved':>10}"
          f" {'bf16 peak, no recompute':>23}   (bytes per proxy unit)")
    peaks: dict[str, list[float]] = {"amp": [], "fp32": [], "off": []}
    for name, dims, shape, n in CASES:
        row = []
        for amp in (True, False):
            peak, saved = measure(name, dims, shape, n, amp)
            peaks["amp" if amp else "fp32"].append(peak)
            row += [peak, saved]
        off = measure(name, dims, shape, n, True, recompute=False)[0]
        peaks["off"].append(off)
        print(f"{name:<16} {shape[2:]!s:<16} {row[0]:9.2f} {row[1]:10.2f} {row[2]:9.2f} {row[3]:10.2f} {off:23.2f}",
              flush=True)
    for key, label, used in (("amp", "bf16, CUDA norms", mp.BYTES_PER_PROXY_UNIT_AMP),
                             ("fp32", "fp32", mp.BYTES_PER_PROXY_UNIT_FP32),
                             ("off", "bf16, CUDA norms, no recompute",
                              mp.BYTES_PER_PROXY_UNIT_NO_RECOMPUTE / mp.OVERHEAD_FACTOR)):
        print(f"peak per unit, {label}: {min(peaks[key]):.2f}-{max(peaks[key]):.2f} (the planner uses {used:.2f})")


if __name__ == "__main__":
    main()
