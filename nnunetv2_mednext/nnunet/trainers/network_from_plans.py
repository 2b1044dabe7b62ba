"""Translate an nnU-Net plan's topology into a MedNeXt network (glue between nnU-Net and ``networks``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from nnunetv2_mednext.errors import MedNeXtUserError
from nnunetv2_mednext.networks import MedNeXtUNet, UnknownVariantError, get_seg_variant

MEDNEXT_CLASS_PATH = f"{MedNeXtUNet.__module__}.{MedNeXtUNet.__name__}"
TOPOLOGY_KEYS = ("n_stages", "kernel_sizes", "strides", "conv_op")
# how a planner turns nnU-Net's topology into a MedNeXt one: "plan" keeps it, "roy" gives Roy et al.'s network
TOPOLOGIES = ("plan", "roy")
ROY_MAX_STAGES = 5
ROY_BASE_WIDTH = 32
# MedNeXtUNet options a plan may set for every trainer that builds from it (a trainer's overrides still win)
PLAN_OPTIONS = ("upsample_align", "ds_bottleneck")


def _conv_op_name(conv_op: Any) -> str:
    if isinstance(conv_op, str):
        return conv_op
    return f"{conv_op.__module__}.{conv_op.__name__}"


def roy_topology(plan_arch_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Roy et al.'s layout on a plan: at most 5 levels (the plan's first strides and kernels), widths ``32 * 2^i``
    (32..512, no cap), the bottleneck head on and the official up-block alignment.

    On an isotropic plan with at least 5 stages this is exactly the official network (stride 2 everywhere); on an
    anisotropic one the strides and flat kernel axes of nnU-Net's plan are kept. Fewer than 5 stages (small patches)
    stay as planned.
    """
    n = min(int(plan_arch_kwargs["n_stages"]), ROY_MAX_STAGES)
    return {
        **plan_arch_kwargs,
        "n_stages": n,
        "kernel_sizes": [list(map(int, k)) for k in plan_arch_kwargs["kernel_sizes"][:n]],
        "strides": [list(map(int, s)) for s in plan_arch_kwargs["strides"][:n]],
        "features_per_stage": [ROY_BASE_WIDTH * 2**i for i in range(n)],
        "upsample_align": "start",
        "ds_bottleneck": True,
    }


def variant_arch_kwargs(
    variant: str,
    plan_arch_kwargs: Mapping[str, Any],
    overrides: Mapping[str, Any] | None = None,
    topology: str = "plan",
) -> dict[str, Any]:
    """``arch_kwargs`` for ``variant`` on the topology (stages, kernels, strides, 2D/3D) of any nnU-Net plan.

    Works with plans of PlainConvUNet, ResidualEncoderUNet and MedNeXtUNet alike. ``topology="roy"`` applies
    :func:`roy_topology` first (what the V1 planners write). The plan's :data:`PLAN_OPTIONS` carry over.
    """
    try:
        recipe = get_seg_variant(variant)
    except UnknownVariantError as e:
        raise MedNeXtUserError(str(e)) from None
    missing = [k for k in TOPOLOGY_KEYS if k not in plan_arch_kwargs]
    if missing:
        raise MedNeXtUserError(
            f"the plan's arch_kwargs lack {missing}; re-plan the dataset with nnU-Net >= 2.3 "
            "(nnUNetv2_plan_and_preprocess or nnunetv2-mednext plan_and_preprocess)"
        )
    if topology not in TOPOLOGIES:
        raise MedNeXtUserError(f"unknown MedNeXt topology {topology!r}; choose one of {', '.join(TOPOLOGIES)}")
    if topology == "roy":
        plan_arch_kwargs = roy_topology(plan_arch_kwargs)
    options = {k: plan_arch_kwargs[k] for k in PLAN_OPTIONS if k in plan_arch_kwargs}
    return recipe.arch_kwargs(
        int(plan_arch_kwargs["n_stages"]),
        plan_arch_kwargs["kernel_sizes"],
        plan_arch_kwargs["strides"],
        _conv_op_name(plan_arch_kwargs["conv_op"]),
        plan_arch_kwargs.get("features_per_stage"),
        **{**options, **dict(overrides or {})},
    )


def check_patch_size(patch_size: Sequence[int], strides: Sequence[Sequence[int]]) -> None:
    """Raise a one-line error unless every patch axis is divisible by the network's total stride."""
    total = np.prod(np.array(strides, dtype=np.int64), axis=0)
    patch = np.array(patch_size, dtype=np.int64)
    if patch.shape != total.shape or np.any(patch % total) or np.any(patch < total):
        raise MedNeXtUserError(
            f"patch size {list(map(int, patch))} is not divisible by the network's total stride "
            f"{list(map(int, total))}; fix 'patch_size' (or 'strides') in the plans, or re-plan the dataset"
        )


def build_mednext_from_plans(
    variant: str,
    configuration_manager: Any,
    num_input_channels: int,
    num_output_channels: int,
    enable_deep_supervision: bool = True,
    overrides: Mapping[str, Any] | None = None,
) -> MedNeXtUNet:
    """Build ``variant`` on the configuration's topology (what every MedNeXt trainer's builder does)."""
    kwargs = variant_arch_kwargs(variant, configuration_manager.network_arch_init_kwargs, overrides)
    patch = getattr(configuration_manager, "patch_size", None)
    if patch is not None:
        check_patch_size(patch, kwargs["strides"])
    return MedNeXtUNet(
        input_channels=num_input_channels,
        num_classes=num_output_channels,
        deep_supervision=enable_deep_supervision,
        **kwargs,
    )
