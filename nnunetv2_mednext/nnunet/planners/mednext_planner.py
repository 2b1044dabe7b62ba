"""nnU-Net experiment planners that size patch and batch for MedNeXt networks (like the ResEnc presets).

The topology search (spacing, patch shrinking, pooling) is nnU-Net's own; only the memory estimate and the
``architecture`` written to the plans are MedNeXt's. The V1 planners (``nnUNetPlannerMedNeXtV1_*``) write the
``roy`` topology: Roy et al.'s 5 levels and widths 32..512 with the bottleneck head, on nnU-Net's strides and patch
(the memory estimate and so patch and batch are those of that network). Plans name ``nnUNetMedNeXtPlans`` (variant ``mednext_t``)
reuse the ``nnUNetPlans_2d`` / ``nnUNetPlans_3d_fullres`` preprocessed data, and their ``network_class_name`` points
at :class:`~nnunetv2_mednext.networks.MedNeXtUNet`, so the stock ``nnUNetTrainer`` and ``nnUNetv2_predict`` can
use them too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from nnunetv2.experiment_planning.experiment_planners.residual_unets.residual_encoder_unet_planners import (
    ResEncUNetPlanner,
)

from nnunetv2_mednext.networks import MedNeXtUNet
from nnunetv2_mednext.networks.recompute import recompute_enabled
from nnunetv2_mednext.nnunet.trainers.network_from_plans import MEDNEXT_CLASS_PATH, variant_arch_kwargs
from nnunetv2_mednext.nnunet.variant_names import planner_name, plans_name, segmentation_variants

# Memory model (docs/nnunet.md, benchmarks/calibrate_planner.py). The proxy (``compute_conv_feature_map_size``)
# counts the feature maps a training step keeps under selective recompute plus the largest branch's maps, which
# backward re-creates one branch at a time; a training step's peak allocation per proxy unit, measured on CPU under
# bf16 autocast with CUDA's float32 norms (``networks.memory.cuda_norm_policy``), is 2.62-3.52 bytes over the seed and
# Roy et al. variants in 2D and 3D; the planner takes the top of that range. OVERHEAD_FACTOR covers what a CPU run
# does not show (CUDA caching allocator, cuDNN workspaces); the device check re-fits it on a GPU.
BYTES_PER_PROXY_UNIT_AMP = 3.55
BYTES_PER_PROXY_UNIT_FP32 = 5.7  # the same measure in float32 (3.96-5.68): the CPU rows of the device check
OVERHEAD_FACTOR = 1.3
BYTES_PER_PROXY_UNIT = BYTES_PER_PROXY_UNIT_AMP * OVERHEAD_FACTOR  # GPU bytes per unit, training under AMP
# With NNUNETV2_MEDNEXT_RECOMPUTE=0 the proxy counts every map of every block; the same peak measure per unit of it
# is 2.11-2.94 bytes.
BYTES_PER_PROXY_UNIT_NO_RECOMPUTE = 2.95 * OVERHEAD_FACTOR

def bytes_per_proxy_unit(recompute: bool | None = None) -> float:
    """GPU bytes per proxy unit of a training step under AMP, for the execution policy (default: the current one)."""
    if recompute is None:
        recompute = recompute_enabled()
    return BYTES_PER_PROXY_UNIT if recompute else BYTES_PER_PROXY_UNIT_NO_RECOMPUTE


def reference_value(gb: float, reference_batch_size: int, recompute: bool | None = None) -> float:
    """Feature-map proxy at which ``reference_batch_size`` samples fill ``gb`` GB (nnU-Net's reference value)."""
    return gb * 1e9 / (reference_batch_size * bytes_per_proxy_unit(recompute))


class nnUNetPlannerMedNeXt(ResEncUNetPlanner):
    """Plans for the seed MedNeXt ``mednext_t`` at a GPU memory target (``-gpu_memory_target``, default 8 GB).

    Patch and batch are sized for the execution policy at planning time: selective recompute on (the default) keeps
    a fraction of the maps, so the same target gives larger patches or batches than with
    ``NNUNETV2_MEDNEXT_RECOMPUTE=0``; train with the policy you planned with.
    """

    mednext_variant: ClassVar[str] = "mednext_t"
    mednext_topology: ClassVar[str] = "plan"  # "roy": Roy et al.'s depth and widths (network_from_plans.roy_topology)
    default_plans_name: ClassVar[str] = "nnUNetMedNeXtPlans"

    def __init__(
        self,
        dataset_name_or_id: str | int,
        gpu_memory_target_in_gb: float = 8,
        preprocessor_name: str = "DefaultPreprocessor",
        plans_name: str | None = None,
        overwrite_target_spacing: Sequence[float] | None = None,
        suppress_transpose: bool = False,
    ) -> None:
        super().__init__(
            dataset_name_or_id, gpu_memory_target_in_gb, preprocessor_name, plans_name or self.default_plans_name,
            overwrite_target_spacing, suppress_transpose,
        )
        self.UNet_vram_target_GB = gpu_memory_target_in_gb
        self.UNet_reference_val_corresp_GB = 8
        self.UNet_reference_val_3d = reference_value(8, self.UNet_reference_val_corresp_bs_3d)
        self.UNet_reference_val_2d = reference_value(8, self.UNet_reference_val_corresp_bs_2d)
        self.max_dataset_covered = 1

    def mednext_arch_kwargs(self, plan_arch_kwargs: dict[str, Any]) -> dict[str, Any]:
        return variant_arch_kwargs(self.mednext_variant, plan_arch_kwargs, topology=self.mednext_topology)

    def static_estimate_VRAM_usage(  # type: ignore[override]
        self,
        patch_size: Sequence[int],
        input_channels: int,
        output_channels: int,
        arch_class_name: str,
        arch_kwargs: dict,
        arch_kwargs_req_import: Sequence[str],
    ) -> np.int64:
        """Feature-map proxy of the MedNeXt net on this topology (built on the meta device: no memory used)."""
        kwargs = self.mednext_arch_kwargs(arch_kwargs)
        with torch.device("meta"):
            net = MedNeXtUNet(input_channels=input_channels, num_classes=output_channels, deep_supervision=True, **kwargs)
        return net.compute_conv_feature_map_size(patch_size)

    def get_plans_for_configuration(self, spacing, median_shape, data_identifier, approximate_n_voxels_dataset, _cache):  # type: ignore[no-untyped-def]
        plan = super().get_plans_for_configuration(spacing, median_shape, data_identifier, approximate_n_voxels_dataset, _cache)
        plan["architecture"] = {
            "network_class_name": MEDNEXT_CLASS_PATH,
            "arch_kwargs": self.mednext_arch_kwargs(plan["architecture"]["arch_kwargs"]),
            "_kw_requires_import": ["conv_op"],
        }
        plan["mednext_variant"] = self.mednext_variant
        plan["mednext_topology"] = self.mednext_topology
        return plan


_planners: dict[str, type] = {"nnUNetPlannerMedNeXt": nnUNetPlannerMedNeXt}


def _make(name: str, variant: str, plans_name: str, topology: str = "plan") -> None:
    what = " on Roy et al.'s topology (5 levels, widths 32..512, bottleneck head)" if topology == "roy" else ""
    cls = type(name, (nnUNetPlannerMedNeXt,), {
        "__doc__": f"MedNeXt planner for variant {variant}{what} (plans {plans_name}).", "__module__": __name__,
        "mednext_variant": variant, "default_plans_name": plans_name, "mednext_topology": topology,
    })
    _planners[name] = cls
    globals()[name] = cls


for _v in segmentation_variants():  # one preset per row of the variant table
    _make(planner_name(_v), _v.name, plans_name(_v), topology="roy" if _v.block == "v1" else "plan")

PLANNERS: dict[str, type] = dict(_planners)
__all__ = ["PLANNERS", "nnUNetPlannerMedNeXt", "reference_value", *[n for n in _planners if n != "nnUNetPlannerMedNeXt"]]
