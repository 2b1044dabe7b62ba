"""How much memory a network keeps and allocates in a training step, measured on any device (pure PyTorch).

* :func:`saved_tensor_bytes`: the bytes of the distinct storages autograd saves for backward during a forward pass
  (the *activation memory*; deterministic);
* :func:`peak_allocated_bytes`: the peak of the bytes allocated while a function runs, from the memory timeline of
  ``torch.profiler`` (the CPU counterpart of CUDA's ``max_memory_allocated``);
* :func:`cuda_norm_policy`: on a CPU under autocast, run the norms in float32 as CUDA autocast does, so that both
  measures show what a GPU keeps;
* :func:`count_params`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def saved_tensor_bytes(forward: Callable[[], Any], exclude: Sequence[torch.Tensor] = ()) -> int:
    """Bytes of the distinct storages autograd saves for backward while ``forward()`` runs (CPU memory measure).

    Storages of ``exclude`` (usually the parameters) are not counted: the result is the activation memory of a step.
    """
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        try:
            storage = t.untyped_storage()
            seen[storage.data_ptr()] = max(seen.get(storage.data_ptr(), 0), storage.nbytes())
        except (RuntimeError, NotImplementedError):
            pass
        return t

    skip = {t.untyped_storage().data_ptr() for t in exclude}
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = forward()
    del out
    return sum(b for ptr, b in seen.items() if ptr not in skip)


def peak_allocated_bytes(fn: Callable[[], Any]) -> int:
    """Peak of the bytes the allocator holds for tensors created while ``fn()`` runs, above what existed before:
    the CPU counterpart of CUDA's ``max_memory_allocated`` for one training step (activations, the maps backward
    re-creates, gradients of activations). Read from the memory timeline of ``torch.profiler``."""
    from torch.profiler import ProfilerActivity, profile
    from torch.profiler._memory_profiler import Action

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof:
        fn()
    current = peak = 0
    for _, action, _, size in prof._memory_profile().timeline:
        if action == Action.CREATE:
            current += size
            peak = max(peak, current)
        elif action == Action.DESTROY:
            current -= size
    return peak


@contextlib.contextmanager
def cuda_norm_policy() -> Iterator[None]:
    """On a CPU under autocast, run ``group_norm`` and ``layer_norm`` as CUDA autocast does (float32 inputs and
    outputs; CPU autocast keeps them in the lower precision), so that the bytes saved for backward are the ones a
    GPU keeps. Outside autocast nothing changes."""
    originals = {name: getattr(F, name) for name in ("group_norm", "layer_norm")}

    def wrap(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        def norm(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            if not torch.is_autocast_enabled(x.device.type):
                return fn(x, *args, **kwargs)
            up = [a.float() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args]
            with torch.autocast(x.device.type, enabled=False):
                return fn(x.float(), *up, **{k: v.float() if isinstance(v, torch.Tensor) else v
                                             for k, v in kwargs.items()})
        return norm

    for name, fn in originals.items():
        setattr(F, name, wrap(fn))
    try:
        yield
    finally:
        for name, fn in originals.items():
            setattr(F, name, fn)


def count_params(net: nn.Module) -> int:
    """Parameters, each shared tensor counted once."""
    return sum(p.numel() for p in {id(p): p for p in net.parameters()}.values())
