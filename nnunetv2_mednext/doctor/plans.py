"""Synthetic nnU-Net plans for the device check (and ``benchmarks/bench_networks.py``).

A plan here is what nnU-Net's default planner writes for an isotropic patch: pool by 2 on every axis until the
feature map edge reaches 4, features 32 doubling up to 320 (3D) or 512 (2D), and nnU-Net's ``PlainConvUNet``
architecture. MedNeXt trainers take the topology from such a plan exactly as they do from a real one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from nnunetv2_mednext.nnunet.trainers.plans_defaults import default_resampling

PLAIN_CLASS = "dynamic_network_architectures.architectures.unet.PlainConvUNet"


def synthetic_topology(patch: Sequence[int], n_stages: int | None = None, max_features: int | None = None) -> dict:
    """Stages, features, kernels and strides nnU-Net's planner gives an isotropic ``patch`` (edge 4 at the bottom)."""
    dims = len(patch)
    if dims not in (2, 3):
        raise ValueError(f"patch must have 2 or 3 axes, got {list(patch)}")
    if n_stages is None:
        n_stages = 1 + max(0, math.floor(math.log2(min(patch) / 4)))
    cap = max_features if max_features is not None else (320 if dims == 3 else 512)
    return {
        "n_stages": n_stages,
        "features_per_stage": [min(32 * 2**i, cap) for i in range(n_stages)],
        "conv_op": f"torch.nn.modules.conv.Conv{dims}d",
        "kernel_sizes": [[3] * dims] * n_stages,
        "strides": [[1] * dims] + [[2] * dims] * (n_stages - 1),
    }


def plain_unet_arch_kwargs(topology: dict) -> tuple[dict, list[str]]:
    """nnU-Net's default ``PlainConvUNet`` ``arch_kwargs`` (and the keys to import) for a topology."""
    dims = len(topology["strides"][0])
    n = topology["n_stages"]
    kwargs = {
        **topology,
        "n_conv_per_stage": [2] * n,
        "n_conv_per_stage_decoder": [2] * (n - 1),
        "conv_bias": True,
        "norm_op": f"torch.nn.modules.instancenorm.InstanceNorm{dims}d",
        "norm_op_kwargs": {"eps": 1e-5, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    }
    return kwargs, ["conv_op", "norm_op", "dropout_op", "nonlin"]


def synthetic_plans(configurations: dict[str, dict], num_classes: int = 3,
                    dataset_name: str = "Dataset999_DeviceCheck") -> tuple[dict, dict]:
    """An nnU-Net plans dict (``PlainConvUNet`` architecture) and its ``dataset.json`` for synthetic shapes.

    ``configurations`` maps a name (``3d_fullres``, ``2d``) to ``{"patch": [...], "batch_size": int}`` and
    optionally ``n_stages``. Labels are background plus ``num_classes - 1`` foreground classes, one input channel.
    """
    configs = {}
    for name, spec in configurations.items():
        patch = [int(p) for p in spec["patch"]]
        topo = synthetic_topology(patch, spec.get("n_stages"))
        kwargs, imports = plain_unet_arch_kwargs(topo)
        configs[name] = {
            "data_identifier": f"nnUNetPlans_{name}",
            "preprocessor_name": "DefaultPreprocessor",
            "batch_size": int(spec["batch_size"]),
            "patch_size": patch,
            "median_image_size_in_voxels": [2 * p for p in patch],
            "spacing": [1.0] * len(patch),
            "normalization_schemes": ["ZScoreNormalization"],
            "use_mask_for_norm": [False],
            **default_resampling(),
            "architecture": {"network_class_name": PLAIN_CLASS, "arch_kwargs": kwargs, "_kw_requires_import": imports},
            "batch_dice": name.startswith("3d"),
        }
    plans = {
        "dataset_name": dataset_name,
        "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": [1.0, 1.0, 1.0],
        "original_median_shape_after_transp": [256, 256, 256],
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "configurations": configs,
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {
            "0": {"max": 4.0, "mean": 0.0, "median": 0.0, "min": -4.0, "percentile_00_5": -2.6,
                  "percentile_99_5": 2.6, "std": 1.0}
        },
    }
    labels = {"background": 0, **{f"class{i}": i for i in range(1, num_classes)}}
    dataset_json = {"channel_names": {"0": "synthetic"}, "labels": labels, "numTraining": 0, "file_ending": ".nii.gz",
                    "name": dataset_name}
    return plans, dataset_json
