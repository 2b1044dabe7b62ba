"""The networks the trainer builds by name: the MedNeXt classification variants (``mednext_cls_t|s|b``) or any
``timm`` model (``resnet18``, ``convnext_atto``, ``efficientnet_b0``, ...), randomly initialised.

timm models get ``in_chans``/``num_classes`` from the data and ``--model-kwargs`` as keyword arguments.
``{"pretrained": true}`` asks timm for its weights (Hugging Face hub or its local cache); when they cannot be
loaded, e.g. offline, training stops with one line. ``resnet18/34/50`` used to be torchvision's; timm's have the
same layers and parameter names, so those checkpoints still load and predict identically (only the random
initialisation of new runs differs: timm zero-initialises the last BatchNorm of each residual block).
"""

from __future__ import annotations

import difflib
import warnings
from typing import Any

import torch
from torch import nn

from nnunetv2_mednext.errors import MedNeXtUserError


def _mednext_models() -> list[str]:
    from nnunetv2_mednext.networks import list_models

    return list_models(task="classification")


def _timm():
    try:
        with warnings.catch_warnings():  # torch's deprecation notes about what timm's import touches, not ours
            warnings.simplefilter("ignore", FutureWarning)
            import timm
    except ImportError as e:  # a dependency of dynamic-network-architectures, hence always there with nnU-Net
        raise MedNeXtUserError(f"timm is not importable ({e}); fix: pip install timm") from None
    return timm


def model_source(name: str) -> str:
    """``"mednext"`` for this package's classifiers, ``"timm"`` for a timm model; one clear line for any other name."""
    if name in _mednext_models():
        return "mednext"
    timm = _timm()
    if timm.is_model(name):
        return "timm"
    candidates = [*_mednext_models(), *timm.list_models()]
    close = difflib.get_close_matches(name.lower(), candidates, n=5, cutoff=0.6)
    hint = f"close matches: {', '.join(close)}" if close else "see timm.list_models() for the timm names"
    raise MedNeXtUserError(f"unknown classifier {name!r} ({hint}); fix: --model mednext_cls_t|s|b or a timm model "
                           "name such as resnet18, convnext_atto, efficientnet_b0")


def build_classifier(name: str, in_chans: int, num_classes: int, **kwargs: Any) -> nn.Module:
    """A classifier ``(B, in_chans, H, W) -> (B, num_classes)`` logits."""
    pretrained = bool(kwargs.pop("pretrained", False))
    if model_source(name) == "mednext":
        if pretrained:
            raise MedNeXtUserError(f"{name} has no pretrained weights; fix: drop \"pretrained\" from --model-kwargs "
                                   "(MedNeXt classifiers train from scratch)")
        from nnunetv2_mednext.networks import create_model

        try:
            return create_model(name, in_chans=in_chans, num_classes=num_classes, **kwargs)
        except (TypeError, ValueError) as e:
            raise MedNeXtUserError(f"bad --model-kwargs for {name} ({e}); fix: see MedNeXtClassifier's arguments") from None
    timm = _timm()
    try:
        return timm.create_model(name, pretrained=pretrained, in_chans=in_chans, num_classes=num_classes, **kwargs)
    except (TypeError, ValueError) as e:
        raise MedNeXtUserError(f"bad --model-kwargs for {name} ({e}); fix: see the arguments of timm's "
                               f"{name.split('.')[0]}") from None
    except Exception as e:
        if not pretrained:
            raise
        reason = " ".join(str(e).split())[:200] or type(e).__name__
        raise MedNeXtUserError(
            f"cannot load the pretrained weights of {name} ({type(e).__name__}: {reason}); fix: train from scratch "
            "(drop \"pretrained\" from --model-kwargs), or fetch the weights into the Hugging Face cache on a machine "
            "that is online"
        ) from None


def check_input(model: nn.Module, name: str, in_chans: int, input_size: int) -> None:
    """One forward pass of a zero image in eval mode: a network that cannot take ``in_chans x S x S`` inputs (e.g. a
    ViT with a fixed image size) stops with one line instead of failing in the first training step."""
    was_training = model.training
    param = next(model.parameters(), None)
    x = torch.zeros(1, in_chans, input_size, input_size, device=param.device if param is not None else None)
    try:
        with torch.no_grad():
            model.eval()(x)
    except (RuntimeError, ValueError, AssertionError) as e:
        reason = " ".join(str(e).split())[:200]
        raise MedNeXtUserError(f"{name} cannot take {in_chans}x{input_size}x{input_size} inputs ({reason}); fix: "
                               "another --input-size, or the model's own size argument (e.g. img_size) in "
                               "--model-kwargs") from None
    finally:
        model.train(was_training)


def check_buildable(name: str, **kwargs: Any) -> None:
    """Build the network once on the meta device (no memory, no time): bad names or kwargs fail before any work."""
    kwargs.pop("pretrained", None)  # weights are never fetched for a dry build
    with torch.device("meta"):
        build_classifier(name, 3, 2, **kwargs)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
