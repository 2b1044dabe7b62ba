"""Fused CPU autograd nodes for the training forward of whole MedNeXt sub-blocks (pure PyTorch).

The Roy et al. block (:class:`_RoyBlockCPU`), the seed block's LA-FFN / SDW-FFN residual sub-layers
(:class:`_PreNormFFNCPU`; instance norm, or BatchNorm on batch statistics, with drop path), conv -> norm (-> GELU)
(stem, downsampling: :class:`_ConvNormCPU`) and the decoder's skip fusion (:class:`_SkipFuseCPU`). Each saves only
its input and its expensive intermediate maps (GEMM and depthwise outputs) and recomputes the cheap ones (norm
output, GELU output, products) in backward: the network keeps about half the bytes for backward, and fewer
temporaries are allocated. The blocks describe themselves through explicit parts (``layers.FFNParts``,
``layers.RoyParts``); ``*_fusable`` says whether a node applies (CPU, channels-last, fast ops on, a training
forward, the layer types the node implements), ``*_forward`` runs it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..parts import FFNParts, RoyParts, channel_sum_squares, grn_factor
from .kernels import (
    conv_kind,
    crop_depthwise,
    depthwise_backward,
    depthwise_same,
    gemm,
    instance_norm_apply,
    instance_norm_backward,
    instance_norm_forward,
)
from .switch import (
    cl_format,
    conv_nd,
    fast_ops_enabled,
    is_channels_last,
    needs_autograd,
    rows,
    spatial,
    to_first,
    to_last,
)

# ---------------------------------------------------------------------------------------------------------------
# fused Roy et al. block: x + PW(GELU(PW(N(DW x))))
# ---------------------------------------------------------------------------------------------------------------


class _RoyBlockCPU(torch.autograd.Function):
    """``x + PW3(G(GELU(PW2(IN(DW x)))))`` on a channels-last tensor, saving only ``x`` and the expanded
    pre-activation. ``G`` is the identity (Roy et al.'s block) or, with ``gamma`` given, MedNeXt-v2's global
    response norm ``G(a) = a * (1 + gamma * n) + beta`` with ``n`` the per-sample L2 norm of each channel over the
    whole map divided by its mean over the channels (``grn_eps``); those (B, E) norms are saved too.

    The depthwise output, the normalised map and the GELU output are recomputed in backward (one depthwise
    convolution, one norm and one GELU forward): the block keeps 2 of its 7 maps for backward (expansion 2).
    """

    @staticmethod
    def forward(ctx, x, w_dw, padding, n_w, n_b, eps, w2, b2, w3, b3, gamma=None, beta=None, grn_eps=0.0):  # type: ignore[override]
        c = x.shape[1]
        d = conv_nd(x.ndim)(x, w_dw, None, 1, padding, 1, c)
        n, mean, rstd = instance_norm_forward(d, n_w, n_b, eps)
        del d
        n_rows = rows(n)
        h = gemm(n_rows, w2.flatten(1), b2)
        del n, n_rows
        a = F.gelu(h)
        gn = None
        if gamma is not None:
            a3 = a.view(x.shape[0], -1, a.shape[1])
            gn = channel_sum_squares(a3.transpose(1, 2)).sqrt_()  # (B, E)
            a = torch.addcmul(beta, a3, grn_factor(gn, gamma, grn_eps)[1].unsqueeze(1)).view_as(a)
        out = to_last(x).reshape(-1, c) + b3 if b3 is not None else to_last(x).reshape(-1, c).clone()
        out.addmm_(a, w3.flatten(1).t())
        ctx.save_for_backward(x, w_dw, n_w, n_b, w2, w3, h, mean, rstd, gamma, beta, gn)
        ctx.padding, ctx.eps, ctx.has_b2, ctx.has_b3 = padding, eps, b2 is not None, b3 is not None
        ctx.grn_eps = grn_eps
        return to_first(out.view(*to_last(x).shape))

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        x, w_dw, n_w, n_b, w2, w3, h, mean, rstd, gamma, beta, gn = ctx.saved_tensors
        need = ctx.needs_input_grad
        c = x.shape[1]
        grad = grad.contiguous(memory_format=cl_format(x.ndim))
        g_rows = to_last(grad).reshape(-1, c)
        a = F.gelu(h)
        g_gamma = g_beta = None
        if gn is None:
            g_w3 = g_rows.t().mm(a).view_as(w3) if need[8] else None
            g_b3 = g_rows.sum(0) if ctx.has_b3 and need[9] else None
            del a
            g_h = g_rows.mm(w3.flatten(1))
        else:
            e = a.shape[1]
            a3 = a.view(x.shape[0], -1, e)
            nrm, factor = grn_factor(gn, gamma, ctx.grn_eps)
            # the GRN output, rebuilt for the compression's weight gradient
            g_w3 = (g_rows.t().mm(torch.addcmul(beta, a3, factor.unsqueeze(1)).view_as(a)).view_as(w3)
                    if need[8] else None)
            g_b3 = g_rows.sum(0) if ctx.has_b3 and need[9] else None
            g_y = g_rows.mm(w3.flatten(1)).view(x.shape[0], -1, e)
            t = torch.linalg.vecdot(g_y, a3, dim=1)  # (B, E): d loss / d (gamma * n), divided by gamma
            g_gamma = (t * nrm).sum(0) if need[10] else None
            g_beta = g_y.sum((0, 1)) if need[11] else None
            q = gamma * t  # d loss / d n
            den = gn.mean(1, keepdim=True) + ctx.grn_eps
            g_gn = q / den - (q * gn).sum(1, keepdim=True) / (den * den * e)
            # d gn / d a = a / gn; a channel that is zero everywhere (gn = 0) passes no gradient through its norm
            coef = torch.where(gn > 0, g_gn / gn.clamp_min(torch.finfo(gn.dtype).tiny), torch.zeros_like(gn))
            g_h = g_y.mul_(factor.unsqueeze(1)).addcmul_(a3, coef.unsqueeze(1)).view_as(a)
            del a, a3, g_y
        torch.ops.aten.gelu_backward.grad_input(g_h, h, grad_input=g_h)
        d = conv_nd(x.ndim)(x, w_dw, None, 1, ctx.padding, 1, c)
        n = instance_norm_apply(d, mean, rstd, n_w, n_b)
        n_rows = rows(n)
        g_w2 = g_h.t().mm(n_rows).view_as(w2) if need[6] else None
        g_b2 = g_h.sum(0) if ctx.has_b2 and need[7] else None
        del n, n_rows
        g_n = to_first(g_h.mm(w2.flatten(1)).view(*to_last(x).shape))
        del g_h
        g_d, g_nw, g_nb = instance_norm_backward(g_n, d, mean, rstd, n_w, True)
        del g_n
        g_x, g_wdw, _ = depthwise_backward(g_d, x, w_dw, ctx.padding, (1,) * (x.ndim - 2), need[0], need[1], False)
        if g_x is not None:
            g_x = g_x.add_(grad)
        return g_x, g_wdw, None, g_nw, g_nb, None, g_w2, g_b2, g_w3, g_b3, g_gamma, g_beta, None


# ---------------------------------------------------------------------------------------------------------------
# fused pre-norm residual FFN sub-layers of the seed block: x + gamma * PW2(body(GELU(PW1(IN(x)))))
# ---------------------------------------------------------------------------------------------------------------


def _one_sample(x: torch.Tensor) -> torch.Tensor:
    """A channels-last (B, C, S0, *S) tensor as the one sample (1, C, B * S0, *S) (a view): its per-channel
    statistics are the batch statistics, so BatchNorm (training mode) is the instance norm of this view."""
    last = to_last(x)
    return to_first(last.reshape(1, -1, *last.shape[2:]))


def _norm_view(x: torch.Tensor, batch: bool) -> torch.Tensor:
    return _one_sample(x) if batch else x


def _like(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``y`` (a channels-last map with ``x``'s elements, maybe another batch split) in the shape of ``x``."""
    return to_first(to_last(y).reshape(to_last(x).shape))


def _update_running_stats(norm_state, mean: torch.Tensor, rstd: torch.Tensor, eps: float, count: int) -> None:
    """BatchNorm's running-statistics update from the batch mean and ``rstd`` (unbiased variance, as PyTorch)."""
    running_mean, running_var, factor = norm_state
    var = (rstd.reshape(-1).double().pow(-2) - eps).clamp_min(0) * (count / max(count - 1, 1))
    running_mean.mul_(1 - factor).add_(mean.reshape(-1).to(running_mean.dtype), alpha=factor)
    running_var.mul_(1 - factor).add_(var.to(running_var.dtype), alpha=factor)


class _PreNormFFNCPU(torch.autograd.Function):
    """Fused LA-FFN / SDW-FFN residual sub-layer on channels-last CPU tensors.

    ``kind="sdw"``: ``body(h) = h + GELU(DW(h))``; ``kind="la"``: ``body(h) = h * DW2(DW1(h))``. The norm is a
    per-channel instance norm, or BatchNorm in training mode (``norm_state``: its running mean, running variance
    and update factor, updated here as ``nn.BatchNorm`` does). ``path_scale`` (B,): drop path's per-sample factor
    (0 or 1 / keep) on the branch. Saved for backward:
    the input, the expanded pre-activation and the depthwise outputs (``DW(h)``; ``DW1(h)`` and ``DW2(DW1(h))``);
    the norm output, ``h``, the body output and the projected branch are recomputed or never stored (the layer
    scale gradient comes from the fc2 GEMM, not from a saved branch output).
    """

    @staticmethod
    def forward(ctx, x, kind, n_w, n_b, eps, w1, b1, w2, b2, gamma, dw1_w, dw1_b, pad1, dil1, dw2_w, dw2_b, pad2, dil2,  # type: ignore[override]
                norm_state=None, path_scale=None):
        c = x.shape[1]
        batch = norm_state is not None
        n, mean, rstd = instance_norm_forward(_norm_view(x, batch), n_w, n_b, eps)
        if batch and norm_state[0] is not None:
            _update_running_stats(norm_state, mean, rstd, eps, x.numel() // c)
        p1 = spatial(gemm(rows(n), w1.flatten(1), b1), x)
        del n
        h = F.gelu(p1)
        if kind == "sdw":
            d1 = depthwise_same(h, dw1_w, dw1_b, pad1, dil1)
            z = h.add_(F.gelu(d1))
            saved = (d1,)
        else:
            d1 = depthwise_same(h, dw1_w, dw1_b, pad1, dil1)
            d2 = depthwise_same(d1, dw2_w, dw2_b, pad2, dil2)
            z = h.mul_(d2)
            saved = (d1, d2)
        w2m = w2.flatten(1)
        x_rows = rows(x)
        w_out = (w2m * gamma.unsqueeze(1)).t() if gamma is not None else w2m.t()
        b_out = (gamma * b2 if gamma is not None else b2) if b2 is not None else None
        if path_scale is None:
            out = x_rows + b_out if b_out is not None else x_rows.clone()
            out.addmm_(rows(z), w_out)
        else:  # drop path: the branch scaled per sample (rows are sample-major)
            branch = torch.mm(rows(z), w_out)
            if b_out is not None:
                branch.add_(b_out)
            out = x_rows.clone()
            out.view(x.shape[0], -1, c).addcmul_(branch.view(x.shape[0], -1, c), path_scale.view(-1, 1, 1))
            del branch
        del z, h
        ctx.save_for_backward(x, n_w, n_b, w1, w2, b2, gamma, dw1_w, dw2_w, mean, rstd, p1, path_scale, *saved)
        ctx.kind, ctx.eps, ctx.c, ctx.batch = kind, eps, c, batch
        ctx.pads, ctx.dils = (pad1, pad2), (dil1, dil2)
        ctx.has = (b1 is not None, b2 is not None, dw1_b is not None, dw2_b is not None)
        return spatial(out, x)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        x, n_w, n_b, w1, w2, b2, gamma, dw1_w, dw2_w, mean, rstd, p1, path_scale, *saved = ctx.saved_tensors
        need = ctx.needs_input_grad
        grad = grad.contiguous(memory_format=cl_format(x.ndim))
        g_rows = rows(grad)  # of the output; the residual path's gradient as is
        if path_scale is not None:  # the branch's gradient: per sample, times its drop-path factor
            g_rows = (g_rows.view(x.shape[0], -1, ctx.c) * path_scale.view(-1, 1, 1)).view(-1, ctx.c)
        w2m = w2.flatten(1)
        # recompute the body output z (and h) from the saved pre-activations
        h = F.gelu(p1)
        if ctx.kind == "sdw":
            (d1,) = saved
            z = h + F.gelu(d1)
        else:
            d1, d2 = saved
            z = h * d2
        z_rows = rows(z)
        sum_g = g_rows.sum(0)
        m = g_rows.t().mm(z_rows)  # (C, rC): grad^T z
        del z, z_rows
        if gamma is not None:
            g_w2 = (m * gamma.unsqueeze(1)).view_as(w2) if need[7] else None
            g_b2 = gamma * sum_g if ctx.has[1] and need[8] else None
            g_gamma = (m * w2m).sum(1) + (b2 * sum_g if b2 is not None else 0) if need[9] else None
            g_z = spatial(g_rows.mm(w2m * gamma.unsqueeze(1)), x)
        else:
            g_w2 = m.view_as(w2) if need[7] else None
            g_b2 = sum_g if ctx.has[1] and need[8] else None
            g_gamma = None
            g_z = spatial(g_rows.mm(w2m), x)
        del m
        (pad1, pad2), (dil1, dil2) = ctx.pads, ctx.dils
        g_dw2_w = g_dw2_b = None
        if ctx.kind == "sdw":
            g_d1 = torch.ops.aten.gelu_backward(g_z, d1)
            g_h, g_dw1_w, g_dw1_b = depthwise_backward(g_d1, h, dw1_w, pad1, dil1, True, need[10], ctx.has[2] and need[11])
            del g_d1
            g_h.add_(g_z)
        else:
            g_d2 = g_z * h
            g_d1, g_dw2_w, g_dw2_b = depthwise_backward(g_d2, d1, dw2_w, pad2, dil2, True, need[14], ctx.has[3] and need[15])
            del g_d2
            g_h, g_dw1_w, g_dw1_b = depthwise_backward(g_d1, h, dw1_w, pad1, dil1, True, need[10], ctx.has[2] and need[11])
            del g_d1
            g_h.addcmul_(g_z, d2)
        del g_z, h
        g_p1 = torch.ops.aten.gelu_backward.grad_input(g_h, p1, grad_input=g_h)
        g_p1_rows = rows(g_p1)
        xv = _norm_view(x, ctx.batch)
        n = instance_norm_apply(xv, mean, rstd, n_w, n_b)
        g_w1 = g_p1_rows.t().mm(rows(n)).view_as(w1) if need[5] else None
        g_b1 = g_p1_rows.sum(0) if ctx.has[0] and need[6] else None
        del n
        g_n = spatial(g_p1_rows.mm(w1.flatten(1)), xv)
        del g_p1, g_p1_rows
        g_x, g_nw, g_nb = instance_norm_backward(g_n, xv, mean, rstd, n_w, need[0])
        if g_x is not None:
            g_x = _like(g_x, x).add_(grad)
        return (g_x, None, g_nw, g_nb, None, g_w1, g_b1, g_w2, g_b2, g_gamma,
                g_dw1_w, g_dw1_b, None, None, g_dw2_w, g_dw2_b, None, None, None, None)


def _batch_norm_training(norm: nn.Module) -> bool:
    """A BatchNorm that normalises by this process's batch statistics (training mode, or no running statistics;
    not ``SyncBatchNorm``, whose statistics span processes)."""
    return (isinstance(norm, nn.modules.batchnorm._BatchNorm) and not isinstance(norm, nn.SyncBatchNorm)
            and norm.affine and (norm.training or not norm.track_running_stats))


def _batch_norm_state(norm: nn.modules.batchnorm._BatchNorm) -> tuple:
    """(running mean, running variance, update factor) of a BatchNorm about to normalise one training batch,
    ``num_batches_tracked`` advanced as ``nn.BatchNorm`` does; (None, None, 0) without running statistics."""
    if not (norm.training and norm.track_running_stats and norm.running_mean is not None):
        return None, None, 0.0
    norm.num_batches_tracked.add_(1)
    factor = 1.0 / float(norm.num_batches_tracked) if norm.momentum is None else norm.momentum
    return norm.running_mean, norm.running_var, factor


def ffn_fusable(parts: FFNParts, x: torch.Tensor) -> bool:
    """Whether an LA-FFN / SDW-FFN residual sub-layer can run as one :class:`_PreNormFFNCPU` node."""
    if parts.kind not in ("la", "sdw") or len(parts.depthwise) != (1 if parts.kind == "sdw" else 2):
        return False
    params = [p for m in (parts.norm, parts.fc1, parts.fc2, *parts.depthwise) for p in m.parameters()]
    return (
        fast_ops_enabled()
        and x.device.type == "cpu"
        and is_channels_last(x)
        and needs_autograd(x, parts.scale, *params)
        and (_instance_norm_layer(parts.norm) or _batch_norm_training(parts.norm))
        and _is_plain_gelu(parts.act)
        and conv_kind(parts.fc1) == "pointwise"
        and conv_kind(parts.fc2) == "pointwise"
        and all(isinstance(m, (nn.Conv2d, nn.Conv3d)) and conv_kind(m) == "depthwise" for m in parts.depthwise)
    )


def ffn_forward(parts: FFNParts, x: torch.Tensor) -> torch.Tensor:
    """Fused training forward of ``x + DropPath(gamma * fc2(body(GELU(fc1(norm(x))))))``."""
    args = []
    for conv in (*parts.depthwise, None)[:2]:
        if conv is None:
            args += [None, None, None, None]
            continue
        w, pad = crop_depthwise(x.shape[2:], conv.weight, conv.padding, conv.dilation)
        args += [w, conv.bias, pad, tuple(conv.dilation)]
    norm = parts.norm
    norm_state = _batch_norm_state(norm) if isinstance(norm, nn.modules.batchnorm._BatchNorm) else None
    # the drop-path draw comes last, after everything the unfused sub-layer computes first (same random stream)
    factor = parts.drop.factor(x) if parts.drop is not None else None
    path_scale = None if factor is None else factor.view(-1)
    return _PreNormFFNCPU.apply(
        x, parts.kind, norm.weight, norm.bias, norm.eps, parts.fc1.weight, parts.fc1.bias, parts.fc2.weight,
        parts.fc2.bias, parts.scale, *args, norm_state, path_scale,
    )


# ---------------------------------------------------------------------------------------------------------------
# fused conv -> instance norm (-> GELU): stem, downsampling, decoder skip fusion
# ---------------------------------------------------------------------------------------------------------------


class _ConvNormCPU(torch.autograd.Function):
    """``[GELU](IN(conv(x)))`` for a dense conv, saving only ``x``: the conv output is recomputed in backward."""

    @staticmethod
    def forward(ctx, x, w, b, stride, padding, dilation, groups, n_w, n_b, eps, gelu):  # type: ignore[override]
        p = conv_nd(x.ndim)(x, w, b, stride, padding, dilation, groups).contiguous(memory_format=cl_format(x.ndim))
        y, mean, rstd = instance_norm_forward(p, n_w, n_b, eps)
        del p
        if gelu:
            y = F.gelu(y)
        ctx.save_for_backward(x, w, n_w, n_b, mean, rstd)
        ctx.conv = (stride, padding, dilation, groups)
        ctx.eps, ctx.gelu, ctx.has_bias = eps, gelu, b is not None
        ctx.bias_shape = None if b is None else list(b.shape)
        ctx.b = b
        return y

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        x, w, n_w, n_b, mean, rstd = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conv
        need = ctx.needs_input_grad
        p = conv_nd(x.ndim)(x, w, ctx.b, stride, padding, dilation, groups).contiguous(memory_format=cl_format(x.ndim))
        grad = grad.contiguous(memory_format=cl_format(x.ndim))
        if ctx.gelu:
            grad = torch.ops.aten.gelu_backward(grad, instance_norm_apply(p, mean, rstd, n_w, n_b))
        g_p, g_nw, g_nb = instance_norm_backward(grad, p, mean, rstd, n_w, True)
        del p, grad
        nd = x.ndim - 2
        g_x, g_w, g_b = torch.ops.aten.convolution_backward(
            g_p, x, w, ctx.bias_shape, list(stride), list(padding), list(dilation), False, [0] * nd, groups,
            [need[0], need[1], ctx.has_bias and need[2]],
        )
        return g_x, g_w, g_b, None, None, None, None, g_nw, g_nb, None, None


class _SkipFuseCPU(torch.autograd.Function):
    """``GELU(IN(PW(cat(up, skip))))`` saving only ``up`` and ``skip``; the projection is recomputed in backward."""

    @staticmethod
    def forward(ctx, up, skip, w, b, n_w, n_b, eps):  # type: ignore[override]
        p = _project_pair(up, skip, w, b)
        y, mean, rstd = instance_norm_forward(p, n_w, n_b, eps)
        del p
        ctx.save_for_backward(up, skip, w, b, n_w, n_b, mean, rstd)
        ctx.eps = eps
        return F.gelu(y)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        up, skip, w, b, n_w, n_b, mean, rstd = ctx.saved_tensors
        need = ctx.needs_input_grad
        c = up.shape[1]
        p = _project_pair(up, skip, w, b)
        g_n = torch.ops.aten.gelu_backward(
            grad.contiguous(memory_format=cl_format(up.ndim)), instance_norm_apply(p, mean, rstd, n_w, n_b)
        )
        g_p, g_nw, g_nb = instance_norm_backward(g_n, p, mean, rstd, n_w, True)
        del p, g_n
        g_rows = rows(g_p)
        wm = w.flatten(1)
        g_up = spatial(g_rows.mm(wm[:, :c]), up) if need[0] else None
        g_skip = spatial(g_rows.mm(wm[:, c:]), skip) if need[1] else None
        g_w = torch.cat((g_rows.t().mm(rows(up)), g_rows.t().mm(rows(skip))), 1).view_as(w) if need[2] else None
        g_b = g_rows.sum(0) if b is not None and need[3] else None
        return g_up, g_skip, g_w, g_b, g_nw, g_nb, None


def _project_pair(up: torch.Tensor, skip: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    c = up.shape[1]
    wm = w.flatten(1)
    out = gemm(rows(up), wm[:, :c], b)
    out.addmm_(rows(skip), wm[:, c:].t())
    return spatial(out, up)


def _instance_norm_layer(norm: nn.Module) -> bool:
    return isinstance(norm, nn.GroupNorm) and norm.num_groups == norm.num_channels and norm.affine


def _is_plain_gelu(m: nn.Module | None) -> bool:
    return type(m) is nn.GELU and m.approximate == "none"


def conv_norm_fusable(conv: nn.Module, norm: nn.Module, act: nn.Module | None, x: torch.Tensor) -> bool:
    """Whether ``[act](norm(conv(x)))`` (dense conv, per-channel GroupNorm, GELU or nothing) runs as one node."""
    return (
        fast_ops_enabled()
        and x.device.type == "cpu"
        and (is_channels_last(x) or x.shape[1] == 1)
        and needs_autograd(x, *conv.parameters(), *norm.parameters())
        and isinstance(conv, (nn.Conv2d, nn.Conv3d))
        and conv.padding_mode == "zeros"
        and not isinstance(conv.padding, str)
        and _instance_norm_layer(norm)
        and (act is None or _is_plain_gelu(act))
    )


def conv_norm_forward(conv: nn.Module, norm: nn.Module, act: nn.Module | None, x: torch.Tensor) -> torch.Tensor:
    """Fused training forward of ``[GELU](norm(conv(x)))`` (see :class:`_ConvNormCPU`)."""
    return _ConvNormCPU.apply(
        x, conv.weight, conv.bias, tuple(conv.stride), tuple(conv.padding), tuple(conv.dilation), conv.groups,
        norm.weight, norm.bias, norm.eps, act is not None,
    )


def skip_fuse_fusable(proj: nn.Module, norm: nn.Module, act: nn.Module, up: torch.Tensor, skip: torch.Tensor) -> bool:
    """Whether ``act(norm(proj(cat((up, skip), 1))))`` runs as one :class:`_SkipFuseCPU` node."""
    return (
        fast_ops_enabled()
        and up.device.type == "cpu"
        and is_channels_last(up)
        and is_channels_last(skip)
        and needs_autograd(up, skip, *proj.parameters(), *norm.parameters())
        and conv_kind(proj) == "pointwise"
        and _instance_norm_layer(norm)
        and _is_plain_gelu(act)
    )


def skip_fuse_forward(proj: nn.Module, norm: nn.Module, up: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
    """Fused training forward of ``GELU(norm(proj(cat((up, skip), 1))))`` (see :class:`_SkipFuseCPU`)."""
    return _SkipFuseCPU.apply(up, skip, proj.weight, proj.bias, norm.weight, norm.bias, norm.eps)


def _is_grn(grn: nn.Module, x: torch.Tensor) -> bool:
    """A global response norm whose parameters match the node's GRN (per-channel ``gamma``/``beta``, ``x``'s
    dtype; the node computes the norms in that dtype, which the CPU route keeps at float32 or float64)."""
    gamma, beta = getattr(grn, "gamma", None), getattr(grn, "beta", None)
    return (isinstance(gamma, torch.Tensor) and isinstance(beta, torch.Tensor) and gamma.ndim == 1
            and gamma.shape == beta.shape and gamma.dtype == x.dtype and x.dtype in (torch.float32, torch.float64))


def roy_fusable(parts: RoyParts, x: torch.Tensor) -> bool:
    """Whether a Roy et al. block with an identity residual runs as one :class:`_RoyBlockCPU` node."""
    dw, norm = parts.dw, parts.norm
    mods = (dw, norm, parts.expand, parts.proj, parts.grn)
    params = [p for m in mods if m is not None for p in m.parameters()]
    return (
        fast_ops_enabled()
        and x.device.type == "cpu"
        and is_channels_last(x)
        and needs_autograd(x, *params)
        and isinstance(dw, (nn.Conv2d, nn.Conv3d))
        and conv_kind(dw) == "depthwise"
        and dw.bias is None
        and all(dl == 1 for dl in dw.dilation)
        and _instance_norm_layer(norm)
        and conv_kind(parts.expand) == "pointwise"
        and conv_kind(parts.proj) == "pointwise"
        and _is_plain_gelu(parts.act)
        and (parts.grn is None or _is_grn(parts.grn, x))
    )


def roy_forward(parts: RoyParts, x: torch.Tensor) -> torch.Tensor:
    """Fused training forward of ``x + proj(G(GELU(expand(norm(dw(x))))))``, ``G`` the block's GRN or the identity
    (see :class:`_RoyBlockCPU`)."""
    dw, norm = parts.dw, parts.norm
    w_dw, padding = crop_depthwise(x.shape[2:], dw.weight, dw.padding, dw.dilation)
    grn = parts.grn
    extra = () if grn is None else (grn.gamma, grn.beta, grn.eps)
    return _RoyBlockCPU.apply(x, w_dw, padding, norm.weight, norm.bias, norm.eps, parts.expand.weight,
                              parts.expand.bias, parts.proj.weight, parts.proj.bias, *extra)
