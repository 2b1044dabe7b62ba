"""Dimension-agnostic building blocks shared by every MedNeXt network (pure PyTorch)."""

from __future__ import annotations

import math
import pydoc
from collections.abc import Sequence

import torch
from torch import nn

from .fastops import FastConv2d, FastConv3d, FastConvTranspose2d, FastConvTranspose3d, FastGroupNorm
from .parts import scale_view

ConvOp = type[nn.Conv2d] | type[nn.Conv3d]

NORM_TYPES = ("batch", "instance", "group", "layer")


def resolve_conv_op(conv_op: ConvOp | str | int) -> ConvOp:
    """Return ``nn.Conv2d``/``nn.Conv3d`` from a class, a dotted path (as in nnU-Net plans) or a dimension."""
    if isinstance(conv_op, int):
        if conv_op not in (2, 3):
            raise ValueError(f"spatial dimension must be 2 or 3, got {conv_op}")
        return nn.Conv2d if conv_op == 2 else nn.Conv3d
    if isinstance(conv_op, str):
        located = pydoc.locate(conv_op)
        if located is None:
            raise ValueError(f"conv_op {conv_op!r} cannot be imported; use 'torch.nn.Conv2d' or 'torch.nn.Conv3d'")
        conv_op = located  # type: ignore[assignment]
    if conv_op not in (nn.Conv2d, nn.Conv3d):
        raise ValueError(f"conv_op must be torch.nn.Conv2d or torch.nn.Conv3d, got {conv_op!r}")
    return conv_op  # type: ignore[return-value]


def spatial_dims(conv_op: ConvOp) -> int:
    """2 for ``nn.Conv2d``, 3 for ``nn.Conv3d``."""
    return 2 if conv_op is nn.Conv2d else 3


def transposed_conv_op(conv_op: ConvOp) -> type[nn.ConvTranspose2d] | type[nn.ConvTranspose3d]:
    """The transposed convolution class matching ``conv_op`` (the fast layer class, a subclass of it)."""
    return FastConvTranspose2d if conv_op is nn.Conv2d else FastConvTranspose3d


def conv_layer(conv_op: ConvOp, *args: object, **kwargs: object) -> nn.Conv2d | nn.Conv3d:
    """A convolution of ``conv_op``'s dimension, built as the fast layer class (``networks.fastops.layers``:
    same parameters and function, faster kernels on CPU)."""
    cls = FastConv2d if conv_op is nn.Conv2d else FastConv3d
    return cls(*args, **kwargs)  # type: ignore[arg-type]


def as_tuple(value: int | Sequence[int], ndim: int, name: str = "value") -> tuple[int, ...]:
    """Broadcast an int to ``ndim`` entries, or check a sequence has ``ndim`` entries."""
    if isinstance(value, int):
        return (value,) * ndim
    out = tuple(int(v) for v in value)
    if len(out) != ndim:
        raise ValueError(f"{name} must have {ndim} entries, got {list(out)}")
    return out


def masked_kernel(kernel: int, active: Sequence[bool]) -> tuple[int, ...]:
    """A kernel of size ``kernel`` on active axes and 1 on inactive ones (anisotropic plans)."""
    return tuple(kernel if a else 1 for a in active)


def same_padding(kernel: Sequence[int], dilation: int = 1) -> tuple[int, ...]:
    """Padding that keeps the spatial size for odd kernels."""
    return tuple(dilation * (k - 1) // 2 for k in kernel)


def depthwise(conv_op: ConvOp, channels: int, kernel: Sequence[int], dilation: int = 1) -> nn.Module:
    """Depthwise convolution with 'same' padding; an all-ones kernel returns ``nn.Identity``."""
    if all(k == 1 for k in kernel):
        return nn.Identity()
    return conv_layer(
        conv_op,
        channels,
        channels,
        tuple(kernel),
        padding=same_padding(kernel, dilation),
        dilation=dilation,
        groups=channels,
    )


def pointwise(conv_op: ConvOp, c_in: int, c_out: int, bias: bool = True) -> nn.Module:
    """1x1(x1) convolution."""
    return conv_layer(conv_op, c_in, c_out, 1, bias=bias)


class LayerNormChannelsFirst(nn.Module):
    """LayerNorm over the channel axis of a ``(B, C, *spatial)`` tensor."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) * torch.rsqrt(var + self.eps)
        shape = (1, -1) + (1,) * (x.ndim - 2)
        return x * self.weight.view(shape) + self.bias.view(shape)


def make_norm(kind: str, channels: int, conv_op: ConvOp) -> nn.Module:
    """Normalisation layer by name.

    ``batch``: BatchNorm; ``instance``: per-channel GroupNorm (affine instance norm, batch-size independent);
    ``group``: GroupNorm with 1 group (layer norm over C and space); ``layer``: channels-first LayerNorm.
    """
    if kind == "batch":
        return nn.BatchNorm2d(channels) if conv_op is nn.Conv2d else nn.BatchNorm3d(channels)
    if kind == "instance":
        return FastGroupNorm(channels, channels)
    if kind == "group":
        return FastGroupNorm(1, channels)
    if kind == "layer":
        return LayerNormChannelsFirst(channels)
    raise ValueError(f"unknown norm {kind!r}; choose one of {', '.join(NORM_TYPES)}")


class DropPath(nn.Module):
    """Stochastic depth: drops the whole residual branch per sample during training."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop path rate must be in [0, 1), got {p}")
        self.p = p

    def factor(self, x: torch.Tensor) -> torch.Tensor | None:
        """Per-sample factor ``(B, 1, ...)`` of the branch ``x``: 0 (dropped) or ``1 / keep``; None when inactive."""
        if self.p == 0.0 or not self.training:
            return None
        keep = 1.0 - self.p
        return x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep).div_(keep)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        factor = self.factor(x)
        return x if factor is None else x * factor

    def extra_repr(self) -> str:
        return f"p={self.p}"


class LayerScale(nn.Module):
    """Learnable per-channel scale (``gamma``) of a residual branch."""

    def __init__(self, channels: int, init: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((channels,), float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * scale_view(self.gamma, x.ndim)


def init_weights(module: nn.Module) -> None:
    """Weight init shared by every MedNeXt network.

    * ``Conv2d``/``Conv3d``: zero-mean normal with std ``sqrt(2 / fan_out)``, ``fan_out = prod(kernel) *
      out_channels / groups`` (He init in fan-out mode, counted per group as the VAN/SegNeXt designs do). A
      depthwise kernel therefore starts with gain ~sqrt(2) instead of vanishing: the SEM chains up to three
      depthwise convs before a multiplicative gate, and a fixed small std (0.02) left their kernels with gradients of
      ~1e-10 at init, which AdamW with ``eps=1e-4`` never moved.
    * ``Linear`` and transposed convs: truncated normal, std 0.02 (every transposed conv here feeds a norm or a
      residual sum, so its scale is not critical).
    * Biases zero; norm layers weight 1, bias 0.
    """
    if isinstance(module, (nn.Conv2d, nn.Conv3d)):
        fan_out = math.prod(module.kernel_size) * module.out_channels // module.groups
        nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear)):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.BatchNorm2d, nn.BatchNorm3d, nn.GroupNorm, nn.LayerNorm, LayerNormChannelsFirst)):
        if module.weight is not None:
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
