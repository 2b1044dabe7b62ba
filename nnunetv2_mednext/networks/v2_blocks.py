"""MedNeXt-v2 blocks (Roy, Kirchhoff et al., arXiv 2512.17774): the Roy et al. block with a Global Response
Normalization (GRN) after the expansion's GELU.

``MedNeXtV2Block``: depthwise conv -> per-channel norm -> 1x1 expand -> GELU -> GRN -> 1x1 compress, plus the
residual. ``MedNeXtV2Down`` / ``MedNeXtV2Up`` are the strided / transposed forms, with the skips of
:mod:`.v1_blocks` (strided or transposed 1x1 convs).

:class:`GlobalResponseNorm` works on 2D and 3D maps: per sample and channel the L2 norm of the response over all
spatial positions, divided by its mean over the channels, rescales the map; ``gamma`` and ``beta`` start at zero,
so the module is the identity at initialisation. Its reduction spans the whole map: the execution policies
(selective recompute) re-run the branch body, GRN included, over the whole tensor, never per chunk.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from torch import nn

from .layers import ConvOp
from .parts import RoyParts, channel_sum_squares, grn_factor, scale_view
from .v1_blocks import MedNeXtV1Block


class GlobalResponseNorm(nn.Module):
    """``x + gamma * (x * n) + beta`` with ``n_c = ||x_c||_2 / (mean_c ||x_c||_2 + eps)``, per sample.

    ``x``: ``(B, C, *spatial)`` (2D or 3D). ``gamma``, ``beta``: per channel, zero-initialised (identity at init).
    The norms are computed in float32 at least (a sum of squares over a whole 3D patch overflows half precision).
    """

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(channels))
        self.beta = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        acc = x if x.dtype == torch.float64 else x.float()
        sq = channel_sum_squares(acc)
        # the square root clamped at the smallest normal number: a channel that is zero everywhere gets a zero
        # gradient (as ``vector_norm``'s), not NaN
        g = sq.clamp_min(torch.finfo(sq.dtype).tiny).sqrt()
        factor = grn_factor(g, self.gamma.to(g.dtype), self.eps)[1]
        # x + gamma * (x * n) + beta in one pass: x * (1 + gamma * n) + beta
        factor = factor.to(x.dtype).view(*factor.shape, *(1,) * (x.ndim - 2))
        return torch.addcmul(scale_view(self.beta, x.ndim).to(x.dtype), x, factor)


class MedNeXtV2Block(MedNeXtV1Block):
    """``x + PW(GRN(GELU(PW(norm(DW_k x)))))``; strides, transposed form and ``upsample_align`` as
    :class:`~.v1_blocks.MedNeXtV1Block`."""

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
        super().__init__(in_channels, out_channels, exp_ratio, kernel_size, conv_op, do_res, norm, stride, transposed,
                         upsample_align)
        self.grn = GlobalResponseNorm(exp_ratio * in_channels)

    def expand(self, x: torch.Tensor) -> torch.Tensor:
        """The features ``GRN(GELU(PW(norm(DW_k x))))`` that the compression ``conv3`` projects back."""
        return self.grn(super().expand(x))

    def residual_branch(self):
        branch = super().residual_branch()
        return type(branch)(self.expand, self.conv3, (*branch.modules, self.grn))

    def roy_parts(self) -> RoyParts | None:
        """The block layer by layer, GRN included, when its residual is the identity (the fused CPU node)."""
        parts = super().roy_parts()
        return None if parts is None else dataclasses.replace(parts, grn=self.grn)

    def feature_map_channels(self) -> int:
        """As the Roy et al. block, plus the GRN output (one more expanded map)."""
        return super().feature_map_channels() + self.exp_ratio * self.in_channels


class MedNeXtV2Down(MedNeXtV2Block):
    """Downsampling block: strided depthwise conv, expansion, GRN, 1x1 to ``out_channels``; strided 1x1 skip."""

    def __init__(self, in_channels: int, out_channels: int, stride: Sequence[int] | int = 2, **kwargs) -> None:
        super().__init__(in_channels, out_channels, stride=stride, transposed=False, **kwargs)


class MedNeXtV2Up(MedNeXtV2Block):
    """Upsampling block: transposed depthwise conv, expansion, GRN, 1x1; transposed 1x1 skip."""

    def __init__(self, in_channels: int, out_channels: int, stride: Sequence[int] | int = 2, **kwargs) -> None:
        super().__init__(in_channels, out_channels, stride=stride, transposed=True, **kwargs)
