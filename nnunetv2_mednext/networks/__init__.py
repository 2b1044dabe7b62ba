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
from .seed_blocks import LinearAttentionFFN, MedNeXtBlock, SmoothDWFFN, SpatialEncodingModule
from .segmentation import MedNeXtUNet
from .upkern import UpKernError, upkern_load, upkern_state_dict
from .v1_blocks import MedNeXtV1Block, MedNeXtV1Down, MedNeXtV1Up

__all__ = [
    "CLS_VARIANTS",
    "SEG_VARIANTS",
    "LinearAttentionFFN",
    "MedNeXtBlock",
    "MedNeXtClassifier",
    "MedNeXtUNet",
    "MedNeXtV1Block",
    "MedNeXtV1Down",
    "MedNeXtV1Up",
    "SegVariant",
    "SmoothDWFFN",
    "SpatialEncodingModule",
    "UnknownVariantError",
    "UpKernError",
    "create_model",
    "get_seg_variant",
    "list_models",
    "model_task",
    "reference_topology",
    "register_model",
    "upkern_load",
    "upkern_state_dict",
]
