"""Fast execution of MedNeXt layers: the same parameters and the same maths, cheaper kernels (pure PyTorch).

A MedNeXt network is made of cheap-in-MACs ops (1x1 convolutions, depthwise convolutions, per-channel norms,
GELU) that PyTorch's default kernels run far below peak on CPU, and it keeps many maps for backward. This module
changes *how* they run, never *what* they compute (``tests/test_fastops.py`` checks outputs and gradients against
the plain modules, and every custom backward with ``gradcheck``):

* **Channels-last activations on CPU.** :func:`prepare_input` makes the activations channels-last; every op below
  keeps that layout, so the ``(B, C, *S)`` tensors are ``(B, *S, C)`` in memory. oneDNN's depthwise kernels
  are 2-4x faster in that layout, and a 1x1 convolution becomes one GEMM over the channel axis.
* **Pointwise convolutions as GEMMs** (:func:`pointwise_conv`): ``F.linear`` on the permuted (contiguous) view; the
  decoder's ``PW(cat(up, skip))`` is two GEMMs into one output (no concatenated copy).
* **Depthwise convolutions** (:func:`depthwise_conv`):

  - taps that only ever read zero padding are cropped from the kernel (a dilated 7x7 on a 7x7 map has 5x5
    useful taps; their gradient is exactly zero either way);
  - a dilated convolution runs as a plain one on the map's ``d``-strided sub-grids (oneDNN's dilated depthwise
    kernel is not vectorised);
  - on CPU, a custom backward: the input gradient is the forward convolution of the output gradient with the
    flipped kernel (oneDNN's depthwise forward is several times faster than its backward-data), and the weight
    gradient comes from the fastest of three exact formulations (see :func:`_depthwise_weight_grad`);
  - strided and transposed depthwise 3D convs (Roy et al. down/up blocks) compute their weight gradient as 2D
    calls per depth tap (:class:`_StridedDepthwise3DCPU`).

* **Instance norm on channels-last tensors** (:func:`instance_norm`): ``native_group_norm``'s channels-last forward
  and a closed-form backward (PyTorch's channels-last GroupNorm backward is about 2x its contiguous one).
* **Fused autograd nodes** for the training forward of whole sub-blocks: the Roy et al. block
  (:class:`_RoyBlockCPU`), the seed block's LA-FFN / SDW-FFN residual sub-layers (:class:`_PreNormFFNCPU`; instance
  norm, or BatchNorm on batch statistics, with drop path), conv ->
  norm (-> GELU) (stem, downsampling: :class:`_ConvNormCPU`) and the decoder's skip fusion (:class:`_SkipFuseCPU`).
  Each saves only its input and its expensive intermediate maps (GEMM and depthwise outputs) and recomputes the
  cheap ones (norm output, GELU output, products) in backward: the network keeps about half the bytes for
  backward, and fewer temporaries are allocated.

Everything falls back to the plain op when fast ops are off (``NNUNETV2_MEDNEXT_FAST_OPS=0`` or
:func:`reference_ops`), while ``torch.compile`` traces (the compiler fuses on its own), and for layouts or
configurations it does not cover (e.g. layer norm, BatchNorm in eval mode inside a fused node). The CPU is the measured target: on other
devices only the exact tap cropping applies unless ``NNUNETV2_MEDNEXT_CHANNELS_LAST=1`` asks for channels-last
activations (``0`` turns them off on CPU).
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .recompute import region_forward
from .v1_blocks import MedNeXtV1Block

FAST_OPS_ENV = "NNUNETV2_MEDNEXT_FAST_OPS"
CHANNELS_LAST_ENV = "NNUNETV2_MEDNEXT_CHANNELS_LAST"

_STATE = {"enabled": os.environ.get(FAST_OPS_ENV, "1").strip().lower() not in ("0", "off", "false", "no")}

# weight gradient of a depthwise conv as a depthwise conv of the input with the output gradient as kernel: faster
# than oneDNN's backward-weights while the "kernel" (one sample's spatial map) is small
_SWAPPED_WGRAD_MAX_VOXELS = 4096


def _autocast_active() -> bool:
    return torch.is_autocast_enabled("cpu") or torch.is_autocast_enabled("cuda")


def fast_ops_enabled() -> bool:
    """Whether the fast paths run: on unless ``NNUNETV2_MEDNEXT_FAST_OPS=0``; off while compiling and under autocast.

    The fused nodes are written for full-precision tensors; under ``torch.autocast`` (bf16 on CPU, fp16 on CUDA)
    the plain PyTorch ops run, so autocast decides every op's dtype as it does for any other network.
    """
    return _STATE["enabled"] and not torch.compiler.is_compiling() and not _autocast_active()


def set_fast_ops(enabled: bool) -> None:
    """Switch the fast paths on or off for this process."""
    _STATE["enabled"] = bool(enabled)


@contextlib.contextmanager
def reference_ops() -> Iterator[None]:
    """Run the plain PyTorch ops inside the block (the numerical reference of the fast paths)."""
    previous = _STATE["enabled"]
    _STATE["enabled"] = False
    try:
        yield
    finally:
        _STATE["enabled"] = previous


def channels_last_wanted(device: torch.device) -> bool:
    """Channels-last activations: default on CPU only; ``NNUNETV2_MEDNEXT_CHANNELS_LAST=1/0`` overrides."""
    value = os.environ.get(CHANNELS_LAST_ENV, "").strip().lower()
    if value in ("1", "on", "true", "yes"):
        return True
    if value in ("0", "off", "false", "no"):
        return False
    return device.type == "cpu"


def _cl_format(ndim: int) -> torch.memory_format:
    return torch.channels_last if ndim == 4 else torch.channels_last_3d


def is_channels_last(x: torch.Tensor) -> bool:
    """True if ``x`` (B, C, *S) is laid out as (B, *S, C) in memory (ambiguous single-channel maps count)."""
    return x.ndim in (4, 5) and x.permute(0, *range(2, x.ndim), 1).is_contiguous()


def prepare_input(x: torch.Tensor) -> torch.Tensor:
    """The network input in the layout the fast paths use on its device (channels-last on CPU by default)."""
    if fast_ops_enabled() and x.ndim in (4, 5) and channels_last_wanted(x.device):
        return x.contiguous(memory_format=_cl_format(x.ndim))
    return x


def _to_last(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, *range(2, x.ndim), 1)


def _to_first(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, x.ndim - 1, *range(1, x.ndim - 1))


# ---------------------------------------------------------------------------------------------------------------
# pointwise convolution
# ---------------------------------------------------------------------------------------------------------------


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
        return _to_first(F.linear(_to_last(x), weight.flatten(1), bias))
    conv = F.conv2d if x.ndim == 4 else F.conv3d
    return conv(x, weight, bias, tuple(stride) if strided else 1)  # type: ignore[arg-type]


def concat_pointwise(x: torch.Tensor, skip: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``PW(cat((x, skip), 1))`` without materialising the concatenation (two GEMMs into one output)."""
    if fast_ops_enabled() and is_channels_last(x) and is_channels_last(skip) and channels_last_wanted(x.device):
        c = x.shape[1]
        w = weight.flatten(1)
        x2 = _to_last(x).reshape(-1, c)
        s2 = _to_last(skip).reshape(-1, skip.shape[1])
        y = torch.addmm(F.linear(x2, w[:, :c], bias), s2, w[:, c:].t())
        return _to_first(y.view(*_to_last(x).shape[:-1], w.shape[0]))
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


