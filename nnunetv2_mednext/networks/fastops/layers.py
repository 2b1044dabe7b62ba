"""Fast layers: ``nn.Conv2d``/``Conv3d``/``ConvTranspose*``/``GroupNorm`` subclasses that run the kernels of
:mod:`.kernels` where they apply (same parameters, ``state_dict`` keys and function as the plain class).

The networks build these classes directly (``networks.layers``); with fast ops off they are the plain layers.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .kernels import (
    conv_kind,
    depthwise_conv,
    instance_norm,
    pointwise_conv,
    strided_depthwise_forward,
    strided_depthwise_fusable,
)
from .switch import channels_last_setting, channels_last_wanted, cl_format, fast_ops_enabled, is_channels_last


def _conv_forward(conv: nn.Conv2d | nn.Conv3d, x: torch.Tensor,
                  plain: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    if not fast_ops_enabled():
        y = plain(x)
        # NNUNETV2_MEDNEXT_CHANNELS_LAST=1 on the plain path: a one-channel input is channels-last and -first at once,
        # and the backend may answer channels-first; keep the layout the setting asks for
        if channels_last_setting() and is_channels_last(x) and not is_channels_last(y):
            return y.contiguous(memory_format=cl_format(x.ndim))
        return y
    kind = conv_kind(conv)
    if kind == "pointwise":
        return pointwise_conv(x, conv.weight, conv.bias)
    if kind == "strided_pointwise":
        return pointwise_conv(x, conv.weight, conv.bias, conv.stride)
    if kind == "depthwise":
        return depthwise_conv(x, conv.weight, conv.bias, conv.padding, conv.dilation)  # type: ignore[arg-type]
    if strided_depthwise_fusable(conv, x):
        return strided_depthwise_forward(conv, x)
    y = plain(x)
    # a one-channel input is channels-last and channels-first at once, and oneDNN then answers channels-first:
    # keep the activations channels-last, or every layer after this one leaves the fast paths
    if channels_last_wanted(x.device) and is_channels_last(x) and not is_channels_last(y):
        return y.contiguous(memory_format=cl_format(x.ndim))
    return y


class FastConv2d(nn.Conv2d):
    """``nn.Conv2d`` whose pointwise and depthwise configurations run through the fast paths."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _conv_forward(self, x, super().forward)


class FastConv3d(nn.Conv3d):
    """``nn.Conv3d`` whose pointwise and depthwise configurations run through the fast paths."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _conv_forward(self, x, super().forward)


def _transposed_forward(conv: nn.ConvTranspose2d | nn.ConvTranspose3d, x: torch.Tensor,
                        output_size: list[int] | None,
                        plain: Callable[[torch.Tensor, list[int] | None], torch.Tensor]) -> torch.Tensor:
    if (
        fast_ops_enabled()
        and x.device.type == "cpu"
        and all(k == 1 for k in conv.kernel_size)
        and any(s != 1 for s in conv.stride)
        and is_channels_last(x)
    ):
        # PyTorch 2.14 crashes in the channels-last backward of a strided 1x1 transposed conv on CPU
        return plain(x.contiguous(), output_size).contiguous(memory_format=cl_format(x.ndim))
    if output_size is None and strided_depthwise_fusable(conv, x):
        return strided_depthwise_forward(conv, x)
    return plain(x, output_size)


class FastConvTranspose2d(nn.ConvTranspose2d):
    """``nn.ConvTranspose2d`` with the strided depthwise path, clear of a channels-last CPU crash (strided 1x1)."""

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        return _transposed_forward(self, x, output_size, super().forward)


class FastConvTranspose3d(nn.ConvTranspose3d):
    """``nn.ConvTranspose3d`` with the strided depthwise path, clear of a channels-last CPU crash (strided 1x1)."""

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        return _transposed_forward(self, x, output_size, super().forward)


class FastGroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` with the channels-last instance-norm path."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return instance_norm(x, self.num_groups, self.weight, self.bias, self.eps)
