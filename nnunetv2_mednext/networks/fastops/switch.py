"""When the fast CPU paths run, and the channels-last layout they work in (plus small layout helpers).

* ``NNUNETV2_MEDNEXT_FAST_OPS`` (default on): the fast kernels and fused nodes of this package. They step aside
  under ``torch.compile`` (the compiler fuses on its own) and under autocast (they are written for full-precision
  tensors; autocast then decides every op's dtype as for any other network).
* ``NNUNETV2_MEDNEXT_CHANNELS_LAST`` (default: on CPU only, where the fast paths run): channels-last activations.
  ``1`` asks for them on any device and under autocast too (CUDA: cuDNN's channels-last depthwise kernels);
  ``0`` turns them off.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from nnunetv2_mednext.envflags import env_flag

FAST_OPS_ENV = "NNUNETV2_MEDNEXT_FAST_OPS"
CHANNELS_LAST_ENV = "NNUNETV2_MEDNEXT_CHANNELS_LAST"

_STATE = {"enabled": bool(env_flag(FAST_OPS_ENV, True, "fast CPU kernels", "plain PyTorch ops"))}


def _autocast_active() -> bool:
    return torch.is_autocast_enabled("cpu") or torch.is_autocast_enabled("cuda")


def fast_ops_enabled() -> bool:
    """Whether the fast paths run: on unless ``NNUNETV2_MEDNEXT_FAST_OPS=0``; off while compiling and under autocast."""
    return _STATE["enabled"] and not torch.compiler.is_compiling() and not _autocast_active()


def set_fast_ops(enabled: bool) -> None:
    """Switch the fast paths on or off for this process."""
    _STATE["enabled"] = bool(enabled)


@contextlib.contextmanager
def reference_ops() -> Iterator[None]:
    """Run the plain PyTorch ops (the numerical reference of the fast paths)."""
    previous = _STATE["enabled"]
    _STATE["enabled"] = False
    try:
        yield
    finally:
        _STATE["enabled"] = previous


def channels_last_setting() -> bool | None:
    """``NNUNETV2_MEDNEXT_CHANNELS_LAST``: True / False when set, None when unset (the default rule applies)."""
    return env_flag(CHANNELS_LAST_ENV, None, "channels-last activations", "channels-first activations")


def channels_last_wanted(device: torch.device) -> bool:
    """Channels-last activations for the fast paths: default on CPU only; ``NNUNETV2_MEDNEXT_CHANNELS_LAST``
    overrides."""
    setting = channels_last_setting()
    return device.type == "cpu" if setting is None else setting


def cl_format(ndim: int) -> torch.memory_format:
    """The channels-last memory format of a 4D or 5D tensor."""
    return torch.channels_last if ndim == 4 else torch.channels_last_3d


def is_channels_last(x: torch.Tensor) -> bool:
    """True if ``x`` (B, C, *S) is laid out as (B, *S, C) in memory (ambiguous single-channel maps count)."""
    return x.ndim in (4, 5) and x.permute(0, *range(2, x.ndim), 1).is_contiguous()


def prepare_input(x: torch.Tensor) -> torch.Tensor:
    """The network input in the layout its execution uses: channels-last where the fast paths run (CPU by
    default), or anywhere ``NNUNETV2_MEDNEXT_CHANNELS_LAST=1`` asks for it (every op keeps the layout)."""
    if x.ndim not in (4, 5):
        return x
    setting = channels_last_setting()
    if setting or (setting is None and fast_ops_enabled() and x.device.type == "cpu"):
        return x.contiguous(memory_format=cl_format(x.ndim))
    return x


def to_last(x: torch.Tensor) -> torch.Tensor:
    """(B, C, *S) -> (B, *S, C) view."""
    return x.permute(0, *range(2, x.ndim), 1)


def to_first(x: torch.Tensor) -> torch.Tensor:
    """(B, *S, C) -> (B, C, *S) view."""
    return x.permute(0, x.ndim - 1, *range(1, x.ndim - 1))


def rows(x: torch.Tensor) -> torch.Tensor:
    """A channels-last (B, C, *S) tensor as its (N, C) rows (a view)."""
    return to_last(x).reshape(-1, x.shape[1])


def spatial(r: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(N, C') rows of a channels-last map shaped like ``like`` as a (B, C', *S) tensor (a view)."""
    return to_first(r.view(*to_last(like).shape[:-1], r.shape[1]))


def conv_nd(ndim: int):
    """``F.conv2d`` for 4D tensors, ``F.conv3d`` for 5D ones."""
    return F.conv2d if ndim == 4 else F.conv3d


def needs_autograd(*tensors: torch.Tensor | None) -> bool:
    """Grad mode on and any of ``tensors`` requires a gradient (a training forward)."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
