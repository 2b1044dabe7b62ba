"""How a MedNeXt network's sub-blocks run: the execution policies applied to what the blocks describe.

The blocks (``seed_blocks``, ``v1_blocks``, ``segmentation``) only say what they compute, through explicit parts
(``parts.ResidualBranch``, ``parts.FFNParts``, ``parts.RoyParts``) and plain modules. In a training forward this
module picks, per sub-block:

1. a fused CPU node of :mod:`.fastops` when it applies (CPU, fast ops on, channels-last, no autocast);
2. else, off that CPU route, selective recompute (:mod:`.recompute`; any device, autocast included), unless switched
   off. On the CPU route the sub-blocks no fused node covers run plain: there speed is what counts, and the fused
   nodes already keep about half the memory of plain autograd;
3. else the plain modules.

Inference (no autograd) always runs the modules (through the fast layers where they apply). Whole-block gradient
checkpointing (``checkpointed``) is the heaviest policy: it suspends the other two inside the block.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .fastops import fused, prepare_input
from .fastops.kernels import concat_pointwise
from .fastops.switch import channels_last_setting, cl_format, fast_ops_enabled, is_channels_last
from .parts import FFNParts, ResidualBranch, RoyParts, plain_branch
from .recompute import FrozenRunningStats, branch_forward, recompute_suspended, region_forward

__all__ = ["branch", "checkpointed", "conv_norm", "fused_ffn", "fused_roy", "prepare_input", "prepare_network",
           "skip_fusion"]


def prepare_network(net: nn.Module, ndim: int) -> nn.Module:
    """The network's weights in the layout its execution asks for: channels-last with
    ``NNUNETV2_MEDNEXT_CHANNELS_LAST=1`` (a convolution with channels-last weights answers channels-last whatever
    its input, e.g. after a norm that returns contiguous maps), as built otherwise. ``ndim``: 4 (2D) or 5 (3D)."""
    if channels_last_setting():
        net.to(memory_format=cl_format(ndim))
    return net


def fused_ffn(parts: FFNParts | None, x: torch.Tensor) -> torch.Tensor | None:
    """The whole sub-layer ``x + ...`` as one fused CPU node, or None where that node does not apply."""
    return fused.ffn_forward(parts, x) if parts is not None and fused.ffn_fusable(parts, x) else None


def fused_roy(parts: RoyParts | None, x: torch.Tensor) -> torch.Tensor | None:
    """The whole Roy et al. block ``x + ...`` as one fused CPU node, or None where that node does not apply."""
    return fused.roy_forward(parts, x) if parts is not None and fused.roy_fusable(parts, x) else None


def cpu_route(x: torch.Tensor) -> bool:
    """The CPU fast route: fast ops on, a CPU tensor in their channels-last layout (no autocast, not compiling)."""
    return fast_ops_enabled() and x.device.type == "cpu" and is_channels_last(x)


def branch(residual_branch: ResidualBranch, x: torch.Tensor) -> torch.Tensor:
    """A residual branch's output, keeping only ``x`` for backward when selective recompute is on (off the CPU
    route)."""
    if cpu_route(x):
        return plain_branch(residual_branch, x)
    return branch_forward(residual_branch, x)


def conv_norm(conv: nn.Module, norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``norm(conv(x))`` (stem, seed downsampling): one fused CPU node, else a recomputed region, else plain."""
    if fused.conv_norm_fusable(conv, norm, None, x):
        return fused.conv_norm_forward(conv, norm, None, x)

    def run(t: torch.Tensor) -> torch.Tensor:
        return norm(conv(t))

    return run(x) if cpu_route(x) else region_forward(run, (conv, norm), x)


def skip_fusion(proj: nn.Module, norm: nn.Module, act: nn.Module, up: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
    """``act(norm(proj(cat((up, skip), 1))))`` without materialising the concatenation where possible."""
    if fused.skip_fuse_fusable(proj, norm, act, up, skip):
        return fused.skip_fuse_forward(proj, norm, up, skip)

    def run(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return act(norm(concat_pointwise(a, b, proj.weight, proj.bias)))

    return run(up, skip) if cpu_route(up) else region_forward(run, (proj, norm, act), up, skip)


def checkpointed(block: nn.Module, x: torch.Tensor, enabled: bool) -> torch.Tensor:
    """``block(x)``, recomputed as a whole in backward when ``enabled`` (non-reentrant gradient checkpointing).

    In eager mode the recomputation re-runs the block's forward in training mode; batch norms would update their
    running statistics a second time, so the recomputation (every call after the first) runs with them frozen.
    """
    if not (enabled and x.requires_grad and torch.is_grad_enabled()):
        return block(x)
    if torch.compiler.is_compiling():  # traced once; the running-stat update stays in the forward graph
        return checkpoint(block, x, use_reentrant=False)
    calls = 0

    def fn(inp: torch.Tensor) -> torch.Tensor:
        nonlocal calls
        calls += 1
        # the whole block is recomputed already: no selective recompute of its branches inside
        with recompute_suspended(), (FrozenRunningStats((block,)) if calls > 1 else contextlib.nullcontext()):
            return block(inp)

    return checkpoint(fn, x, use_reentrant=False)
