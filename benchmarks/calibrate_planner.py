"""Calibrate the planner's memory model: bytes saved for backward per unit of ``compute_conv_feature_map_size``.

Runs one forward pass per configuration on CPU (fp32) while counting the bytes of every distinct tensor autograd
saves for backward (``torch.autograd.graph.saved_tensors_hooks``), and prints bytes / proxy. The planner sizes
batches for a GPU, where the CPU-only fused nodes of ``networks/fastops.py`` do not run, so the plain ops are
measured (``reference_ops``). Usage:

    python benchmarks/calibrate_planner.py
"""

from __future__ import annotations

import torch

from nnunetv2_mednext.networks import create_model, reference_topology
from nnunetv2_mednext.networks.fastops import reference_ops
from nnunetv2_mednext.plan_networks import saved_tensor_bytes


def saved_bytes(net: torch.nn.Module, x: torch.Tensor) -> int:
    """Bytes autograd saves for backward in one forward (parameters included, as the calibration always did)."""
    return saved_tensor_bytes(lambda: net(x))


def main() -> None:
    torch.manual_seed(0)
    cases = [
        ("mednext_t", 2, (1, 1, 192, 192), 6),
        ("mednext_t", 2, (1, 1, 256, 256), 7),
        ("mednext_t", 3, (1, 1, 64, 64, 64), 5),
        ("mednext_s", 3, (1, 1, 48, 64, 64), 5),
        ("mednextv1_s_k3", 3, (1, 1, 64, 64, 64), 5),
        ("mednextv1_b_k3", 2, (1, 1, 256, 256), 7),
    ]
    print(f"{'variant':<16} {'input':<18} {'saved MB':>9} {'proxy (M)':>10} {'bytes/unit':>10}")
    for name, dims, shape, n_stages in cases:
        net = create_model(name, spatial_dims=dims, num_classes=4, deep_supervision=True,
                           topology=reference_topology(dims, n_stages))
        net.train()
        with reference_ops():  # the GPU execution path (fastops' fused nodes keep about half of this on CPU)
            b = saved_bytes(net, torch.randn(*shape))
        proxy = int(net.compute_conv_feature_map_size(shape[2:]))
        print(f"{name:<16} {shape[2:]!s:<18} {b / 2**20:9.1f} {proxy / 1e6:10.2f} {b / proxy:10.2f}")


if __name__ == "__main__":
    main()
