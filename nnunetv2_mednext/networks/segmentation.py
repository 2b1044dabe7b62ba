"""Plans-driven U-shaped segmentation network for both MedNeXt block families (pure PyTorch).

The topology (number of stages, per-stage strides and kernel sizes, features per stage, 2D/3D) comes from
nnU-Net's plans, so the constructor takes the keyword arguments nnU-Net passes when it builds a network from
``architecture.arch_kwargs`` (``input_channels``, ``num_classes``, ``deep_supervision`` + the arch kwargs).
Deep supervision follows nnU-Net's ``PlainConvUNet`` contract: a list of ``n_stages - 1`` logits, highest
resolution first, toggled through ``network.decoder.deep_supervision``; the parameters do not depend on it. With
``ds_bottleneck=True`` (Roy et al.'s network) a head on the bottleneck adds an ``n_stages``-th output at the end of
the list; only trainers that know it (this package's) give it a loss term.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from . import execution
from .layers import (
    ConvOp,
    as_tuple,
    conv_layer,
    init_weights,
    make_norm,
    masked_kernel,
    pointwise,
    resolve_conv_op,
    same_padding,
    spatial_dims,
    transposed_conv_op,
)
from .recompute import recompute_enabled
from .seed_blocks import DEFAULT_LA_KERNELS, DEFAULT_SEM_KERNELS, MedNeXtBlock
from .v1_blocks import MedNeXtV1Block, MedNeXtV1Down, MedNeXtV1Up, check_upsample_align, pytorch_default_init
from .v2_blocks import MedNeXtV2Block, MedNeXtV2Down, MedNeXtV2Up

BLOCK_FAMILIES = ("seed", "v1", "v2")
INIT_SCHEMES = ("mednext", "pytorch")

# PlainConvUNet / ResidualEncoderUNet keywords found in stock nnU-Net plans. They are accepted so that a stock
# ``arch_kwargs`` dict can be passed unchanged, but they do not apply to MedNeXt blocks.
NNUNET_IGNORED_KWARGS = frozenset(
    {
        "n_conv_per_stage",
        "n_conv_per_stage_decoder",
        "conv_bias",
        "norm_op",
        "norm_op_kwargs",
        "dropout_op",
        "dropout_op_kwargs",
        "nonlin",
        "nonlin_kwargs",
        "nonlin_first",
        "block",
        "bottleneck_channels",
        "stem_channels",
    }
)


def per_stage(value: Any, n: int, name: str) -> list:
    """Broadcast a scalar to ``n`` entries; a shorter list is padded with its last value, a longer one cut."""
    if isinstance(value, (list, tuple)):
        if len(value) == 0:
            raise ValueError(f"{name} must not be empty")
        values = list(value)
        return (values + [values[-1]] * n)[:n]
    return [value] * n


class MedNeXtEncoder(nn.Module):
    """Stem + one stage per plan stage (downsampling, then blocks). Returns the skip of every stage."""

    def __init__(self, net: MedNeXtUNet) -> None:
        super().__init__()
        c = net.conv_op
        f = net.features_per_stage
        if net.block == "seed":
            k0 = net.kernel_sizes[0]
            self.stem = nn.Sequential(
                conv_layer(c, net.input_channels, f[0], k0, padding=same_padding(k0), bias=False),
                make_norm(net.norm, f[0], c),
            )
        else:
            self.stem = pointwise(c, net.input_channels, f[0])
        self.down = nn.ModuleList()
        self.stages = nn.ModuleList()
        for i in range(net.n_stages):
            if i == 0:
                self.down.append(nn.Identity())
            elif net.block == "seed":
                s = net.strides[i]
                self.down.append(nn.Sequential(conv_layer(c, f[i - 1], f[i], s, stride=s, bias=False),
                                               make_norm(net.norm, f[i], c)))
            else:
                self.down.append(
                    (MedNeXtV2Down if net.block == "v2" else MedNeXtV1Down)(
                        f[i - 1], f[i], stride=net.strides[i], exp_ratio=net.exp_ratio[i],
                        kernel_size=net.block_kernel(i), conv_op=c, norm=net.norm,
                    )
                )
            self.stages.append(nn.Sequential(*[net.make_block(i, j, decoder=False) for j in range(net.n_blocks_per_stage[i])]))
        self.use_checkpoint = net.checkpointing

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        # a 1-channel input's stem output comes back channels-last from the fast conv itself (fastops.layers)
        x = execution.conv_norm(self.stem[0], self.stem[1], x) if isinstance(self.stem, nn.Sequential) else self.stem(x)
        skips = []
        for down, stage in zip(self.down, self.stages):
            if isinstance(down, nn.Sequential) and not self.use_checkpoint:
                x = execution.conv_norm(down[0], down[1], x)
            else:
                x = execution.checkpointed(down, x, self.use_checkpoint)
            for block in stage:
                x = execution.checkpointed(block, x, self.use_checkpoint)
            skips.append(x)
        return skips


class MedNeXtDecoder(nn.Module):
    """Upsampling path with skip fusion, blocks and a 1x1 segmentation head per stage (heads always exist)."""

    def __init__(self, net: MedNeXtUNet, deep_supervision: bool) -> None:
        super().__init__()
        c = net.conv_op
        f = net.features_per_stage
        self.block = net.block
        self.deep_supervision = deep_supervision
        self.up = nn.ModuleList()
        self.fuse = nn.ModuleList()
        self.stages = nn.ModuleList()
        self.seg_layers = nn.ModuleList()
        # decoder stage at resolution level i, built from i = n_stages - 2 down to 0 (stored in that order)
        for i in range(net.n_stages - 2, -1, -1):
            s = net.strides[i + 1]
            if net.block == "seed":
                # no biases before a norm: a per-channel constant would be cancelled by it (dead parameter)
                self.up.append(transposed_conv_op(c)(f[i + 1], f[i], s, stride=s, bias=False))
                self.fuse.append(
                    nn.Sequential(pointwise(c, 2 * f[i], f[i], bias=False), make_norm(net.norm, f[i], c), nn.GELU())
                )
            else:
                self.up.append(
                    (MedNeXtV2Up if net.block == "v2" else MedNeXtV1Up)(
                        f[i + 1], f[i], stride=s, exp_ratio=net.exp_ratio_decoder[i],
                        kernel_size=net.block_kernel(i + 1), conv_op=c, norm=net.norm,
                        upsample_align=net.upsample_align,
                    )
                )
                self.fuse.append(nn.Identity())
            n_blocks = net.n_blocks_per_stage_decoder[i]
            self.stages.append(nn.Sequential(*[net.make_block(i, j, decoder=True) for j in range(n_blocks)]))
            self.seg_layers.append(pointwise(c, f[i], net.num_classes))
        self.ds_bottleneck = net.ds_bottleneck
        if self.ds_bottleneck:  # seg_layers[n_stages - 1]: the bottleneck head (Roy et al.'s fifth output)
            self.seg_layers.append(pointwise(c, f[-1], net.num_classes))
        self.use_checkpoint = net.checkpointing

    def forward(self, skips: list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
        x = skips[-1]
        outputs = []
        n = len(self.stages)
        for k in range(n):
            skip = skips[-(k + 2)]
            x = execution.checkpointed(self.up[k], x, self.use_checkpoint)
            if self.block == "seed":  # fuse = PW(2C -> C), norm, GELU on cat((x, skip)); no concatenated copy
                x = execution.skip_fusion(*self.fuse[k], x, skip)
            else:
                x = x + skip
            for block in self.stages[k]:
                x = execution.checkpointed(block, x, self.use_checkpoint)
            if self.deep_supervision or k == n - 1:
                outputs.append(self.seg_layers[k](x))
        if not self.deep_supervision:
            return outputs[-1]
        if self.ds_bottleneck:
            return [*outputs[::-1], self.seg_layers[n](skips[-1])]
        return outputs[::-1]


class MedNeXtUNet(nn.Module):
    """MedNeXt U-Net whose topology follows an nnU-Net plan; ``block`` selects the seed or the Roy et al. blocks.

    Args:
        input_channels, num_classes, deep_supervision: as passed by nnU-Net.
        n_stages, features_per_stage, conv_op, kernel_sizes, strides: the plan's topology. ``strides[0]`` must
            be all ones; a kernel of 1 along an axis (anisotropic plans) keeps every large kernel flat there.
        block: ``"seed"`` (SEM / LA-FFN / SDW-FFN blocks), ``"v1"`` (Roy et al. blocks) or ``"v2"`` (MedNeXt-v2:
            Roy et al. blocks with a GRN after the expansion).
        n_blocks_per_stage: blocks per encoder stage (int or list, index = resolution level).
        n_blocks_per_stage_decoder: blocks per decoder stage (index = resolution level, ``n_stages - 1`` entries).
        exp_ratio, exp_ratio_decoder: FFN expansion ratios per level.
        norm: ``instance`` (default), ``group``, ``layer`` or ``batch``.
        composition: seed block option ``"A"`` or ``"B"``; with ``"B"``, ``la_ffn_stages`` lists the levels whose
            blocks also get an LA-FFN (default: the two lowest-resolution levels).
        sem_kernels, la_kernels: seed kernel sets (local + strip lengths; local, dilated, dilation).
        kernel_size: Roy et al. depthwise kernel (3 or 5).
        n_light_levels: with ``block="seed"``, the first (highest-resolution) levels use Roy et al. blocks
            instead of seed blocks: large-kernel depthwise ops on full-resolution maps dominate the run time.
        layer_scale, drop_path_rate: residual-branch layer scale init and maximum stochastic-depth rate.
        checkpointing: recompute every block in backward (``use_reentrant=False``) to save memory.
        upsample_align: where Roy et al. up blocks put the coarse grid: ``"start"`` (default, the official code)
            or ``"end"`` (output padding; this package's convention before it matched the official code).
        ds_bottleneck: a segmentation head on the bottleneck too; with deep supervision the output list then has
            ``n_stages`` entries (the bottleneck's last), as Roy et al.'s network. Off: nnU-Net's contract.
        init: ``"pytorch"`` (PyTorch's default init of every layer, heads as the official transposed 1x1 convs:
            Roy et al.'s code) or ``"mednext"`` (``layers.init_weights``); ``None``: ``"pytorch"`` for
            ``block="v1"`` and ``"v2"``, ``"mednext"`` for the seed family.
        head_init: with ``init="mednext"``, the 1x1 segmentation heads: ``"fan_in"`` (default; std
            ``1/sqrt(fan_in)``: initial logits of about unit scale) or ``"fan_out"`` (the other layers' He fan-out
            rule: initial logits of std ~5-10; the default before the ablation of ``docs/ablations.md``).
    """

    def __init__(
        self,
        input_channels: int,
        num_classes: int,
        n_stages: int,
        features_per_stage: int | Sequence[int],
        conv_op: ConvOp | str,
        kernel_sizes: int | Sequence[int] | Sequence[Sequence[int]],
        strides: int | Sequence[int] | Sequence[Sequence[int]],
        deep_supervision: bool = False,
        block: str = "seed",
        n_blocks_per_stage: int | Sequence[int] = 1,
        n_blocks_per_stage_decoder: int | Sequence[int] | None = None,
        exp_ratio: float | Sequence[float] = 4,
        exp_ratio_decoder: float | Sequence[float] | None = None,
        norm: str = "instance",
        composition: str = "A",
        la_ffn_stages: Sequence[int] | None = None,
        sem_kernels: Sequence[int] = DEFAULT_SEM_KERNELS,
        la_kernels: Sequence[int] = DEFAULT_LA_KERNELS,
        kernel_size: int = 3,
        n_light_levels: int = 0,
        layer_scale: float | None = 1e-2,
        drop_path_rate: float = 0.0,
        checkpointing: bool = False,
        upsample_align: str = "start",
        ds_bottleneck: bool = False,
        init: str | None = None,
        head_init: str = "fan_in",
        **nnunet_kwargs: Any,
    ) -> None:
        super().__init__()
        unknown = set(nnunet_kwargs) - NNUNET_IGNORED_KWARGS
        if unknown:
            raise TypeError(f"MedNeXtUNet got unexpected keyword argument(s): {', '.join(sorted(unknown))}")
        if block not in BLOCK_FAMILIES:
            raise ValueError(f"block must be one of {BLOCK_FAMILIES}, got {block!r}")
        if n_stages < 2:
            raise ValueError(f"n_stages must be >= 2, got {n_stages}")
        self.conv_op = resolve_conv_op(conv_op)
        ndim = self.n_spatial = spatial_dims(self.conv_op)
        self.input_channels, self.num_classes, self.n_stages, self.block = input_channels, num_classes, n_stages, block
        self.features_per_stage = [int(v) for v in per_stage(features_per_stage, n_stages, "features_per_stage")]
        ks = list(kernel_sizes) if isinstance(kernel_sizes, (list, tuple)) else [kernel_sizes] * n_stages
        st = list(strides) if isinstance(strides, (list, tuple)) else [strides] * n_stages
        if len(ks) != n_stages or len(st) != n_stages:
            raise ValueError(f"kernel_sizes and strides need {n_stages} entries (one per stage), got {len(ks)} and {len(st)}")
        self.kernel_sizes = [as_tuple(k, ndim, "kernel_sizes entry") for k in ks]
        self.strides = [as_tuple(s, ndim, "strides entry") for s in st]
        self._total_stride = tuple(int(v) for v in np.prod(np.array(self.strides), axis=0))
        if any(s != 1 for s in self.strides[0]):
            raise ValueError(f"strides[0] must be all ones (nnU-Net's first stage does not downsample), got {self.strides[0]}")
        self.n_blocks_per_stage = [int(v) for v in per_stage(n_blocks_per_stage, n_stages, "n_blocks_per_stage")]
        dec = n_blocks_per_stage_decoder if n_blocks_per_stage_decoder is not None else self.n_blocks_per_stage[:-1]
        self.n_blocks_per_stage_decoder = [int(v) for v in per_stage(dec, n_stages - 1, "n_blocks_per_stage_decoder")]
        self.exp_ratio = per_stage(exp_ratio, n_stages, "exp_ratio")
        self.exp_ratio_decoder = per_stage(exp_ratio_decoder if exp_ratio_decoder is not None else self.exp_ratio[:-1], n_stages - 1, "exp_ratio_decoder")
        self.norm, self.composition, self.kernel_size = norm, composition, int(kernel_size)
        self.n_light_levels = int(n_light_levels)
        # option B uses LA-FFN sparingly: by default only in the two lowest-resolution levels (else B would equal A)
        self.la_ffn_stages = set(la_ffn_stages) if la_ffn_stages is not None else {n_stages - 2, n_stages - 1}
        self.sem_kernels, self.la_kernels = tuple(sem_kernels), tuple(la_kernels)
        self.layer_scale, self.checkpointing = layer_scale, bool(checkpointing)
        total_blocks = sum(self.n_blocks_per_stage) + sum(self.n_blocks_per_stage_decoder)
        self._drop_rates = iter(np.linspace(0, drop_path_rate, max(total_blocks, 1)).tolist())
        make_norm(norm, 4, self.conv_op)  # validates the norm name early
        self.upsample_align = check_upsample_align(upsample_align)
        self.ds_bottleneck = bool(ds_bottleneck)
        self.init = init if init is not None else ("pytorch" if block in ("v1", "v2") else "mednext")
        if head_init not in ("fan_out", "fan_in"):
            raise ValueError(f"head_init must be 'fan_out' or 'fan_in', got {head_init!r}")
        self.head_init = head_init
        if self.init not in INIT_SCHEMES:
            raise ValueError(f"init must be one of {INIT_SCHEMES} (or None for the family's default), got {init!r}")
        self.encoder = MedNeXtEncoder(self)
        self.decoder = MedNeXtDecoder(self, deep_supervision)
        del self._drop_rates
        self.apply(self.initialize)
        execution.prepare_network(self, self.n_spatial + 2)

    # -- construction helpers -------------------------------------------------------------------------------------
    def active_axes(self, level: int) -> tuple[bool, ...]:
        """Axes along which large kernels extend at a resolution level (the plan's kernel > 1)."""
        return tuple(k > 1 for k in self.kernel_sizes[level])

    def block_kernel(self, level: int) -> tuple[int, ...]:
        """Roy et al. depthwise kernel at a level: ``kernel_size`` on active axes, 1 elsewhere."""
        return masked_kernel(self.kernel_size, self.active_axes(level))

    def make_block(self, level: int, index: int, decoder: bool) -> nn.Module:
        ratio = (self.exp_ratio_decoder if decoder else self.exp_ratio)[level]
        channels = self.features_per_stage[level]
        if self.block == "v2":
            return MedNeXtV2Block(channels, channels, int(ratio), self.block_kernel(level), self.conv_op, True, self.norm)
        if self.block == "v1" or level < self.n_light_levels:
            return MedNeXtV1Block(channels, channels, int(ratio), self.block_kernel(level), self.conv_op, True, self.norm)
        return MedNeXtBlock(
            channels,
            self.conv_op,
            composition=self.composition,
            exp_ratio=ratio,
            norm=self.norm,
            layer_scale=self.layer_scale,
            drop_path=next(self._drop_rates),
            sem_kernels=self.sem_kernels,
            la_kernels=self.la_kernels,
            active_axes=self.active_axes(level),
            use_la_ffn=self.composition == "A" or level in self.la_ffn_stages,
        )

    # -- nnU-Net contract --------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if x.ndim != self.n_spatial + 2 or x.shape[1] != self.input_channels:
            raise ValueError(
                f"expected input (B, {self.input_channels}, {', '.join(['*'] * self.n_spatial)}), got {tuple(x.shape)}"
            )
        if any(int(s) % t for s, t in zip(x.shape[2:], self._total_stride)):
            raise ValueError(
                f"input spatial size {tuple(x.shape[2:])} is not divisible by the network's total stride "
                f"{self.total_stride} (product of the plan's strides); pad or crop the input"
            )
        out = self.decoder(self.encoder(execution.prepare_input(x)))
        if isinstance(out, list):
            return [o.contiguous() for o in out]
        return out.contiguous()

    @property
    def total_stride(self) -> tuple[int, ...]:
        """Per-axis product of the strides: input sizes must be divisible by it."""
        return self._total_stride

    def level_shapes(self, input_size: Sequence[int]) -> list[tuple[int, ...]]:
        shapes, cur = [], np.array(input_size, dtype=np.int64)
        for s in self.strides:
            cur = cur // np.array(s)
            shapes.append(tuple(int(v) for v in cur))
        return shapes

    def compute_conv_feature_map_size(self, input_size: Sequence[int], recompute: bool | None = None) -> np.int64:
        """Memory proxy of one training sample that nnU-Net's planners call (elements of feature maps).

        With selective recompute (``recompute=None``: the current policy, on by default) it counts the maps a
        training step keeps for backward (the input of every residual branch, the stem's input, the skips, the
        upsampled maps the skip fusion keeps, the decoder stage outputs and the logits) plus the maps of the largest
        branch, which backward re-creates one branch at a time. Without it, every intermediate map of every block,
        the expanded FFN features included.
        """
        if len(input_size) != spatial_dims(self.conv_op):
            raise ValueError(f"input_size must have {spatial_dims(self.conv_op)} entries, got {list(input_size)}")
        if recompute is None:
            recompute = recompute_enabled()
        vox = [int(np.prod(s)) for s in self.level_shapes(input_size)]
        if not recompute:
            return np.int64(self._all_maps(vox))
        return np.int64(self._kept_maps(vox) + self._recompute_working_set(vox))

    def _blocks_by_level(self) -> list[tuple[nn.Module, int]]:
        """Every block with the resolution level of its input."""
        out = [(b, i) for i in range(self.n_stages) for b in self.encoder.stages[i]]
        for k, i in enumerate(range(self.n_stages - 2, -1, -1)):
            out += [(b, i) for b in self.decoder.stages[k]]
            if isinstance(self.decoder.up[k], MedNeXtV1Block):
                out.append((self.decoder.up[k], i + 1))
        out += [(d, i - 1) for i, d in enumerate(self.encoder.down) if isinstance(d, MedNeXtV1Block)]
        return out

    def _recompute_working_set(self, vox: list[int]) -> int:
        sizes = [b.recompute_channels() * vox[i] for b, i in self._blocks_by_level()]
        return max(sizes, default=0)

    def _kept_maps(self, vox: list[int]) -> int:
        f, n = self.features_per_stage, self.n_stages
        total = self.input_channels * vox[0]  # the stem keeps its input
        for i in range(n):
            total += sum(b.kept_channels() for b in self.encoder.stages[i]) * vox[i]
            total += f[i] * vox[i]  # the stage output: the skip, and the input of the next downsampling
        for k, i in enumerate(range(n - 2, -1, -1)):
            if self.block == "seed":
                total += f[i] * vox[i]  # the upsampled map, kept by the skip fusion
            else:
                total += self.decoder.up[k].kept_channels() * vox[i + 1]
            total += sum(b.kept_channels() for b in self.decoder.stages[k]) * vox[i]
            total += (f[i] + self.num_classes) * vox[i]  # the stage output (head and next upsampling), logits
        if self.ds_bottleneck:
            total += self.num_classes * vox[-1]
        return total

    def _all_maps(self, vox: list[int]) -> int:
        f = self.features_per_stage
        total = 2 * f[0] * vox[0]  # stem
        for i in range(self.n_stages):
            if i > 0:
                down = self.encoder.down[i]
                total += (down.feature_map_channels() if isinstance(down, MedNeXtV1Block) else 2 * f[i]) * vox[i]
            total += sum(b.feature_map_channels() for b in self.encoder.stages[i]) * vox[i]
        for k, i in enumerate(range(self.n_stages - 2, -1, -1)):
            up = self.decoder.up[k]
            total += (up.feature_map_channels() if isinstance(up, MedNeXtV1Block) else 4 * f[i]) * vox[i]
            total += sum(b.feature_map_channels() for b in self.decoder.stages[k]) * vox[i]
            total += self.num_classes * vox[i]
        if self.ds_bottleneck:
            total += self.num_classes * vox[-1]
        return total

    def initialize(self, module: nn.Module) -> None:
        """Weight init of one module, applied by nnU-Net's ``get_network_from_plans`` (and by the constructor)."""
        if self.init == "mednext":
            init_weights(module)
            if self.head_init == "fan_in" and any(module is h for h in self.decoder.seg_layers):
                fan_in = module.in_channels * math.prod(module.kernel_size)
                nn.init.normal_(module.weight, 0.0, 1.0 / math.sqrt(fan_in))
        else:
            pytorch_default_init(module, is_head=any(module is h for h in self.decoder.seg_layers))

    def set_checkpointing(self, enabled: bool) -> None:
        """Switch gradient checkpointing of every block on or off."""
        self.checkpointing = self.encoder.use_checkpoint = self.decoder.use_checkpoint = bool(enabled)
