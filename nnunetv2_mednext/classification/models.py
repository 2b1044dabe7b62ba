"""The networks the trainer builds by name: the MedNeXt classification variants and torchvision ResNet baselines
(random initialisation: no pretrained weights are downloaded)."""

from __future__ import annotations

from typing import Any

from torch import nn

from nnunetv2_mednext.errors import MedNeXtUserError

BASELINES = ("resnet18", "resnet34", "resnet50")


def available_models() -> list[str]:
    from nnunetv2_mednext.networks import list_models

    return list_models(task="classification") + list(BASELINES)


def build_classifier(name: str, in_chans: int, num_classes: int, **kwargs: Any) -> nn.Module:
    """A classifier ``(B, in_chans, H, W) -> (B, num_classes)`` logits."""
    if name in BASELINES:
        return _resnet(name, in_chans, num_classes, **kwargs)
    from nnunetv2_mednext.networks import create_model, list_models

    if name not in list_models(task="classification"):
        raise MedNeXtUserError(f"unknown classifier {name!r}; fix: use one of {', '.join(available_models())}")
    try:
        return create_model(name, in_chans=in_chans, num_classes=num_classes, **kwargs)
    except (TypeError, ValueError) as e:
        raise MedNeXtUserError(f"bad --model-kwargs for {name} ({e}); fix: see MedNeXtClassifier's arguments") from None


def _resnet(name: str, in_chans: int, num_classes: int, **kwargs: Any) -> nn.Module:
    import torchvision

    try:
        model = getattr(torchvision.models, name)(weights=None, num_classes=num_classes, **kwargs)
    except (TypeError, ValueError) as e:
        raise MedNeXtUserError(f"bad --model-kwargs for {name} ({e}); fix: see torchvision's ResNet arguments") from None
    if in_chans != 3:
        old = model.conv1
        model.conv1 = nn.Conv2d(in_chans, old.out_channels, old.kernel_size, old.stride, old.padding, bias=False)
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    return model


def check_buildable(name: str, **kwargs: Any) -> None:
    """Build the network once on the meta device (no memory, no time): bad names or kwargs fail before any work."""
    import torch

    with torch.device("meta"):
        build_classifier(name, 3, 2, **kwargs)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
