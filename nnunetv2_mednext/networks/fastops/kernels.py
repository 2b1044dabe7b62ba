"""Fast CPU kernels of single MedNeXt ops: pointwise and depthwise convolutions, instance norm (pure PyTorch).

Each computes exactly what the plain op computes (``tests/test_fastops.py``: outputs and gradients, ``gradcheck``
for every custom backward):

* **pointwise convolutions as GEMMs** (:func:`pointwise_conv`): ``F.linear`` on the permuted (contiguous) view of a
  channels-last map; the decoder's ``PW(cat(up, skip))`` as two GEMMs into one output (:func:`concat_pointwise`);
* **depthwise convolutions** (:func:`depthwise_conv`): taps that only ever read zero padding are cropped from the
  kernel; a dilated convolution runs as a plain one on the map's ``d``-strided sub-grids (oneDNN's dilated
  depthwise kernel is not vectorised); on CPU a custom backward: the input gradient is the forward convolution of
  the output gradient with the flipped kernel, the weight gradient the fastest of three exact formulations
  (:func:`depthwise_weight_grad`); strided and transposed 3D depthwise convs (Roy et al.'s down/up blocks) compute
  their weight gradient as 2D calls per depth tap (:class:`_StridedDepthwise3DCPU`);
* **instance norm on channels-last tensors** (:func:`instance_norm`): ``native_group_norm``'s channels-last forward
  and a closed-form backward (PyTorch's channels-last GroupNorm backward is about 2x its contiguous one).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .switch import (
    channels_last_wanted,
    cl_format,
    conv_nd,
    fast_ops_enabled,
    is_channels_last,
    needs_autograd,
    to_first,
    to_last,
)

ConvModule = nn.Conv2d | nn.Conv3d

# weight gradient of a depthwise conv as a depthwise conv of the input with the output gradient as kernel: faster
# than oneDNN's backward-weights while the "kernel" (one sample's spatial map) is small
_SWAPPED_WGRAD_MAX_VOXELS = 4096


# ---------------------------------------------------------------------------------------------------------------
# pointwise convolution
# ---------------------------------------------------------------------------------------------------------------


def conv_kind(m: nn.Module) -> str:
    """``pointwise`` / ``strided_pointwise`` (1x1, one group, no padding), ``depthwise`` (stride 1, 'same' padding,
    one channel per group) or ``plain`` (anything else) for a convolution module."""
    if m.padding_mode != "zeros" or isinstance(m.padding, str):
        return "plain"
    if all(k == 1 for k in m.kernel_size) and m.groups == 1 and all(p == 0 for p in m.padding):
        return "pointwise" if all(s == 1 for s in m.stride) else "strided_pointwise"
    if any(s != 1 for s in m.stride):
        return "plain"
    same = all(k % 2 == 1 and p == d * (k - 1) // 2 for k, p, d in zip(m.kernel_size, m.padding, m.dilation))
    if same and m.groups == m.in_channels == m.out_channels:
        return "depthwise"
    return "plain"


def pointwise_conv(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: Sequence[int] | None = None
) -> torch.Tensor:
    """1x1(x1) convolution (optionally strided); a GEMM over the channel axis when ``x`` is channels-last.

    A strided 1x1 convolution is the 1x1 convolution of the strided subsample (this also avoids a crash of
    PyTorch 2.14's channels-last strided 1x1 convolution backward on CPU).
    """
    strided = stride is not None and any(s != 1 for s in stride)
    if fast_ops_enabled() and is_channels_last(x) and channels_last_wanted(x.device):
        if strided:
            x = x[(slice(None), slice(None), *(slice(None, None, s) for s in stride))]  # type: ignore[union-attr]
        return to_first(F.linear(to_last(x), weight.flatten(1), bias))
    conv = F.conv2d if x.ndim == 4 else F.conv3d
    return conv(x, weight, bias, tuple(stride) if strided else 1)  # type: ignore[arg-type]


def concat_pointwise(x: torch.Tensor, skip: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``PW(cat((x, skip), 1))`` without materialising the concatenation (two GEMMs into one output)."""
    if fast_ops_enabled() and is_channels_last(x) and is_channels_last(skip) and channels_last_wanted(x.device):
        c = x.shape[1]
        w = weight.flatten(1)
        x2 = to_last(x).reshape(-1, c)
        s2 = to_last(skip).reshape(-1, skip.shape[1])
        y = torch.addmm(F.linear(x2, w[:, :c], bias), s2, w[:, c:].t())
        return to_first(y.view(*to_last(x).shape[:-1], w.shape[0]))
    return (F.conv2d if x.ndim == 4 else F.conv3d)(torch.cat((x, skip), 1), weight, bias)


# ---------------------------------------------------------------------------------------------------------------
# depthwise convolution
# ---------------------------------------------------------------------------------------------------------------


def useful_taps(kernel: Sequence[int], dilation: Sequence[int], size: Sequence[int]) -> tuple[int, ...]:
    """Per axis, how many central taps of a 'same'-padded kernel can read a voxel of a map of ``size``.

    Tap ``a`` of an odd kernel ``k`` reads offset ``d * (a - (k - 1) / 2)``; offsets of magnitude ``>= size``
    only ever read zero padding, so those taps contribute nothing (and get a zero gradient).
    """
    out = []
    for k, d, s in zip(kernel, dilation, size):
        half = (k - 1) // 2
        out.append(2 * min(half, (s - 1) // d) + 1)
    return tuple(out)


def _effective_dilation(weight: torch.Tensor, dilation: Sequence[int]) -> tuple[int, ...]:
    return tuple(d if k > 1 else 1 for d, k in zip(dilation, weight.shape[2:]))


def _dilated_as_subgrids(x, weight, bias, dilation):
    """A dilated 'same' depthwise conv of a channels-last map as a plain one on its ``d``-strided sub-grids.

    Output voxel ``p`` only reads voxels congruent to ``p`` modulo ``d`` (per axis), so splitting the map into the
    ``prod(d)`` sub-grids (moved to the batch axis; the map is zero-padded to a multiple of ``d``, which adds
    nothing but zeros) turns dilation ``d`` into dilation 1: oneDNN's vectorised kernel instead of its slow
    dilated one (about 2x faster on a 28x28 map, 5x on 8^3).
    """
    nd = x.ndim - 2
    b, c = x.shape[:2]
    size = list(x.shape[2:])
    padded = [-(-s // d) * d for s, d in zip(size, dilation)]
    sub = [p // d for p, d in zip(padded, dilation)]
    rows = to_last(x)
    if padded != size:
        rows = F.pad(rows, [0, 0] + [v for s, p in zip(reversed(size), reversed(padded)) for v in (0, p - s)])
    split = [b] + [v for sd in zip(sub, dilation) for v in sd] + [c]  # (B, s1, d1, s2, d2, ..., C)
    to_batch = [0] + [2 + 2 * i for i in range(nd)] + [1 + 2 * i for i in range(nd)] + [2 * nd + 1]
    grids = to_first(rows.reshape(split).permute(to_batch).reshape(b * math.prod(dilation), *sub, c))
    w, pad = crop_depthwise(sub, weight, [(k - 1) // 2 for k in weight.shape[2:]], (1,) * nd)
    y = conv_nd(x.ndim)(grids, w, bias, 1, pad, 1, c)
    back = [0] + [v for i in range(nd) for v in (1 + nd + i, 1 + i)] + [2 * nd + 1]
    out = to_last(y).reshape(b, *dilation, *sub, c).permute(back).reshape(b, *padded, c)
    if padded != size:
        out = out[(slice(None), *(slice(0, s) for s in size))].contiguous()
    return to_first(out)


def depthwise_same(x, weight, bias, padding, dilation):
    """Stride-1 'same' depthwise conv (no autograd node of its own inside the fused paths)."""
    dil = _effective_dilation(weight, dilation)
    if any(d > 1 for d in dil) and fast_ops_enabled() and is_channels_last(x) and x.device.type == "cpu":
        return _dilated_as_subgrids(x, weight, bias, dil)
    return conv_nd(x.ndim)(x, weight, bias, 1, padding, dilation, x.shape[1])


def _native_weight_grad(x, grad, weight, padding, dilation) -> torch.Tensor:
    nd = x.ndim - 2
    return torch.ops.aten.convolution_backward(
        grad, x, weight, None, [1] * nd, list(padding), list(dilation), False, [0] * nd, x.shape[1], [False, True, False]
    )[1]


def depthwise_weight_grad(x, grad, weight, padding, dilation) -> torch.Tensor:
    """Weight gradient of a stride-1 depthwise conv, by the fastest of three exact formulations on CPU.

    * small maps (at most ``_SWAPPED_WGRAD_MAX_VOXELS`` voxels per sample): per sample, a depthwise convolution of
      the input (zero-padded by the convolution itself) with the output gradient as the kernel and the dilation as
      the stride; output voxel ``t`` is ``sum_p x_pad[p + d t] g[p]``, the gradient of tap ``t``;
    * larger 3D maps: one 2D backward-weights call per depth tap and sample (oneDNN's 2D kernel is vectorised,
      its 3D one is not: about 5x faster on a 64^3 map);
    * larger 2D maps: oneDNN's own backward-weights.
    """
    conv = conv_nd(x.ndim)
    channels, size = x.shape[1], x.shape[2:]
    if math.prod(size) <= _SWAPPED_WGRAD_MAX_VOXELS:
        # the convolution pads (no zero-padded copy of x: up to 6x its size for a dilated kernel on a small map)
        out = None
        for b in range(x.shape[0]):
            part = conv(x[b : b + 1], grad[b].unsqueeze(1), None, dilation, padding, 1, channels)
            out = part if out is None else out.add_(part)
        return out.reshape(weight.shape)
    if x.ndim == 4 or not is_channels_last(x):
        return _native_weight_grad(x, grad, weight, padding, dilation)
    b, c, d, h, w = x.shape
    pd, ph, pw = padding
    # zero-padded copy, channels-last; a depth slice of one sample is then a channels-last 2D batch
    xp = x.new_empty(b, d + 2 * pd, h + 2 * ph, w + 2 * pw, c).permute(0, 4, 1, 2, 3)
    xp[:, :, pd : pd + d, ph : ph + h, pw : pw + w] = x
    for axis, p in zip((2, 3, 4), padding):  # zero only the border
        if p:
            xp.narrow(axis, 0, p).zero_()
            xp.narrow(axis, xp.shape[axis] - p, p).zero_()
    grad = grad.contiguous(memory_format=torch.channels_last_3d)
    weight2d = weight[:, :, 0]
    out = weight.new_empty(weight.shape)
    for i in range(weight.shape[2]):
        acc = None
        for s in range(b):
            start = i * dilation[0]
            part = _native_weight_grad(
                xp[s, :, start : start + d].transpose(0, 1), grad[s].transpose(0, 1), weight2d, (0, 0), dilation[1:]
            )
            acc = part if acc is None else acc.add_(part)
        out[:, :, i] = acc
    return out


def depthwise_backward(grad, x, weight, padding, dilation, need_x: bool, need_w: bool, need_b: bool):
    """(grad_x, grad_weight, grad_bias) of a stride-1 'same' depthwise convolution (CPU)."""
    if is_channels_last(x):
        grad = grad.contiguous(memory_format=cl_format(x.ndim))
    grad_x = grad_w = grad_b = None
    if need_x:
        # correlation with the flipped kernel; 'same' padding of an odd kernel is its own transpose
        grad_x = depthwise_same(grad, weight.flip(list(range(2, x.ndim))), None, padding, dilation)
    if need_w:
        grad_w = depthwise_weight_grad(x, grad, weight, padding, dilation)
    if need_b:
        grad_b = grad.sum([0, *range(2, x.ndim)])
    return grad_x, grad_w, grad_b


class _DepthwiseConvCPU(torch.autograd.Function):
    """Stride-1 'same' depthwise convolution with a faster CPU backward (see the module docstring)."""

    @staticmethod
    def forward(ctx, x, weight, bias, padding, dilation):  # type: ignore[override]
        ctx.save_for_backward(x, weight)
        ctx.padding, ctx.dilation, ctx.has_bias = padding, dilation, bias is not None
        return depthwise_same(x, weight, bias, padding, dilation)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        x, weight = ctx.saved_tensors
        need = ctx.needs_input_grad
        gx, gw, gb = depthwise_backward(
            grad, x, weight, ctx.padding, ctx.dilation, need[0], need[1], ctx.has_bias and need[2]
        )
        return gx, gw, gb, None, None


def crop_depthwise(size: Sequence[int], weight: torch.Tensor, padding: Sequence[int], dilation: Sequence[int]):
    """The kernel without the taps that only read zero padding on a map of ``size``, and the matching padding."""
    kernel = tuple(weight.shape[2:])
    taps = useful_taps(kernel, dilation, size)
    if taps == kernel:
        return weight, tuple(padding)
    index = (slice(None), slice(None), *(slice((k - t) // 2, (k + t) // 2) for k, t in zip(kernel, taps)))
    return weight[index], tuple(d * (t - 1) // 2 for d, t in zip(dilation, taps))


def depthwise_conv(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    padding: Sequence[int],
    dilation: Sequence[int],
) -> torch.Tensor:
    """Stride-1 depthwise convolution with 'same' padding ``dilation * (k - 1) / 2`` (odd kernels)."""
    conv = conv_nd(x.ndim)
    dilation = tuple(dilation)
    if not fast_ops_enabled():
        return conv(x, weight, bias, 1, tuple(padding), dilation, x.shape[1])
    weight, padding = crop_depthwise(x.shape[2:], weight, padding, dilation)
    if x.device.type == "cpu" and needs_autograd(x, weight, bias):
        return _DepthwiseConvCPU.apply(x, weight, bias, padding, dilation)
    return depthwise_same(x, weight, bias, padding, dilation)


# ---------------------------------------------------------------------------------------------------------------
# strided and transposed depthwise convolutions in 3D (the Roy et al. down/up blocks)
# ---------------------------------------------------------------------------------------------------------------


def _strideddepthwise_weight_grad(inp, grad_out, weight, stride, padding):
    """Weight gradient of a strided depthwise 3D conv ``inp -> grad_out``: ``sum_p inp_pad[s p + t] g[p]`` per tap,
    as one 2D backward-weights call per depth tap and sample (oneDNN's 3D one is not vectorised)."""
    b, c = inp.shape[:2]
    pd, ph, pw = padding
    xp = F.pad(inp, [pw, pw, ph, ph, pd, pd]).contiguous(memory_format=torch.channels_last_3d)
    grad_out = grad_out.contiguous(memory_format=torch.channels_last_3d)
    n_out = grad_out.shape[2]
    weight2d = weight[:, :, 0]
    out = weight.new_empty(weight.shape)
    for i in range(weight.shape[2]):
        acc = None
        for s in range(b):
            planes = xp[s, :, i : i + stride[0] * (n_out - 1) + 1 : stride[0]].transpose(0, 1)
            part = torch.ops.aten.convolution_backward(
                grad_out[s].transpose(0, 1), planes, weight2d, None, list(stride[1:]), [0, 0], [1, 1], False, [0, 0],
                c, [False, True, False],
            )[1]
            acc = part if acc is None else acc.add_(part)
        out[:, :, i] = acc
    return out


class _StridedDepthwise3DCPU(torch.autograd.Function):
    """Strided (``transposed=False``) or transposed depthwise 3D conv whose weight gradient runs as 2D calls.

    Forward and input gradient are oneDNN's; the weight gradient (oneDNN's slowest part for these convs: 370 ms of
    a 530 ms forward + backward for a 64-channel 32^3 -> 64^3 transposed conv) is
    :func:`_strided_depthwise_weight_grad`.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, output_padding, transposed):  # type: ignore[override]
        ctx.save_for_backward(x, weight)
        ctx.conf = (stride, padding, output_padding, transposed, bias is not None)
        if transposed:
            return F.conv_transpose3d(x, weight, bias, stride, padding, output_padding, x.shape[1])
        return F.conv3d(x, weight, bias, stride, padding, 1, x.shape[1])

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        x, weight = ctx.saved_tensors
        stride, padding, _, transposed, has_bias = ctx.conf
        need = ctx.needs_input_grad
        grad = grad.contiguous(memory_format=torch.channels_last_3d)
        c = x.shape[1]
        g_x = g_w = g_b = None
        if need[0]:
            if transposed:  # the adjoint of a transposed conv is the strided conv
                g_x = F.conv3d(grad, weight, None, stride, padding, 1, c)
            else:
                g_x = torch.ops.aten.convolution_backward(
                    grad, x, weight, None, list(stride), list(padding), [1, 1, 1], False, [0, 0, 0], c,
                    [True, False, False],
                )[0]
        if need[1]:  # a transposed conv's weight gradient is that of the strided conv from its output to its input
            g_w = _strideddepthwise_weight_grad(grad, x, weight, stride, padding) if transposed else \
                _strideddepthwise_weight_grad(x, grad, weight, stride, padding)
        if has_bias and need[2]:
            g_b = grad.sum([0, 2, 3, 4])
        return g_x, g_w, g_b, None, None, None, None


def strided_depthwise_fusable(m: nn.Module, x: torch.Tensor) -> bool:
    """A 3D depthwise (transposed) conv with a stride, on a channels-last CPU tensor that needs gradients."""
    return (
        fast_ops_enabled()
        and x.ndim == 5
        and x.device.type == "cpu"
        and is_channels_last(x)
        and m.groups == m.in_channels == m.out_channels  # type: ignore[attr-defined]
        and m.padding_mode == "zeros"  # type: ignore[attr-defined]
        and not isinstance(m.padding, str)  # type: ignore[attr-defined]
        and all(d == 1 for d in m.dilation)  # type: ignore[attr-defined]
        and any(st != 1 for st in m.stride)  # type: ignore[attr-defined]
        and needs_autograd(x, *m.parameters())
    )


def strided_depthwise_forward(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    transposed = isinstance(m, nn.ConvTranspose3d)
    return _StridedDepthwise3DCPU.apply(
        x, m.weight, m.bias, tuple(m.stride), tuple(m.padding),  # type: ignore[attr-defined]
        tuple(m.output_padding) if transposed else (0, 0, 0), transposed,  # type: ignore[attr-defined]
    )


# ---------------------------------------------------------------------------------------------------------------
# instance norm (per-channel GroupNorm)
# ---------------------------------------------------------------------------------------------------------------


def instance_norm_forward(x, weight, bias, eps):
    """(y, mean, rstd) with mean/rstd of shape (B, C)."""
    b, c = x.shape[:2]
    y, mean, rstd = torch.native_group_norm(x, weight, bias, b, c, x.numel() // (b * c), c, eps)
    return y, mean.view(b, c), rstd.view(b, c)


def instance_norm_apply(x, mean, rstd, weight, bias):
    """The normalised map from saved statistics (one pass; the recompute path of the fused nodes)."""
    b, c = x.shape[:2]
    scale = rstd * weight
    shift = bias - mean * scale
    y = torch.addcmul(shift.unsqueeze(1), to_last(x).reshape(b, -1, c), scale.unsqueeze(1))
    return to_first(y.view(*to_last(x).shape))


def instance_norm_backward(grad, x, mean, rstd, weight, need_x: bool):
    """(grad_x, grad_weight, grad_bias) of a per-channel norm of a channels-last ``x`` (closed form)."""
    b, c = x.shape[:2]
    xv = to_last(x).reshape(b, -1, c)
    gv = to_last(grad.contiguous(memory_format=cl_format(x.ndim))).reshape(b, -1, c)
    n = xv.shape[1]
    sum_g = torch.bmm(xv.new_ones(b, 1, n), gv).squeeze(1)
    if c <= 32:  # a C x C GEMM (diagonal kept) beats an elementwise product + reduction for few channels
        sum_gx = torch.diagonal(torch.bmm(gv.transpose(1, 2), xv), dim1=1, dim2=2)
    else:
        sum_gx = torch.bmm(xv.new_ones(b, 1, n), gv * xv).squeeze(1)
    # sum over voxels of grad * x_hat, per (sample, channel)
    sum_g_xhat = rstd * (sum_gx - mean * sum_g)
    grad_x = None
    if need_x:
        scale = rstd * weight if weight is not None else rstd
        coef_x = -scale * rstd * sum_g_xhat / n
        shift = scale * (rstd * sum_g_xhat * mean - sum_g) / n
        gx = torch.addcmul(shift.unsqueeze(1), xv, coef_x.unsqueeze(1)).addcmul_(gv, scale.unsqueeze(1))
        grad_x = to_first(gx.view(b, *x.shape[2:], c))
    return grad_x, sum_g_xhat.sum(0), sum_g.sum(0)


class _InstanceNormChannelsLast(torch.autograd.Function):
    """Per-sample, per-channel normalisation of a channels-last tensor with affine ``weight``/``bias``."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps):  # type: ignore[override]
        y, mean, rstd = instance_norm_forward(x, weight, bias, eps)
        ctx.save_for_backward(x, mean, rstd, weight)
        return y

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        x, mean, rstd, weight = ctx.saved_tensors
        return (*instance_norm_backward(grad, x, mean, rstd, weight, ctx.needs_input_grad[0]), None)


def instance_norm(x: torch.Tensor, num_groups: int, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    """``F.group_norm``; the per-channel case (``num_groups == C``) on a channels-last CPU tensor runs faster."""
    if (
        fast_ops_enabled()
        and num_groups == x.shape[1]
        and x.device.type == "cpu"
        and weight is not None
        and is_channels_last(x)
        and needs_autograd(x, weight, bias)
    ):
        return _InstanceNormChannelsLast.apply(x, weight, bias, eps)
    return F.group_norm(x, num_groups, weight, bias, eps)


def gemm(x2d: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return F.linear(x2d, weight, bias)
