"""Roy et al. MedNeXt (MICCAI 2023) blocks, "MedNeXtV1" in this package.

``MedNeXtV1Block``: depthwise kxk(xk) conv -> per-channel GroupNorm -> 1x1 expand (ratio R) -> GELU -> 1x1
compress, plus the residual. ``MedNeXtV1Down`` uses a strided depthwise conv and a strided 1x1 skip;
``MedNeXtV1Up`` a transposed depthwise conv and a transposed 1x1 skip. Strides may be anisotropic
(e.g. ``(1, 2, 2)``); transposed convs use ``output_padding = stride - 1`` so they restore exactly
``stride * size``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .layers import ConvOp, make_norm, pointwise, same_padding, transposed_conv_op


class MedNeXtV1Block(nn.Module):
    """ConvNeXt-style block: ``x + PW(GELU(PW(GN(DW_k x))))`` (no activation between DW and expansion).

    The depthwise conv has no bias: the per-channel norm right after it would cancel it (zero gradient).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int | None = None,
        exp_ratio: int = 4,
        kernel_size: Sequence[int] | int = 3,
        conv_op: ConvOp = nn.Conv2d,
        do_res: bool = True,
        norm: str = "instance",
        stride: Sequence[int] | int = 1,
        transposed: bool = False,
    ) -> None:
        super().__init__()
        out_channels = out_channels or in_channels
        ndim = 2 if conv_op is nn.Conv2d else 3
        kernel = (kernel_size,) * ndim if isinstance(kernel_size, int) else tuple(kernel_size)
        stride_t = (stride,) * ndim if isinstance(stride, int) else tuple(stride)
        padding = same_padding(kernel)
        if transposed:
            tconv = transposed_conv_op(conv_op)
            out_pad = tuple(s - 1 for s in stride_t)
            self.conv1: nn.Module = tconv(
                in_channels, in_channels, kernel, stride=stride_t, padding=padding,
                output_padding=out_pad, groups=in_channels, bias=False,
            )
        else:
            self.conv1 = conv_op(
                in_channels, in_channels, kernel, stride=stride_t, padding=padding, groups=in_channels, bias=False
            )
        self.norm = make_norm(norm, in_channels, conv_op)
        self.conv2 = pointwise(conv_op, in_channels, exp_ratio * in_channels)
        self.act = nn.GELU()
        self.conv3 = pointwise(conv_op, exp_ratio * in_channels, out_channels)
        self.do_res = do_res
        self.res_conv: nn.Module | None = None
        if do_res and (in_channels != out_channels or any(s != 1 for s in stride_t)):
            if transposed:
                self.res_conv = transposed_conv_op(conv_op)(
                    in_channels, out_channels, 1, stride=stride_t, output_padding=tuple(s - 1 for s in stride_t)
                )
            else:
                self.res_conv = conv_op(in_channels, out_channels, 1, stride=stride_t)
        self.in_channels, self.out_channels, self.exp_ratio = in_channels, out_channels, exp_ratio

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv3(self.act(self.conv2(self.norm(self.conv1(x)))))
        if not self.do_res:
            return h
        res = x if self.res_conv is None else self.res_conv(x)
        return h + res

    def feature_map_channels(self) -> int:
        """Channels of the intermediate maps at the block's output resolution (memory proxy, per voxel)."""
        return 2 * self.in_channels + 2 * self.exp_ratio * self.in_channels + 2 * self.out_channels


class MedNeXtV1Down(MedNeXtV1Block):
    """Downsampling block: strided depthwise conv (C -> C), expansion, 1x1 to ``out_channels``; strided 1x1 skip."""

    def __init__(self, in_channels: int, out_channels: int, stride: Sequence[int] | int = 2, **kwargs) -> None:
        super().__init__(in_channels, out_channels, stride=stride, transposed=False, **kwargs)


class MedNeXtV1Up(MedNeXtV1Block):
    """Upsampling block: transposed depthwise conv (exact ``stride``x size), expansion, 1x1; transposed 1x1 skip."""

    def __init__(self, in_channels: int, out_channels: int, stride: Sequence[int] | int = 2, **kwargs) -> None:
        super().__init__(in_channels, out_channels, stride=stride, transposed=True, **kwargs)
