"""Roy et al. MedNeXt (MICCAI 2023) blocks, "MedNeXtV1" in this package.

``MedNeXtV1Block``: depthwise kxk(xk) conv -> per-channel GroupNorm -> 1x1 expand (ratio R) -> GELU -> 1x1
compress, plus the residual. ``MedNeXtV1Down`` uses a strided depthwise conv and a strided 1x1 skip;
``MedNeXtV1Up`` a transposed depthwise conv and a transposed 1x1 skip. Strides may be anisotropic
(e.g. ``(1, 2, 2)``).

Up-sampling alignment (``upsample_align``) decides where a coarse voxel lands on the fine grid:

* ``"start"`` (default, Roy et al.'s code): the transposed convs run without output padding, so an axis of size
  ``n`` with stride ``s`` becomes ``s * (n - 1) + 1``; the whole block (norm included) runs on that grid, and block
  output and residual are then zero-padded by ``s - 1`` voxels at the *start* of each strided axis. Coarse voxel
  ``i`` lands at fine index ``s * i + s - 1``.
* ``"end"`` (this package before it matched the official code): ``output_padding = s - 1``, so the convs produce
  ``s * n`` voxels directly, coarse voxel ``i`` lands at ``s * i`` and the last voxel along each strided axis comes
  from the convs' biases and kernel tails.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import execution
from .layers import ConvOp, LayerNormChannelsFirst, conv_layer, make_norm, pointwise, same_padding, transposed_conv_op
from .parts import ResidualBranch, RoyParts

UPSAMPLE_ALIGNS = ("start", "end")


def check_upsample_align(value: str) -> str:
    """Validate an ``upsample_align`` value."""
    if value not in UPSAMPLE_ALIGNS:
        raise ValueError(f"upsample_align must be one of {UPSAMPLE_ALIGNS}, got {value!r}")
    return value


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
        upsample_align: str = "start",
    ) -> None:
        super().__init__()
        out_channels = out_channels or in_channels
        ndim = 2 if conv_op is nn.Conv2d else 3
        kernel = (kernel_size,) * ndim if isinstance(kernel_size, int) else tuple(kernel_size)
        stride_t = (stride,) * ndim if isinstance(stride, int) else tuple(stride)
        padding = same_padding(kernel)
        self.upsample_align = check_upsample_align(upsample_align)
        # "end": the transposed convs restore s * n voxels themselves; "start": s * (n - 1) + 1, then padded
        out_pad = tuple(s - 1 for s in stride_t) if transposed and upsample_align == "end" else (0,) * ndim
        self.start_pad: tuple[int, ...] = ()
        if transposed and upsample_align == "start" and any(s > 1 for s in stride_t):
            # F.pad order: last axis first, (before, after) per axis
            self.start_pad = tuple(v for s in reversed(stride_t) for v in (s - 1, 0))
        if transposed:
            tconv = transposed_conv_op(conv_op)
            self.conv1: nn.Module = tconv(
                in_channels, in_channels, kernel, stride=stride_t, padding=padding,
                output_padding=out_pad, groups=in_channels, bias=False,
            )
        else:
            self.conv1 = conv_layer(
                conv_op, in_channels, in_channels, kernel, stride=stride_t, padding=padding, groups=in_channels,
                bias=False,
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
                    in_channels, out_channels, 1, stride=stride_t, output_padding=out_pad
                )
            else:
                self.res_conv = conv_layer(conv_op, in_channels, out_channels, 1, stride=stride_t)
        self.in_channels, self.out_channels, self.exp_ratio = in_channels, out_channels, exp_ratio

    def expand(self, x: torch.Tensor) -> torch.Tensor:
        """The expanded features ``GELU(PW(GN(DW_k x)))`` that the compression ``conv3`` projects back."""
        return self.act(self.conv2(self.norm(self.conv1(x))))

    def residual_branch(self) -> ResidualBranch:
        """The branch ``conv3(expand(x))`` (no layer scale, no drop path), for the execution policies."""
        return ResidualBranch(self.expand, self.conv3, (self.conv1, self.norm, self.conv2, self.act))

    def roy_parts(self) -> RoyParts | None:
        """The block layer by layer when its residual is the identity (no strided, transposed or widening skip)."""
        if not self.do_res or self.res_conv is not None or self.start_pad:
            return None
        return RoyParts(self.conv1, self.norm, self.conv2, self.act, self.conv3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = execution.fused_roy(self.roy_parts(), x)
        if out is not None:
            return out
        h = execution.branch(self.residual_branch(), x)
        if self.do_res:
            h = h + (x if self.res_conv is None else self.res_conv(x))
        if self.start_pad:  # zero-padding is linear: padding the sum equals padding branch and residual apiece
            h = F.pad(h, self.start_pad)
        return h

    def feature_map_channels(self) -> int:
        """Channels of the intermediate maps at the block's output resolution (memory proxy, per voxel)."""
        return 2 * self.in_channels + 2 * self.exp_ratio * self.in_channels + 2 * self.out_channels

    def kept_channels(self) -> int:
        """Channels per voxel (of its input) a training step keeps for backward when the branch is recomputed:
        the block input only."""
        return self.in_channels

    def recompute_channels(self) -> int:
        """Channels per voxel of the maps its branch re-creates in backward (the recompute's working set)."""
        return self.feature_map_channels()


class MedNeXtV1Down(MedNeXtV1Block):
    """Downsampling block: strided depthwise conv (C -> C), expansion, 1x1 to ``out_channels``; strided 1x1 skip."""

    def __init__(self, in_channels: int, out_channels: int, stride: Sequence[int] | int = 2, **kwargs) -> None:
        super().__init__(in_channels, out_channels, stride=stride, transposed=False, **kwargs)


class MedNeXtV1Up(MedNeXtV1Block):
    """Upsampling block: transposed depthwise conv, expansion, 1x1; transposed 1x1 skip (``stride`` x size).

    ``upsample_align`` (``"start"``, Roy et al.; or ``"end"``) places the coarse grid on the fine one, see the module
    docstring.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: Sequence[int] | int = 2, **kwargs) -> None:
        super().__init__(in_channels, out_channels, stride=stride, transposed=True, **kwargs)


_RESETTABLE = (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear, nn.GroupNorm,
               nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm)


def pytorch_default_init(module: nn.Module, is_head: bool = False) -> None:
    """PyTorch's default init of one layer, as Roy et al.'s code leaves its network (it never re-initialises).

    ``is_head``: a 1x1 segmentation head. The official heads are 1x1 *transposed* convs, for which PyTorch counts
    ``fan_in = num_classes`` (the weight is stored ``(in, out, 1..)``); ours are plain 1x1 convs (same function,
    transposed weight), so their weight and bias are drawn from the official ``U(+-1/sqrt(num_classes))``.
    """
    if is_head and isinstance(module, (nn.Conv2d, nn.Conv3d)):
        bound = 1.0 / math.sqrt(module.out_channels * math.prod(module.kernel_size))
        nn.init.uniform_(module.weight, -bound, bound)
        if module.bias is not None:
            nn.init.uniform_(module.bias, -bound, bound)
    elif isinstance(module, _RESETTABLE):
        module.reset_parameters()
    elif isinstance(module, LayerNormChannelsFirst):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
