"""nnU-Net names of the segmentation variants (``networks.registry.SEG_VARIANTS``, the one variant table).

Trainer, planner and plans names are derived here from a variant's block family, size letter and kernel, so the
trainer families and the planner presets list the variants once, in the registry.
"""

from __future__ import annotations

from nnunetv2_mednext.networks.registry import SEG_VARIANTS, SegVariant

DEFAULT_VARIANT = "mednext_t"


def _suffix(v: SegVariant) -> str:
    if v.block == "seed":
        return f"_{v.size}"
    return f"V1_{v.size}_k{v.kernel_size}" if v.block == "v1" else f"V2_{v.size}"


def trainer_name(v: SegVariant) -> str:
    """``nnUNetTrainerMedNeXt_T`` (seed) / ``nnUNetTrainerMedNeXtV1_S_k3`` (Roy et al.) / ``nnUNetTrainerMedNeXtV2_S``."""
    return f"nnUNetTrainerMedNeXt{_suffix(v)}"


def planner_name(v: SegVariant) -> str:
    """``nnUNetPlannerMedNeXt_T`` / ``nnUNetPlannerMedNeXtV1_S_k3`` / ``nnUNetPlannerMedNeXtV2_S``."""
    return f"nnUNetPlannerMedNeXt{_suffix(v)}"


def plans_name(v: SegVariant) -> str:
    """``nnUNetMedNeXtPlans`` (the default variant), ``nnUNetMedNeXtSPlans``, ``nnUNetMedNeXtV1Sk3Plans``,
    ``nnUNetMedNeXtV2SPlans``."""
    if v.name == DEFAULT_VARIANT:
        return "nnUNetMedNeXtPlans"
    if v.block == "seed":
        return f"nnUNetMedNeXt{v.size}Plans"
    return f"nnUNetMedNeXtV1{v.size}k{v.kernel_size}Plans" if v.block == "v1" else f"nnUNetMedNeXtV2{v.size}Plans"


def segmentation_variants() -> list[SegVariant]:
    """Every segmentation variant, in the registry's order (seed T, S, B, Roy et al. S..L x k3/k5, then v2 S, B, M)."""
    return list(SEG_VARIANTS.values())
