"""The seed paper's blocks (Xue et al., PLOS ONE 2026), as reconstructed in docs/architecture.md.

* :class:`SpatialEncodingModule` (SEM): multi-scale large-kernel depthwise context that modulates its input.
* :class:`LinearAttentionFFN` (LA-FFN): an FFN whose hidden features are gated by large-kernel depthwise attention.
* :class:`SmoothDWFFN` (SDW-FFN): an FFN with a residual 3x3 depthwise convolution in the hidden space.
* :class:`MedNeXtBlock`: pre-norm residual composition of the three (option ``"A"``) or of SEM + SDW-FFN
  (option ``"B"``, with LA-FFN only where ``use_la_ffn`` is set).

Every op works for 2D and 3D (``conv_op``). ``active_axes`` marks the spatial axes along which large kernels
extend; inactive axes (kernel 1 in an anisotropic nnU-Net plan) get kernel 1, and the SEM strips become one
strip per active axis.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from . import execution
from .layers import ConvOp, DropPath, LayerScale, depthwise, make_norm, masked_kernel, pointwise, spatial_dims
from .parts import FFNParts, ResidualBranch

DEFAULT_SEM_KERNELS: tuple[int, ...] = (5, 7, 11, 21)
DEFAULT_LA_KERNELS: tuple[int, int, int] = (5, 7, 3)


def _all_active(conv_op: ConvOp) -> tuple[bool, ...]:
    return (True,) * spatial_dims(conv_op)


class SpatialEncodingModule(nn.Module):
    """SEM: ``PW(PW(a0 + sum_k strips_k(a0)) * u)`` with ``u = GELU(PW x)`` and ``a0 = DW_local(u)``.

    ``kernels[0]`` is the local depthwise kernel, ``kernels[1:]`` the strip lengths (one branch each).
    """

    def __init__(
        self,
        channels: int,
        conv_op: ConvOp = nn.Conv2d,
        kernels: Sequence[int] = DEFAULT_SEM_KERNELS,
        active_axes: Sequence[bool] | None = None,
    ) -> None:
        super().__init__()
        if len(kernels) < 1 or any(k < 1 or k % 2 == 0 for k in kernels):
            raise ValueError(f"SEM kernels must be odd positive ints, got {list(kernels)}")
        active = tuple(active_axes) if active_axes is not None else _all_active(conv_op)
        ndim = len(active)
        self.proj_in = pointwise(conv_op, channels, channels)
        self.act = nn.GELU()
        self.local = depthwise(conv_op, channels, masked_kernel(kernels[0], active))
        self.branches = nn.ModuleList()
        for k in kernels[1:]:
            strips = []
            for axis in range(ndim):
                if not active[axis] or k == 1:
                    continue
                kernel = tuple(k if a == axis else 1 for a in range(ndim))
                strips.append(depthwise(conv_op, channels, kernel))
            if strips:
                self.branches.append(nn.Sequential(*strips))
        self.mix = pointwise(conv_op, channels, channels)
        self.proj_out = pointwise(conv_op, channels, channels)

    @property
    def proj(self) -> nn.Module:
        """The output projection: ``forward(x) == proj(body(x))``."""
        return self.proj_out

    def ffn_layers(self) -> None:
        """Not an FFN: the SEM has no fused FFN form (its branch is recomputed, or runs plain)."""
        return None

    def body(self, x: torch.Tensor) -> torch.Tensor:
        """Everything before the output projection: ``PW(a0 + sum_k strips_k(a0)) * u``."""
        u = self.act(self.proj_in(x))
        a0 = self.local(u)
        att = a0
        for branch in self.branches:
            att = att + branch(a0)
        return self.mix(att) * u

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj_out(self.body(x))

    def feature_map_channels(self) -> int:
        """Channel count of all intermediate maps (memory proxy, per voxel)."""
        c = self.proj_in.out_channels
        n_strips = sum(len(b) for b in self.branches)
        return c * (6 + n_strips + len(self.branches))


class LinearAttentionFFN(nn.Module):
    """LA-FFN: ``PW(h * DW_dilated(DW_local(h)))`` with ``h = GELU(PW(C -> rC) x)`` (large-kernel attention)."""

    def __init__(
        self,
        channels: int,
        exp_ratio: float = 4,
        conv_op: ConvOp = nn.Conv2d,
        kernels: Sequence[int] = DEFAULT_LA_KERNELS,
        active_axes: Sequence[bool] | None = None,
    ) -> None:
        super().__init__()
        local_k, dil_k, dilation = kernels
        active = tuple(active_axes) if active_axes is not None else _all_active(conv_op)
        hidden = max(1, round(channels * exp_ratio))
        self.fc1 = pointwise(conv_op, channels, hidden)
        self.act = nn.GELU()
        self.attn_local = depthwise(conv_op, hidden, masked_kernel(local_k, active))
        self.attn_dilated = depthwise(conv_op, hidden, masked_kernel(dil_k, active), dilation=dilation)
        self.fc2 = pointwise(conv_op, hidden, channels)

    @property
    def proj(self) -> nn.Module:
        """The output projection: ``forward(x) == proj(body(x))``."""
        return self.fc2

    def ffn_layers(self) -> tuple[str, nn.Module, nn.Module, tuple[nn.Module, ...], nn.Module]:
        """``(kind, fc1, act, depthwise convs, fc2)`` for ``parts.FFNParts`` (kind ``la``)."""
        return "la", self.fc1, self.act, (self.attn_local, self.attn_dilated), self.fc2

    def body(self, x: torch.Tensor) -> torch.Tensor:
        """The gated hidden features ``h * DW_dilated(DW_local(h))``."""
        h = self.act(self.fc1(x))
        return h * self.attn_dilated(self.attn_local(h))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.body(x))

    def feature_map_channels(self) -> int:
        return self.fc1.out_channels * 5 + self.fc2.out_channels


class SmoothDWFFN(nn.Module):
    """SDW-FFN: ``PW(h + GELU(DW3(h)))`` with ``h = GELU(PW(C -> rC) x)``."""

    def __init__(
        self,
        channels: int,
        exp_ratio: float = 4,
        conv_op: ConvOp = nn.Conv2d,
        kernel: int = 3,
        active_axes: Sequence[bool] | None = None,
    ) -> None:
        super().__init__()
        active = tuple(active_axes) if active_axes is not None else _all_active(conv_op)
        hidden = max(1, round(channels * exp_ratio))
        self.fc1 = pointwise(conv_op, channels, hidden)
        self.act = nn.GELU()
        self.smooth = depthwise(conv_op, hidden, masked_kernel(kernel, active))
        self.fc2 = pointwise(conv_op, hidden, channels)

    @property
    def proj(self) -> nn.Module:
        """The output projection: ``forward(x) == proj(body(x))``."""
        return self.fc2

    def ffn_layers(self) -> tuple[str, nn.Module, nn.Module, tuple[nn.Module, ...], nn.Module]:
        """``(kind, fc1, act, depthwise convs, fc2)`` for ``parts.FFNParts`` (kind ``sdw``)."""
        return "sdw", self.fc1, self.act, (self.smooth,), self.fc2

    def body(self, x: torch.Tensor) -> torch.Tensor:
        """The smoothed hidden features ``h + GELU(DW3(h))``."""
        h = self.act(self.fc1(x))
        return h + self.act(self.smooth(h))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.body(x))

    def feature_map_channels(self) -> int:
        return self.fc1.out_channels * 5 + self.fc2.out_channels


class PreNormResidual(nn.Module):
    """``x + DropPath(gamma * fn(norm(x)))``; ``layer_scale=None`` disables gamma.

    ``fn`` (SEM, LA-FFN or SDW-FFN) has ``body(x)`` and ``proj`` (its output projection), ``fn(x) ==
    fn.proj(fn.body(x))``: :meth:`residual_branch` describes the branch to the execution policies.
    """

    def __init__(self, fn: nn.Module, norm: nn.Module, channels: int, layer_scale: float | None, drop_path: float) -> None:
        super().__init__()
        self.norm = norm
        self.fn = fn
        self.scale = LayerScale(channels, layer_scale) if layer_scale else nn.Identity()
        self.drop_path = DropPath(drop_path)

    def _gamma(self) -> torch.Tensor | None:
        return self.scale.gamma if isinstance(self.scale, LayerScale) else None

    def residual_branch(self) -> ResidualBranch:
        """The branch ``drop(gamma * fn.proj(fn.body(norm(x))))``."""
        norm, fn = self.norm, self.fn

        def body(x: torch.Tensor) -> torch.Tensor:
            return fn.body(norm(x))  # type: ignore[operator]

        drop = self.drop_path if self.drop_path.p > 0 else None
        return ResidualBranch(body, fn.proj, (norm, fn), self._gamma(), drop)  # type: ignore[arg-type]

    def ffn_parts(self) -> FFNParts | None:
        """The sub-layer layer by layer when ``fn`` is an LA-FFN or SDW-FFN (the SEM has no such form)."""
        layers = self.fn.ffn_layers()  # type: ignore[operator]
        if layers is None:
            return None
        kind, fc1, act, dws, fc2 = layers
        return FFNParts(kind, self.norm, fc1, act, dws, fc2, self._gamma(), self.drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = execution.fused_ffn(self.ffn_parts(), x)
        return out if out is not None else x + execution.branch(self.residual_branch(), x)


class MedNeXtBlock(nn.Module):
    """Seed MedNeXt block: pre-norm residual sub-layers with layer scale and drop path; shape preserving.

    ``composition="A"``: LA-FFN -> SEM -> SDW-FFN. ``composition="B"``: SEM -> SDW-FFN, preceded by LA-FFN only
    when ``use_la_ffn`` is true (the network decides where).
    """

    def __init__(
        self,
        channels: int,
        conv_op: ConvOp = nn.Conv2d,
        composition: str = "A",
        exp_ratio: float = 4,
        norm: str = "batch",
        layer_scale: float | None = 1e-2,
        drop_path: float = 0.0,
        sem_kernels: Sequence[int] = DEFAULT_SEM_KERNELS,
        la_kernels: Sequence[int] = DEFAULT_LA_KERNELS,
        active_axes: Sequence[bool] | None = None,
        use_la_ffn: bool | None = None,
    ) -> None:
        super().__init__()
        if composition not in ("A", "B"):
            raise ValueError(f"composition must be 'A' or 'B', got {composition!r}")
        if use_la_ffn is None:
            use_la_ffn = composition == "A"
        layers: list[nn.Module] = []

        def wrap(fn: nn.Module) -> PreNormResidual:
            return PreNormResidual(fn, make_norm(norm, channels, conv_op), channels, layer_scale, drop_path)

        if use_la_ffn:
            layers.append(wrap(LinearAttentionFFN(channels, exp_ratio, conv_op, la_kernels, active_axes)))
        layers.append(wrap(SpatialEncodingModule(channels, conv_op, sem_kernels, active_axes)))
        layers.append(wrap(SmoothDWFFN(channels, exp_ratio, conv_op, 3, active_axes)))
        self.layers = nn.Sequential(*layers)
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)

    def feature_map_channels(self) -> int:
        """Channels of every intermediate map of one forward pass (a memory proxy, per voxel)."""
        return sum(layer.fn.feature_map_channels() + 3 * self.channels for layer in self.layers)

    def kept_channels(self) -> int:
        """Channels per voxel a training step keeps for backward when the branches are recomputed: the input of
        each residual sub-layer."""
        return len(self.layers) * self.channels

    def recompute_channels(self) -> int:
        """Channels per voxel of the maps the largest sub-layer re-creates in backward (one at a time)."""
        return max(layer.fn.feature_map_channels() + 3 * self.channels for layer in self.layers)
