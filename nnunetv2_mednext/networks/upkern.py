"""UpKern: initialise a large-kernel MedNeXt from a trained small-kernel one (Roy et al., MICCAI 2023).

Every tensor whose shape matches is copied. Convolution weights that differ only in their spatial size are
resized with ``F.interpolate`` (bilinear for 2D kernels, trilinear for 3D). Anything else that differs is an error.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn


class UpKernError(ValueError):
    """Raised when a source state dict cannot initialise the target network."""


def upkern_tensor(source: torch.Tensor, target_shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """Resize the spatial dims of a conv weight ``(out, in, *k)`` to ``target_shape``'s spatial dims."""
    ndim = source.ndim - 2
    if ndim not in (2, 3):
        raise UpKernError(f"only 2D/3D conv weights can be resized, got a {source.ndim}-D tensor")
    mode = "bilinear" if ndim == 2 else "trilinear"
    out = F.interpolate(source.float(), size=tuple(target_shape[2:]), mode=mode, align_corners=True)
    return out.to(source.dtype)


def upkern_state_dict(
    source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Return ``(new_state_dict, resized_keys)`` for ``target`` built from ``source``."""
    missing = sorted(set(target) - set(source))
    unexpected = sorted(set(source) - set(target))
    if missing or unexpected:
        raise UpKernError(
            "source and target networks differ in structure (same variant, different kernel expected); "
            f"missing in source: {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected in source: {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
        )
    new, resized = {}, []
    for key, tgt in target.items():
        src = source[key]
        if src.shape == tgt.shape:
            new[key] = src.detach().clone()
        elif src.ndim == tgt.ndim and src.ndim in (4, 5) and src.shape[:2] == tgt.shape[:2]:
            new[key] = upkern_tensor(src.detach(), tgt.shape)
            resized.append(key)
        else:
            raise UpKernError(
                f"shape mismatch at {key!r}: source {tuple(src.shape)} vs target {tuple(tgt.shape)}; only the spatial "
                "size of convolution kernels may differ (train the k3 model with the same plans and variant)"
            )
    return new, resized


def upkern_load(target: nn.Module, source: nn.Module | Mapping[str, torch.Tensor]) -> list[str]:
    """Initialise ``target`` in place from ``source`` (module or state dict); returns the resized keys."""
    src = source.state_dict() if isinstance(source, nn.Module) else source
    new, resized = upkern_state_dict(src, target.state_dict())
    target.load_state_dict(new, strict=True)
    return resized