def _conv_nd(ndim: int):
    return F.conv2d if ndim == 4 else F.conv3d


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
    rows = _to_last(x)
    if padded != size:
        rows = F.pad(rows, [0, 0] + [v for s, p in zip(reversed(size), reversed(padded)) for v in (0, p - s)])
    split = [b] + [v for sd in zip(sub, dilation) for v in sd] + [c]  # (B, s1, d1, s2, d2, ..., C)
    to_batch = [0] + [2 + 2 * i for i in range(nd)] + [1 + 2 * i for i in range(nd)] + [2 * nd + 1]
    grids = _to_first(rows.reshape(split).permute(to_batch).reshape(b * math.prod(dilation), *sub, c))
    w, pad = _crop_depthwise(sub, weight, [(k - 1) // 2 for k in weight.shape[2:]], (1,) * nd)
    y = _conv_nd(x.ndim)(grids, w, bias, 1, pad, 1, c)
    back = [0] + [v for i in range(nd) for v in (1 + nd + i, 1 + i)] + [2 * nd + 1]
    out = _to_last(y).reshape(b, *dilation, *sub, c).permute(back).reshape(b, *padded, c)
    if padded != size:
        out = out[(slice(None), *(slice(0, s) for s in size))].contiguous()
    return _to_first(out)


def _dw(x, weight, bias, padding, dilation):
    """Stride-1 'same' depthwise conv (no autograd node of its own inside the fused paths)."""
    dil = _effective_dilation(weight, dilation)
    if any(d > 1 for d in dil) and fast_ops_enabled() and is_channels_last(x) and x.device.type == "cpu":
        return _dilated_as_subgrids(x, weight, bias, dil)
    return _conv_nd(x.ndim)(x, weight, bias, 1, padding, dilation, x.shape[1])


def _native_weight_grad(x, grad, weight, padding, dilation) -> torch.Tensor:
    nd = x.ndim - 2
    return torch.ops.aten.convolution_backward(
        grad, x, weight, None, [1] * nd, list(padding), list(dilation), False, [0] * nd, x.shape[1], [False, True, False]
    )[1]


def _depthwise_weight_grad(x, grad, weight, padding, dilation) -> torch.Tensor:
    """Weight gradient of a stride-1 depthwise conv, by the fastest of three exact formulations on CPU.

    * small maps (at most ``_SWAPPED_WGRAD_MAX_VOXELS`` voxels per sample): per sample, a depthwise convolution of
      the input (zero-padded by the convolution itself) with the output gradient as the kernel and the dilation as
      the stride; output voxel ``t`` is ``sum_p x_pad[p + d t] g[p]``, the gradient of tap ``t``;
    * larger 3D maps: one 2D backward-weights call per depth tap and sample (oneDNN's 2D kernel is vectorised,
      its 3D one is not: about 5x faster on a 64^3 map);
    * larger 2D maps: oneDNN's own backward-weights.
    """
    conv = _conv_nd(x.ndim)
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


def _depthwise_backward(grad, x, weight, padding, dilation, need_x: bool, need_w: bool, need_b: bool):
    """(grad_x, grad_weight, grad_bias) of a stride-1 'same' depthwise convolution (CPU)."""
    if is_channels_last(x):
        grad = grad.contiguous(memory_format=_cl_format(x.ndim))
    grad_x = grad_w = grad_b = None
    if need_x:
        # correlation with the flipped kernel; 'same' padding of an odd kernel is its own transpose
        grad_x = _dw(grad, weight.flip(list(range(2, x.ndim))), None, padding, dilation)
    if need_w:
        grad_w = _depthwise_weight_grad(x, grad, weight, padding, dilation)
    if need_b:
        grad_b = grad.sum([0, *range(2, x.ndim)])
    return grad_x, grad_w, grad_b


class _DepthwiseConvCPU(torch.autograd.Function):
    """Stride-1 'same' depthwise convolution with a faster CPU backward (see the module docstring)."""

    @staticmethod
    def forward(ctx, x, weight, bias, padding, dilation):  # type: ignore[override]
        ctx.save_for_backward(x, weight)
        ctx.padding, ctx.dilation, ctx.has_bias = padding, dilation, bias is not None
        return _dw(x, weight, bias, padding, dilation)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        x, weight = ctx.saved_tensors
        need = ctx.needs_input_grad
        gx, gw, gb = _depthwise_backward(
            grad, x, weight, ctx.padding, ctx.dilation, need[0], need[1], ctx.has_bias and need[2]
        )
        return gx, gw, gb, None, None


def _crop_depthwise(size: Sequence[int], weight: torch.Tensor, padding: Sequence[int], dilation: Sequence[int]):
    """The kernel without the taps that only read zero padding on a map of ``size``, and the matching padding."""
    kernel = tuple(weight.shape[2:])
    taps = useful_taps(kernel, dilation, size)
    if taps == kernel:
        return weight, tuple(padding)
    index = (slice(None), slice(None), *(slice((k - t) // 2, (k + t) // 2) for k, t in zip(kernel, taps)))
    return weight[index], tuple(d * (t - 1) // 2 for d, t in zip(dilation, taps))


def _needs_autograd(*tensors: torch.Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def depthwise_conv(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    padding: Sequence[int],
    dilation: Sequence[int],
) -> torch.Tensor:
    """Stride-1 depthwise convolution with 'same' padding ``dilation * (k - 1) / 2`` (odd kernels)."""
    conv = _conv_nd(x.ndim)
    dilation = tuple(dilation)
    if not fast_ops_enabled():
        return conv(x, weight, bias, 1, tuple(padding), dilation, x.shape[1])
    weight, padding = _crop_depthwise(x.shape[2:], weight, padding, dilation)
    if x.device.type == "cpu" and _needs_autograd(x, weight, bias):
        return _DepthwiseConvCPU.apply(x, weight, bias, padding, dilation)
    return _dw(x, weight, bias, padding, dilation)


# ---------------------------------------------------------------------------------------------------------------
# strided and transposed depthwise convolutions in 3D (the Roy et al. down/up blocks)
# ---------------------------------------------------------------------------------------------------------------


def _strided_depthwise_weight_grad(inp, grad_out, weight, stride, padding):
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
            g_w = _strided_depthwise_weight_grad(grad, x, weight, stride, padding) if transposed else \
                _strided_depthwise_weight_grad(x, grad, weight, stride, padding)
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
        and _needs_autograd(x, *m.parameters())
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


def _instance_norm_forward(x, weight, bias, eps):
    """(y, mean, rstd) with mean/rstd of shape (B, C)."""
    b, c = x.shape[:2]
    y, mean, rstd = torch.native_group_norm(x, weight, bias, b, c, x.numel() // (b * c), c, eps)
    return y, mean.view(b, c), rstd.view(b, c)


def _instance_norm_apply(x, mean, rstd, weight, bias):
    """The normalised map from saved statistics (one pass; the recompute path of the fused nodes)."""
    b, c = x.shape[:2]
    scale = rstd * weight
    shift = bias - mean * scale
    y = torch.addcmul(shift.unsqueeze(1), _to_last(x).reshape(b, -1, c), scale.unsqueeze(1))
    return _to_first(y.view(*_to_last(x).shape))


def _instance_norm_backward(grad, x, mean, rstd, weight, need_x: bool):
    """(grad_x, grad_weight, grad_bias) of a per-channel norm of a channels-last ``x`` (closed form)."""
    b, c = x.shape[:2]
    xv = _to_last(x).reshape(b, -1, c)
    gv = _to_last(grad.contiguous(memory_format=_cl_format(x.ndim))).reshape(b, -1, c)
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
        grad_x = _to_first(gx.view(b, *x.shape[2:], c))
    return grad_x, sum_g_xhat.sum(0), sum_g.sum(0)


class _InstanceNormChannelsLast(torch.autograd.Function):
    """Per-sample, per-channel normalisation of a channels-last tensor with affine ``weight``/``bias``."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps):  # type: ignore[override]
        y, mean, rstd = _instance_norm_forward(x, weight, bias, eps)
        ctx.save_for_backward(x, mean, rstd, weight)
        return y

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        x, mean, rstd, weight = ctx.saved_tensors
        return (*_instance_norm_backward(grad, x, mean, rstd, weight, ctx.needs_input_grad[0]), None)


def instance_norm(x: torch.Tensor, num_groups: int, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    """``F.group_norm``; the per-channel case (``num_groups == C``) on a channels-last CPU tensor runs faster."""
    if (
        fast_ops_enabled()
        and num_groups == x.shape[1]
        and x.device.type == "cpu"
        and weight is not None
        and is_channels_last(x)
        and _needs_autograd(x, weight, bias)
    ):
        return _InstanceNormChannelsLast.apply(x, weight, bias, eps)
    return F.group_norm(x, num_groups, weight, bias, eps)


# ---------------------------------------------------------------------------------------------------------------
# fused Roy et al. block: x + PW(GELU(PW(N(DW x))))
# ---------------------------------------------------------------------------------------------------------------


def _gemm(x2d: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return F.linear(x2d, weight, bias)


class _RoyBlockCPU(torch.autograd.Function):
    """``x + PW3(GELU(PW2(IN(DW x))))`` on a channels-last tensor, saving only ``x`` and the expanded pre-activation.

    The depthwise output, the normalised map and the GELU output are recomputed in backward (one depthwise
    convolution, one norm and one GELU forward): the block keeps 2 of its 7 maps for backward (expansion 2).
    """

    @staticmethod
    def forward(ctx, x, w_dw, padding, n_w, n_b, eps, w2, b2, w3, b3):  # type: ignore[override]
        c = x.shape[1]
        d = _conv_nd(x.ndim)(x, w_dw, None, 1, padding, 1, c)
        n, mean, rstd = _instance_norm_forward(d, n_w, n_b, eps)
        del d
        rows = _rows(n)
        h = _gemm(rows, w2.flatten(1), b2)
        del n, rows
        a = F.gelu(h)
        out = _to_last(x).reshape(-1, c) + b3 if b3 is not None else _to_last(x).reshape(-1, c).clone()
        out.addmm_(a, w3.flatten(1).t())
        ctx.save_for_backward(x, w_dw, n_w, n_b, w2, w3, h, mean, rstd)
        ctx.padding, ctx.eps, ctx.has_b2, ctx.has_b3 = padding, eps, b2 is not None, b3 is not None
        return _to_first(out.view(*_to_last(x).shape))

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        x, w_dw, n_w, n_b, w2, w3, h, mean, rstd = ctx.saved_tensors
        need = ctx.needs_input_grad
        c = x.shape[1]
        grad = grad.contiguous(memory_format=_cl_format(x.ndim))
        g_rows = _to_last(grad).reshape(-1, c)
        a = F.gelu(h)
        g_w3 = g_rows.t().mm(a).view_as(w3) if need[8] else None
        g_b3 = g_rows.sum(0) if ctx.has_b3 and need[9] else None
        del a
        g_h = g_rows.mm(w3.flatten(1))
        torch.ops.aten.gelu_backward.grad_input(g_h, h, grad_input=g_h)
        d = _conv_nd(x.ndim)(x, w_dw, None, 1, ctx.padding, 1, c)
        n = _instance_norm_apply(d, mean, rstd, n_w, n_b)
        n_rows = _rows(n)
        g_w2 = g_h.t().mm(n_rows).view_as(w2) if need[6] else None
        g_b2 = g_h.sum(0) if ctx.has_b2 and need[7] else None
        del n, n_rows
        g_n = _to_first(g_h.mm(w2.flatten(1)).view(*_to_last(x).shape))
        del g_h
        g_d, g_nw, g_nb = _instance_norm_backward(g_n, d, mean, rstd, n_w, True)
        del g_n
        g_x, g_wdw, _ = _depthwise_backward(g_d, x, w_dw, ctx.padding, (1,) * (x.ndim - 2), need[0], need[1], False)
        if g_x is not None:
            g_x = g_x.add_(grad)
        return g_x, g_wdw, None, g_nw, g_nb, None, g_w2, g_b2, g_w3, g_b3


# ---------------------------------------------------------------------------------------------------------------
# fused pre-norm residual FFN sub-layers of the seed block: x + gamma * PW2(body(GELU(PW1(IN(x)))))
# ---------------------------------------------------------------------------------------------------------------


def _spatial(rows: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(N, C') rows of a channels-last map shaped like ``like`` as a (B, C', *S) tensor (a view)."""
    return _to_first(rows.view(*_to_last(like).shape[:-1], rows.shape[1]))


def _rows(x: torch.Tensor) -> torch.Tensor:
    """A channels-last (B, C, *S) tensor as its (N, C) rows (a view)."""
    return _to_last(x).reshape(-1, x.shape[1])


def _one_sample(x: torch.Tensor) -> torch.Tensor:
    """A channels-last (B, C, S0, *S) tensor as the one sample (1, C, B * S0, *S) (a view): its per-channel
    statistics are the batch statistics, so BatchNorm (training mode) is the instance norm of this view."""
    last = _to_last(x)
    return _to_first(last.reshape(1, -1, *last.shape[2:]))


def _norm_view(x: torch.Tensor, batch: bool) -> torch.Tensor:
    return _one_sample(x) if batch else x


def _like(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``y`` (a channels-last map with ``x``'s elements, maybe another batch split) in the shape of ``x``."""
    return _to_first(_to_last(y).reshape(_to_last(x).shape))


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
        n, mean, rstd = _instance_norm_forward(_norm_view(x, batch), n_w, n_b, eps)
        if batch and norm_state[0] is not None:
            _update_running_stats(norm_state, mean, rstd, eps, x.numel() // c)
        p1 = _spatial(_gemm(_rows(n), w1.flatten(1), b1), x)
        del n
        h = F.gelu(p1)
        if kind == "sdw":
            d1 = _dw(h, dw1_w, dw1_b, pad1, dil1)
            z = h.add_(F.gelu(d1))
            saved = (d1,)
        else:
            d1 = _dw(h, dw1_w, dw1_b, pad1, dil1)
            d2 = _dw(d1, dw2_w, dw2_b, pad2, dil2)
            z = h.mul_(d2)
            saved = (d1, d2)
        w2m = w2.flatten(1)
        x_rows = _rows(x)
        w_out = (w2m * gamma.unsqueeze(1)).t() if gamma is not None else w2m.t()
        b_out = (gamma * b2 if gamma is not None else b2) if b2 is not None else None
        if path_scale is None:
            out = x_rows + b_out if b_out is not None else x_rows.clone()
            out.addmm_(_rows(z), w_out)
        else:  # drop path: the branch scaled per sample (rows are sample-major)
            branch = torch.mm(_rows(z), w_out)
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
        return _spatial(out, x)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        x, n_w, n_b, w1, w2, b2, gamma, dw1_w, dw2_w, mean, rstd, p1, path_scale, *saved = ctx.saved_tensors
        need = ctx.needs_input_grad
        grad = grad.contiguous(memory_format=_cl_format(x.ndim))
        g_rows = _rows(grad)  # of the output; the residual path's gradient as is
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
        z_rows = _rows(z)
        sum_g = g_rows.sum(0)
        m = g_rows.t().mm(z_rows)  # (C, rC): grad^T z
        del z, z_rows
        if gamma is not None:
            g_w2 = (m * gamma.unsqueeze(1)).view_as(w2) if need[7] else None
            g_b2 = gamma * sum_g if ctx.has[1] and need[8] else None
            g_gamma = (m * w2m).sum(1) + (b2 * sum_g if b2 is not None else 0) if need[9] else None
            g_z = _spatial(g_rows.mm(w2m * gamma.unsqueeze(1)), x)
        else:
            g_w2 = m.view_as(w2) if need[7] else None
            g_b2 = sum_g if ctx.has[1] and need[8] else None
            g_gamma = None
            g_z = _spatial(g_rows.mm(w2m), x)
        del m
        (pad1, pad2), (dil1, dil2) = ctx.pads, ctx.dils
        g_dw2_w = g_dw2_b = None
        if ctx.kind == "sdw":
            g_d1 = torch.ops.aten.gelu_backward(g_z, d1)
            g_h, g_dw1_w, g_dw1_b = _depthwise_backward(g_d1, h, dw1_w, pad1, dil1, True, need[10], ctx.has[2] and need[11])
            del g_d1
            g_h.add_(g_z)
        else:
            g_d2 = g_z * h
            g_d1, g_dw2_w, g_dw2_b = _depthwise_backward(g_d2, d1, dw2_w, pad2, dil2, True, need[14], ctx.has[3] and need[15])
            del g_d2
            g_h, g_dw1_w, g_dw1_b = _depthwise_backward(g_d1, h, dw1_w, pad1, dil1, True, need[10], ctx.has[2] and need[11])
            del g_d1
            g_h.addcmul_(g_z, d2)
        del g_z, h
        g_p1 = torch.ops.aten.gelu_backward.grad_input(g_h, p1, grad_input=g_h)
        g_p1_rows = _rows(g_p1)
        xv = _norm_view(x, ctx.batch)
        n = _instance_norm_apply(xv, mean, rstd, n_w, n_b)
        g_w1 = g_p1_rows.t().mm(_rows(n)).view_as(w1) if need[5] else None
        g_b1 = g_p1_rows.sum(0) if ctx.has[0] and need[6] else None
        del n
        g_n = _spatial(g_p1_rows.mm(w1.flatten(1)), xv)
        del g_p1, g_p1_rows
        g_x, g_nw, g_nb = _instance_norm_backward(g_n, xv, mean, rstd, n_w, need[0])
        if g_x is not None:
            g_x = _like(g_x, x).add_(grad)
        return (g_x, None, g_nw, g_nb, None, g_w1, g_b1, g_w2, g_b2, g_gamma,
                g_dw1_w, g_dw1_b, None, None, g_dw2_w, g_dw2_b, None, None, None, None)


def prenorm_ffn_fusable(sub: nn.Module, x: torch.Tensor) -> bool:
    """Whether a ``PreNormResidual`` around an LA-FFN / SDW-FFN can run as one :class:`_PreNormFFNCPU` node."""
    fn, norm = getattr(sub, "fn", None), getattr(sub, "norm", None)
    kind = getattr(fn, "fused_kind", None)
    if kind not in ("la", "sdw"):
        return False
    if not (
        fast_ops_enabled()
        and x.device.type == "cpu"
        and is_channels_last(x)
        and _needs_autograd(x, *sub.parameters())
        and (_instance_norm_layer(norm) or _batch_norm_training(norm))
        and _is_plain_gelu(fn.act)
        and _conv_kind(fn.fc1) == "pointwise"
        and _conv_kind(fn.fc2) == "pointwise"
    ):
        return False
    convs = (fn.smooth,) if kind == "sdw" else (fn.attn_local, fn.attn_dilated)
    return all(isinstance(m, (nn.Conv2d, nn.Conv3d)) and _conv_kind(m) == "depthwise" for m in convs)


def _instance_norm_layer(norm: nn.Module) -> bool:
    return isinstance(norm, nn.GroupNorm) and norm.num_groups == norm.num_channels and norm.affine


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


def prenorm_ffn_forward(sub: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Fused training forward of ``x + DropPath(gamma * fn(norm(x)))`` for an LA-FFN or SDW-FFN ``fn``."""
    fn, norm = sub.fn, sub.norm  # type: ignore[attr-defined]
    scale = sub.scale  # type: ignore[attr-defined]
    gamma = scale.gamma if isinstance(scale, nn.Module) and hasattr(scale, "gamma") else None
    kind = fn.fused_kind
    if kind == "sdw":
        convs = (fn.smooth, None)
    else:
        convs = (fn.attn_local, fn.attn_dilated)
    args = []
    for conv in convs:
        if conv is None:
            args += [None, None, None, None]
            continue
        w, pad = _crop_depthwise(x.shape[2:], conv.weight, conv.padding, conv.dilation)
        args += [w, conv.bias, pad, tuple(conv.dilation)]
    norm_state = _batch_norm_state(norm) if isinstance(norm, nn.modules.batchnorm._BatchNorm) else None
    # the drop-path draw comes last, after everything the unfused sub-layer computes first (same random stream)
    factor = sub.drop_path.factor(x)  # type: ignore[attr-defined]
    path_scale = None if factor is None else factor.view(-1)
    return _PreNormFFNCPU.apply(
        x, kind, norm.weight, norm.bias, norm.eps, fn.fc1.weight, fn.fc1.bias, fn.fc2.weight, fn.fc2.bias, gamma, *args,
        norm_state, path_scale,
    )


# ---------------------------------------------------------------------------------------------------------------
# fused conv -> instance norm (-> GELU): stem, downsampling, decoder skip fusion
# ---------------------------------------------------------------------------------------------------------------


class _ConvNormCPU(torch.autograd.Function):
    """``[GELU](IN(conv(x)))`` for a dense conv, saving only ``x``: the conv output is recomputed in backward."""

    @staticmethod
    def forward(ctx, x, w, b, stride, padding, dilation, groups, n_w, n_b, eps, gelu):  # type: ignore[override]
        p = _conv_nd(x.ndim)(x, w, b, stride, padding, dilation, groups).contiguous(memory_format=_cl_format(x.ndim))
        y, mean, rstd = _instance_norm_forward(p, n_w, n_b, eps)
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
        p = _conv_nd(x.ndim)(x, w, ctx.b, stride, padding, dilation, groups).contiguous(memory_format=_cl_format(x.ndim))
        grad = grad.contiguous(memory_format=_cl_format(x.ndim))
        if ctx.gelu:
            grad = torch.ops.aten.gelu_backward(grad, _instance_norm_apply(p, mean, rstd, n_w, n_b))
        g_p, g_nw, g_nb = _instance_norm_backward(grad, p, mean, rstd, n_w, True)
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
        y, mean, rstd = _instance_norm_forward(p, n_w, n_b, eps)
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
            grad.contiguous(memory_format=_cl_format(up.ndim)), _instance_norm_apply(p, mean, rstd, n_w, n_b)
        )
        g_p, g_nw, g_nb = _instance_norm_backward(g_n, p, mean, rstd, n_w, True)
        del p, g_n
        g_rows = _rows(g_p)
        wm = w.flatten(1)
        g_up = _spatial(g_rows.mm(wm[:, :c]), up) if need[0] else None
        g_skip = _spatial(g_rows.mm(wm[:, c:]), skip) if need[1] else None
        g_w = torch.cat((g_rows.t().mm(_rows(up)), g_rows.t().mm(_rows(skip))), 1).view_as(w) if need[2] else None
        g_b = g_rows.sum(0) if b is not None and need[3] else None
        return g_up, g_skip, g_w, g_b, g_nw, g_nb, None


def _project_pair(up: torch.Tensor, skip: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    c = up.shape[1]
    wm = w.flatten(1)
    out = _gemm(_rows(up), wm[:, :c], b)
    out.addmm_(_rows(skip), wm[:, c:].t())
    return _spatial(out, up)


def _norm_ok(norm: nn.Module) -> bool:
    return isinstance(norm, nn.GroupNorm) and norm.num_groups == norm.num_channels and norm.affine


def conv_norm_fusable(seq: nn.Module, x: torch.Tensor) -> bool:
    """Whether ``seq`` = ``Sequential(conv, per-channel GroupNorm[, GELU])`` can run as one fused CPU node."""
    if not (isinstance(seq, nn.Sequential) and len(seq) in (2, 3)):
        return False
    conv, norm = seq[0], seq[1]
    return (
        fast_ops_enabled()
        and x.device.type == "cpu"
        and (is_channels_last(x) or x.shape[1] == 1)
        and _needs_autograd(x, *seq.parameters())
        and type(conv) in (nn.Conv2d, nn.Conv3d, FastConv2d, FastConv3d)
        and conv.padding_mode == "zeros"
        and not isinstance(conv.padding, str)
        and _norm_ok(norm)
        and (len(seq) == 2 or _is_plain_gelu(seq[2]))
    )


def conv_norm_forward(seq: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Fused training forward of ``Sequential(conv, norm[, GELU])`` (see :class:`_ConvNormCPU`)."""
    conv, norm = seq[0], seq[1]
    return _ConvNormCPU.apply(
        x, conv.weight, conv.bias, tuple(conv.stride), tuple(conv.padding), tuple(conv.dilation), conv.groups,
        norm.weight, norm.bias, norm.eps, len(seq) == 3,
    )


def skip_fuse(fuse: nn.Module, up: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
    """``fuse(cat((up, skip), 1))`` for ``fuse = Sequential(PW(2C -> C), norm, GELU)``, fused when possible."""
    proj, norm, act = fuse
    if (
        fast_ops_enabled()
        and up.device.type == "cpu"
        and is_channels_last(up)
        and is_channels_last(skip)
        and _needs_autograd(up, skip, *fuse.parameters())
        and _conv_kind(proj) == "pointwise"
        and _norm_ok(norm)
        and _is_plain_gelu(act)
    ):
        return _SkipFuseCPU.apply(up, skip, proj.weight, proj.bias, norm.weight, norm.bias, norm.eps)

    def fused(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return act(norm(concat_pointwise(a, b, proj.weight, proj.bias)))

    return region_forward(fused, (proj, norm, act), up, skip)


def _is_plain_gelu(m: nn.Module) -> bool:
    return type(m) is nn.GELU and m.approximate == "none"


def roy_block_fusable(block: nn.Module, x: torch.Tensor) -> bool:
    """Whether ``block`` (a ``MedNeXtV1Block``) has the plain residual layout that :class:`_RoyBlockCPU` fuses."""
    conv1, norm, conv2, conv3 = block.conv1, block.norm, block.conv2, block.conv3  # type: ignore[attr-defined]
    return (
        fast_ops_enabled()
        and x.device.type == "cpu"
        and is_channels_last(x)
        and _needs_autograd(x, *block.parameters())
        and block.do_res  # type: ignore[attr-defined]
        and block.res_conv is None  # type: ignore[attr-defined]
        and isinstance(conv1, (nn.Conv2d, nn.Conv3d))
        and _conv_kind(conv1) == "depthwise"
        and conv1.bias is None
        and all(dl == 1 for dl in conv1.dilation)
        and isinstance(norm, nn.GroupNorm)
        and norm.num_groups == norm.num_channels
        and norm.affine
        and _conv_kind(conv2) == "pointwise"
        and _conv_kind(conv3) == "pointwise"
        and _is_plain_gelu(block.act)  # type: ignore[attr-defined]
    )


def roy_block_forward(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Fused training forward of a plain ``MedNeXtV1Block`` (see :class:`_RoyBlockCPU`)."""
    conv1 = block.conv1  # type: ignore[attr-defined]
    w_dw, padding = _crop_depthwise(x.shape[2:], conv1.weight, conv1.padding, conv1.dilation)
    norm, conv2, conv3 = block.norm, block.conv2, block.conv3  # type: ignore[attr-defined]
    return _RoyBlockCPU.apply(
        x, w_dw, padding, norm.weight, norm.bias, norm.eps, conv2.weight, conv2.bias, conv3.weight, conv3.bias
    )


# ---------------------------------------------------------------------------------------------------------------
# fast layers: subclasses with the parameters (and state_dict keys) of the plain ones
# ---------------------------------------------------------------------------------------------------------------


def _conv_kind(m: nn.Conv2d | nn.Conv3d) -> str:
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


class _FastConvMixin:
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not fast_ops_enabled():
            return super().forward(x)  # type: ignore[misc]
        kind = _conv_kind(self)  # type: ignore[arg-type]
        if kind == "pointwise":
            return pointwise_conv(x, self.weight, self.bias)  # type: ignore[attr-defined]
        if kind == "strided_pointwise":
            return pointwise_conv(x, self.weight, self.bias, self.stride)  # type: ignore[attr-defined]
        if kind == "depthwise":
            return depthwise_conv(x, self.weight, self.bias, self.padding, self.dilation)  # type: ignore[attr-defined]
        if strided_depthwise_fusable(self, x):  # type: ignore[arg-type]
            return strided_depthwise_forward(self, x)  # type: ignore[arg-type]
        y = super().forward(x)  # type: ignore[misc]
        # a one-channel input is channels-last and channels-first at once, and oneDNN then answers channels-first:
        # keep the activations channels-last, or every layer after this one leaves the fast paths
        if channels_last_wanted(x.device) and is_channels_last(x) and not is_channels_last(y):
            return y.contiguous(memory_format=_cl_format(x.ndim))
        return y


class FastConv2d(_FastConvMixin, nn.Conv2d):
    """``nn.Conv2d`` whose pointwise and depthwise configurations run through the fast paths."""


class FastConv3d(_FastConvMixin, nn.Conv3d):
    """``nn.Conv3d`` whose pointwise and depthwise configurations run through the fast paths."""


class _SafeTransposedMixin:
    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        if (
            fast_ops_enabled()
            and x.device.type == "cpu"
            and all(k == 1 for k in self.kernel_size)  # type: ignore[attr-defined]
            and any(s != 1 for s in self.stride)  # type: ignore[attr-defined]
            and is_channels_last(x)
        ):
            # PyTorch 2.14 crashes in the channels-last backward of a strided 1x1 transposed conv on CPU
            y = super().forward(x.contiguous(), output_size)  # type: ignore[misc]
            return y.contiguous(memory_format=_cl_format(x.ndim))
        if output_size is None and strided_depthwise_fusable(self, x):  # type: ignore[arg-type]
            return strided_depthwise_forward(self, x)  # type: ignore[arg-type]
        return super().forward(x, output_size)  # type: ignore[misc]


class FastConvTranspose2d(_SafeTransposedMixin, nn.ConvTranspose2d):
    """``nn.ConvTranspose2d`` that keeps clear of a channels-last CPU crash (strided 1x1 kernels)."""


class FastConvTranspose3d(_SafeTransposedMixin, nn.ConvTranspose3d):
    """``nn.ConvTranspose3d`` that keeps clear of a channels-last CPU crash (strided 1x1 kernels)."""


class FastGroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` with the channels-last instance-norm path."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return instance_norm(x, self.num_groups, self.weight, self.bias, self.eps)


class FastMedNeXtV1Block(MedNeXtV1Block):
    """``MedNeXtV1Block`` whose training forward on channels-last CPU tensors is one fused autograd node."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if roy_block_fusable(self, x):
            return roy_block_forward(self, x)
        return super().forward(x)


_FAST_CLASSES: dict[type, type] = {
    nn.Conv2d: FastConv2d,
    nn.Conv3d: FastConv3d,
    nn.GroupNorm: FastGroupNorm,
    nn.ConvTranspose2d: FastConvTranspose2d,
    nn.ConvTranspose3d: FastConvTranspose3d,
    MedNeXtV1Block: FastMedNeXtV1Block,
}


def use_fast_layers(module: nn.Module) -> nn.Module:
    """Switch every plain ``Conv2d``/``Conv3d``/``GroupNorm``/``MedNeXtV1Block`` in ``module`` to its fast subclass.

    Only the class changes: parameters, buffers, ``state_dict`` keys and the computed function stay the same.
    """
    for m in module.modules():
        fast = _FAST_CLASSES.get(type(m))
        if fast is not None:
            m.__class__ = fast
    return module
