"""Selective recompute: a residual branch keeps only its input for backward (any device, any autocast dtype).

A MedNeXt block's residual branch expands its input R-fold (``C -> R*C`` channels), runs depthwise convolutions,
norms and GELU on the wide maps, and projects back with a 1x1 convolution. Plain autograd keeps every one of those
wide maps until backward: the reason MedNeXt needs 2-4x the U-Net's activation memory on a GPU. Here a branch runs
as one autograd node (:class:`_BranchNode`) that saves only the branch input; in backward it re-runs the branch's
*body* (everything before the output projection) with autograd, under the autocast state of the forward, and
back-propagates the output projection by hand (``aten.convolution_backward``), so the projection's GEMM is not
recomputed. The layer scale's gradient comes from the projection's weight gradient (``sum_k W[c, k] (g^T z)[c, k]``)
instead of a saved branch output.

The node uses only the modules' own forwards and device-agnostic ATen ops, so CUDA and CPU run the same code, and
autocast makes the same dtype decisions in the recompute as in the forward. Drop path's per-sample factor is drawn
once, in the forward; BatchNorm running statistics are updated once (the recompute runs with them frozen). Outputs
are the plain modules' outputs bit for bit; gradients equal theirs up to rounding (``tests/test_recompute.py``,
float64 and bf16 autocast).

Policy: on by default for every training forward that the CPU fused nodes of :mod:`.fastops` do not take (CUDA,
autocast, ``NNUNETV2_MEDNEXT_FAST_OPS=0``); ``NNUNETV2_MEDNEXT_RECOMPUTE=0`` turns it off (plain autograd, more
memory, less compute). Under ``torch.compile`` the same branch function is wrapped in non-reentrant
``torch.utils.checkpoint`` instead, which the compiler traces.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from nnunetv2_mednext.envflags import env_flag

from .parts import ResidualBranch, plain_branch, scale_view

RECOMPUTE_ENV = "NNUNETV2_MEDNEXT_RECOMPUTE"

_STATE = {
    "enabled": bool(env_flag(RECOMPUTE_ENV, True, "recompute residual branches: less memory",
                             "plain autograd: more memory, less compute")),
    "suspended": 0,
}


def recompute_enabled() -> bool:
    """Whether residual branches recompute their body in backward (default on; ``NNUNETV2_MEDNEXT_RECOMPUTE=0``)."""
    return _STATE["enabled"] and not _STATE["suspended"]


def set_recompute(enabled: bool) -> None:
    """Switch selective recompute on or off for this process."""
    _STATE["enabled"] = bool(enabled)


@contextlib.contextmanager
def recompute_suspended() -> Iterator[None]:
    """No selective recompute inside (e.g. within a block that is checkpointed as a whole already)."""
    _STATE["suspended"] += 1
    try:
        yield
    finally:
        _STATE["suspended"] -= 1


def is_projection(conv: nn.Module) -> bool:
    """A 1x1(x1) convolution without stride, dilation, groups or padding (what :class:`_BranchNode` back-propagates)."""
    return (
        isinstance(conv, (nn.Conv2d, nn.Conv3d))
        and conv.groups == 1
        and conv.padding_mode == "zeros"
        and not isinstance(conv.padding, str)
        and all(k == 1 for k in conv.kernel_size)
        and all(s == 1 for s in conv.stride)
        and all(p == 0 for p in conv.padding)
    )


class FrozenRunningStats:
    """BatchNorms inside still normalise by batch statistics but leave their running statistics alone."""

    def __init__(self, modules: Sequence[nn.Module]) -> None:
        self.norms = [m for mod in modules for m in mod.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self.saved: list[tuple[float | None, torch.Tensor | None]] = []

    def __enter__(self) -> None:
        for m in self.norms:
            self.saved.append((m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone()))
            m.momentum = 0.0  # running = (1 - 0) * running + 0 * batch: unchanged
        return None

    def __exit__(self, *exc: object) -> None:
        for m, (momentum, tracked) in zip(self.norms, self.saved):
            m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)
        self.saved.clear()


def _autocast_state(device_type: str) -> tuple[str, bool, torch.dtype, bool]:
    return (device_type, torch.is_autocast_enabled(device_type), torch.get_autocast_dtype(device_type),
            torch.is_autocast_cache_enabled())


def _conv_backward(grad: torch.Tensor, z: torch.Tensor, weight: torch.Tensor, has_bias: bool,
                   mask: tuple[bool, bool, bool]):
    nd = z.ndim - 2
    return torch.ops.aten.convolution_backward(
        grad, z, weight, [weight.shape[0]] if has_bias else None, [1] * nd, [0] * nd, [1] * nd, False, [0] * nd, 1,
        [mask[0], mask[1], has_bias and mask[2]],
    )


def _release_values(z: torch.Tensor, keep: set[int]) -> None:
    """Free the storage of the re-run body's output once the projection's gradients are computed: autograd needs
    only its graph from here on, not its values (unless a node of the body saved it for backward: ``keep``)."""
    storage = z.untyped_storage()
    if z._base is None and storage.data_ptr() not in keep:
        storage.resize_(0)


class _BranchNode(torch.autograd.Function):
    """``drop(scale * proj(body(x)))`` saving only ``x`` (and drop path's factor); see the module docstring.

    Inputs: ``(branch, x, *body_params, proj_weight, proj_bias, scale)``.
    """

    @staticmethod
    def forward(ctx, branch: ResidualBranch, x: torch.Tensor, *params: torch.Tensor | None):  # type: ignore[override]
        ctx.branch = branch
        ctx.amp = _autocast_state(x.device.type)
        y = branch.tail(branch.body(x))
        factor = branch.drop.factor(y) if branch.drop is not None else None
        if factor is not None:
            y = y * factor
        ctx.save_for_backward(x, factor)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        branch: ResidualBranch = ctx.branch
        x, factor = ctx.saved_tensors
        need = ctx.needs_input_grad
        body_params = branch.body_parameters()
        weight, bias, scale = branch.tail_parameters()
        n_body = len(body_params)
        device_type, amp_on, amp_dtype, amp_cache = ctx.amp
        saved: set[int] = set()  # storages the re-run body keeps for its own backward

        def pack(t: torch.Tensor) -> torch.Tensor:
            saved.add(t.untyped_storage().data_ptr())
            return t

        with torch.enable_grad(), torch.autocast(device_type, dtype=amp_dtype, enabled=amp_on, cache_enabled=amp_cache), \
                FrozenRunningStats(branch.modules), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            xd = x.detach().requires_grad_(need[1])
            z = branch.body(xd)
        # the projection ran on what autocast made of z and W: back-propagate it in that dtype
        dtype = amp_dtype if amp_on else z.dtype
        z_c, w_c = z.detach().to(dtype), weight.to(dtype)
        g = grad if factor is None else grad * factor  # of scale * proj(z)
        need_w, need_b = need[2 + n_body], bias is not None and need[3 + n_body]
        g_w = g_b = g_scale = None
        if scale is None:
            g_z, g_wc, g_bc = _conv_backward(g.to(dtype), z_c, w_c, bias is not None, (True, need_w, need_b))
            g_w = g_wc.to(weight.dtype) if need_w else None
            g_b = g_bc.to(bias.dtype) if need_b else None
        else:
            s = scale_view(scale, g.ndim)
            g_z = _conv_backward((g * s).to(dtype), z_c, w_c, False, (True, False, False))[0]
            need_s = need[4 + n_body]
            if need_w or need_s or need_b:
                # m = g^T z: the projection's weight gradient before the scale; it gives the scale's gradient too
                m, sum_g = _conv_backward(g.to(dtype), z_c, w_c, bias is not None, (False, True, True))[1:]
                m = m.to(weight.dtype)
                w_scale = scale.view((-1,) + (1,) * (weight.ndim - 1))
                g_w = m * w_scale if need_w else None
                if need_s:
                    g_scale = (m * weight).flatten(1).sum(1)
                    if bias is not None:
                        g_scale = g_scale + bias * sum_g.to(bias.dtype)
                g_b = scale * sum_g.to(bias.dtype) if need_b else None
        del g, z_c
        _release_values(z, saved | {xd.untyped_storage().data_ptr()})
        wanted = ([xd] if need[1] else []) + [p for p, n in zip(body_params, need[2 : 2 + n_body]) if n]
        grads = torch.autograd.grad(z, wanted, g_z, allow_unused=True) if wanted else ()
        it = iter(grads)
        g_x = next(it) if need[1] else None
        g_body = [next(it) if n else None for n in need[2 : 2 + n_body]]
        return (None, g_x, *g_body, g_w, g_b, g_scale)


def recompute_wanted(x: torch.Tensor, branch: ResidualBranch) -> bool:
    """Whether ``branch`` runs as a recompute node: policy on, a training forward, a plain 1x1 projection."""
    if not (recompute_enabled() and torch.is_grad_enabled()):
        return False
    if not is_projection(branch.proj):
        return False
    return x.requires_grad or any(p.requires_grad for p in branch.body_parameters()) or any(
        p is not None and p.requires_grad for p in branch.tail_parameters()
    )


def branch_forward(branch: ResidualBranch, x: torch.Tensor) -> torch.Tensor:
    """The branch's output; in a training forward (policy on) only ``x`` is kept for backward."""
    if not recompute_wanted(x, branch):
        return plain_branch(branch, x)
    if torch.compiler.is_compiling():  # the compiler traces torch's checkpoint and recomputes the region itself
        return checkpoint(plain_branch, branch, x, use_reentrant=False)
    return _BranchNode.apply(branch, x, *branch.body_parameters(), *branch.tail_parameters())



class _RegionNode(torch.autograd.Function):
    """``fn(*inputs)`` saving only ``inputs``; backward re-runs ``fn`` with autograd (the autocast state of the
    forward, BatchNorm running statistics frozen). Inputs: ``(fn, modules, n_inputs, *inputs, *params)``."""

    @staticmethod
    def forward(ctx, fn: Callable[..., torch.Tensor], modules: tuple[nn.Module, ...], n_inputs: int,  # type: ignore[override]
                *tensors: torch.Tensor):
        ctx.fn, ctx.modules, ctx.n_inputs = fn, modules, n_inputs
        ctx.amp = _autocast_state(tensors[0].device.type)
        ctx.save_for_backward(*tensors[:n_inputs])
        return fn(*tensors[:n_inputs])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        inputs = ctx.saved_tensors
        need = ctx.needs_input_grad[3:]
        params = _parameters(ctx.modules)
        device_type, amp_on, amp_dtype, amp_cache = ctx.amp
        with torch.enable_grad(), torch.autocast(device_type, dtype=amp_dtype, enabled=amp_on, cache_enabled=amp_cache), \
                FrozenRunningStats(ctx.modules):
            detached = [t.detach().requires_grad_(n) for t, n in zip(inputs, need)]
            out = ctx.fn(*detached)
        wanted = [t for t, n in zip([*detached, *params], need) if n]
        grads = iter(torch.autograd.grad(out, wanted, grad, allow_unused=True) if wanted else ())
        return (None, None, None, *[next(grads) if n else None for n in need])


def _parameters(modules: Sequence[nn.Module]) -> list[torch.Tensor]:
    seen: dict[int, torch.Tensor] = {}
    for m in modules:
        for p in m.parameters():
            seen.setdefault(id(p), p)
    return list(seen.values())


def region_forward(fn: Callable[..., torch.Tensor], modules: tuple[nn.Module, ...], *inputs: torch.Tensor) -> torch.Tensor:
    """``fn(*inputs)``, a function of ``inputs`` and the parameters of ``modules`` only; in a training forward
    (policy on) only ``inputs`` are kept for backward and ``fn`` runs again in backward."""
    params = _parameters(modules)
    if not (recompute_enabled() and torch.is_grad_enabled()
            and any(t.requires_grad for t in (*inputs, *params))):
        return fn(*inputs)
    if torch.compiler.is_compiling():
        return checkpoint(fn, *inputs, use_reentrant=False)
    return _RegionNode.apply(fn, modules, len(inputs), *inputs, *params)
