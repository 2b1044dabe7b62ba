"""MedNeXt networks (pure PyTorch; nothing here imports nnU-Net)."""

from .classification import MedNeXtClassifier
from .registry import (
    CLS_VARIANTS,
    SEG_VARIANTS,
    SegVariant,
    UnknownVariantError,
    create_model,
    get_seg_variant,
    list_models,
    model_task,
    reference_topology,
    register_model,
)
from .roy_weights import RoyWeightsError, check_roy_layout, load_roy_state_dict, roy_key_map, roy_state_dict
from .seed_blocks import LinearAttentionFFN, MedNeXtBlock, SmoothDWFFN, SpatialEncodingModule
from .segmentation import MedNeXtUNet
from .upkern import UpKernError, upkern_load, upkern_state_dict
from .v1_blocks import UPSAMPLE_ALIGNS, MedNeXtV1Block, MedNeXtV1Down, MedNeXtV1Up
from .v2_blocks import GlobalResponseNorm, MedNeXtV2Block, MedNeXtV2Down, MedNeXtV2Up

__all__ = [
    "CLS_VARIANTS",
    "SEG_VARIANTS",
    "UPSAMPLE_ALIGNS",
    "GlobalResponseNorm",
    "LinearAttentionFFN",
    "MedNeXtBlock",
    "MedNeXtClassifier",
    "MedNeXtUNet",
    "MedNeXtV1Block",
    "MedNeXtV1Down",
    "MedNeXtV1Up",
    "MedNeXtV2Block",
    "MedNeXtV2Down",
    "MedNeXtV2Up",
    "RoyWeightsError",
    "SegVariant",
    "SmoothDWFFN",
    "SpatialEncodingModule",
    "UnknownVariantError",
    "UpKernError",
    "check_roy_layout",
    "create_model",
    "get_seg_variant",
    "list_models",
    "load_roy_state_dict",
    "model_task",
    "reference_topology",
    "register_model",
    "roy_key_map",
    "roy_state_dict",
    "upkern_load",
    "upkern_state_dict",
]
