"""How blocks describe themselves to the execution policies (pure data; no policy here).

* :class:`ResidualBranch`: a residual branch ``drop(scale * proj(body(x)))`` (selective recompute);
* :class:`FFNParts`: an LA-FFN / SDW-FFN pre-norm residual sub-layer spelled out layer by layer (the fused CPU node);
* :class:`RoyParts`: a Roy et al. block with an identity residual, layer by layer (the fused CPU node);
* :func:`channel_sum_squares`, :func:`grn_factor`: MedNeXt-v2's global response norm maths, shared by the GRN module
  and the fused CPU node.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


def scale_view(scale: torch.Tensor, ndim: int) -> torch.Tensor:
    """A per-channel vector ``(C,)`` shaped to broadcast over ``(B, C, *spatial)``."""
    return scale.view((1, -1) + (1,) * (ndim - 2))


def channel_sum_squares(x: torch.Tensor) -> torch.Tensor:
    """(B, C): each sample's sum of squares per channel over all spatial positions of a ``(B, C, *spatial)`` map.

    On a channels-last map one ``vecdot`` over its (B, S, C) view: about twice as fast, forward and backward, as a
    reduction over the strided spatial axes (``vector_norm`` included)."""
    b, c = x.shape[:2]
    last = x.movedim(1, -1)
    if last.is_contiguous():
        flat = last.reshape(b, -1, c)
        return torch.linalg.vecdot(flat, flat, dim=1)
    return x.square().sum(dim=tuple(range(2, x.ndim)))


def grn_factor(norms: torch.Tensor, gamma: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A global response norm's relative response ``n = norms / (mean_c norms + eps)`` and its factor
    ``1 + gamma * n``, both (B, C), from the per-channel L2 norms ``norms`` (B, C)."""
    n = norms / (norms.mean(dim=1, keepdim=True) + eps)
    return n, 1 + gamma * n


@dataclass(frozen=True)
class ResidualBranch:
    """A residual branch ``drop(scale * proj(body(x)))``, as a block describes it to the execution policies.

    ``body`` computes the features that enter the output projection from the branch input, using only the
    parameters of ``modules``; ``proj`` is the branch's last layer (a 1x1 convolution in every MedNeXt block);
    ``scale`` is a per-channel layer scale (or None) and ``drop`` the branch's stochastic depth (or None).
    :func:`plain_branch` runs it with the plain modules; ``networks.recompute`` runs the same function keeping less
    for backward.
    """

    body: Callable[[torch.Tensor], torch.Tensor]
    proj: nn.Module
    modules: tuple[nn.Module, ...]
    scale: torch.Tensor | None = None
    drop: Any = None  # a layers.DropPath

    def tail(self, z: torch.Tensor) -> torch.Tensor:
        """``scale * proj(z)``."""
        y = self.proj(z)
        return y if self.scale is None else y * scale_view(self.scale, y.ndim)

    def body_parameters(self) -> list[torch.Tensor]:
        """The parameters of ``modules`` that are not the tail's, each once (the ones ``body`` uses)."""
        seen = {id(p) for p in self.tail_parameters() if p is not None}
        out = []
        for m in self.modules:
            for p in m.parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    out.append(p)
        return out

    def tail_parameters(self) -> list[torch.Tensor | None]:
        """``[proj.weight, proj.bias, scale]`` (None where absent)."""
        return [self.proj.weight, self.proj.bias, self.scale]  # type: ignore[list-item]


def plain_branch(branch: ResidualBranch, x: torch.Tensor) -> torch.Tensor:
    """The branch with the plain modules (the reference: autograd keeps every intermediate map)."""
    y = branch.tail(branch.body(x))
    return y if branch.drop is None else branch.drop(y)


@dataclass(frozen=True)
class FFNParts:
    """``x + drop(scale * fc2(body(act(fc1(norm(x))))))`` with ``body(h) = h + act(dw[0](h))`` (``kind="sdw"``,
    SDW-FFN) or ``h * dw[1](dw[0](h))`` (``kind="la"``, LA-FFN)."""

    kind: str
    norm: nn.Module
    fc1: nn.Module
    act: nn.Module
    depthwise: tuple[nn.Module, ...]
    fc2: nn.Module
    scale: torch.Tensor | None
    drop: Any  # a layers.DropPath, or None


@dataclass(frozen=True)
class RoyParts:
    """``x + proj(grn(act(expand(norm(dw(x))))))``: a Roy et al. block whose residual is the identity; ``grn`` is
    MedNeXt-v2's global response norm, or None (v1: the identity)."""

    dw: nn.Module
    norm: nn.Module
    expand: nn.Module
    act: nn.Module
    proj: nn.Module
    grn: nn.Module | None = None
