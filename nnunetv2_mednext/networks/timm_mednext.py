"""The MedNeXt classifiers in timm's model registry: ``timm.create_model("mednext_cls_t", num_classes=3, in_chans=1)``.

Importing this module registers every classification variant of :func:`nnunetv2_mednext.networks.list_models` with
timm's public API (``generate_default_cfgs`` + ``register_model``; models are built by ``build_model_with_cfg``, so
they carry a ``pretrained_cfg`` like any timm model). ``import nnunetv2_mednext`` arranges for this module to be
imported as soon as timm is (``nnunetv2_mednext._timm_hook``), so the package itself never pays timm's import time.

There are no pretrained MedNeXt weights: ``pretrained=True`` raises. Pure PyTorch + timm; nothing from nnU-Net.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn

from .registry import CLS_VARIANTS, create_model, list_models

__all__: list[str] = []  # timm's register_model appends every registered name


def _cfg(variant: str) -> dict[str, Any]:
    """timm's data/model config of a variant: 224 px, /32 total stride, ImageNet statistics, no weights."""
    return {
        "url": "", "num_classes": 1000, "input_size": (3, 224, 224), "pool_size": (7, 7), "crop_pct": 0.875,
        "interpolation": "bicubic", "mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD,
        "first_conv": "stem.0", "classifier": "head", "license": "apache-2.0",
        "notes": (f"nnunetv2-mednext seed MedNeXt classifier, dims {CLS_VARIANTS[variant]['dims']}, depths "
                  f"{CLS_VARIANTS[variant]['depths']}; no pretrained weights",) if variant in CLS_VARIANTS else (),
    }


CLASSIFIERS = list_models(task="classification")
default_cfgs = generate_default_cfgs({name: _cfg(name) for name in CLASSIFIERS})


def _create(variant: str, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    if pretrained:
        raise RuntimeError(f"{variant} has no pretrained weights (MedNeXt classifiers train from scratch); "
                           "fix: pretrained=False")
    if kwargs.get("features_only"):
        raise RuntimeError(f"{variant} does not support features_only; fix: use model.forward_features(x)")
    return build_model_with_cfg(partial(create_model, variant), variant, pretrained, **kwargs)


def _entrypoint(variant: str) -> Callable[..., nn.Module]:
    """A module-level function named like the variant (timm registers functions by ``__name__``)."""

    def entry(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        return _create(variant, pretrained, **kwargs)

    entry.__name__ = entry.__qualname__ = variant
    entry.__module__ = __name__
    entry.__doc__ = f"nnunetv2-mednext classifier {variant} (from scratch; kwargs: in_chans, num_classes, ...)."
    return entry


for _variant in CLASSIFIERS:
    globals()[_variant] = register_model(_entrypoint(_variant))
