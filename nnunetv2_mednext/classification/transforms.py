"""Augmentations for medical 2D images (torchvision.transforms.v2) on uint8 ``(C, S, S)`` tensors, and the one
normalisation used everywhere (training, validation, ``predict``) so their numbers agree exactly.

default: random resized crop (scale 0.8-1, aspect 0.9-1.1), horizontal flip, affine (+-15 deg, 5 % shift, 0.95-1.05
scale), brightness/contrast jitter 0.2. light: horizontal flip and +-10 deg. Saturation/hue jitter only with
``color_jitter`` on colour input; grey images never get colour jitter. No vertical flips (anatomy has an up).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def build_augmentation(input_size: int, augment: str = "default", colour: bool = False, color_jitter: bool = False):
    """A callable uint8 tensor -> uint8 tensor, or ``None`` for ``augment='none'``."""
    if augment == "none":
        return None
    from torchvision.transforms import v2

    if augment == "light":
        return v2.Compose([v2.RandomHorizontalFlip(), v2.RandomRotation(10)])
    jitter = colour and color_jitter
    return v2.Compose([
        v2.RandomResizedCrop(input_size, scale=(0.8, 1.0), ratio=(0.9, 1.1), antialias=True),
        v2.RandomHorizontalFlip(),
        v2.RandomAffine(degrees=15, translate=(0.05, 0.05), scale=(0.95, 1.05)),
        v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2 if jitter else None, hue=0.05 if jitter else None),
    ])


def normalize_batch(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 batch ``(B, C, S, S)`` -> float32 ``(x / 255 - mean) / std``."""
    m = torch.tensor(list(mean), dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(list(std), dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    return (x.float() / 255.0 - m) / s
