"""State dicts of Roy et al.'s official MedNeXt v1 network <-> :class:`MedNeXtUNet` (pure PyTorch).

The official network (MIC-DKFZ/MedNeXt, ``MedNeXt`` class) has fixed attribute names: ``stem``,
``enc_block_{0..3}``, ``down_{0..3}``, ``bottleneck``, ``up_{3..0}``, ``dec_block_{3..0}``, heads ``out_{0..4}`` (1x1
*transposed* convs, ``out_1..4`` only when built with deep supervision) and a ``dummy_tensor`` used by its
checkpointing. A ``MedNeXtUNet`` with ``block="v1"``, 5 stages, stride 2 on every axis and full kernels holds the
same tensors under other names, except:

* the depthwise convs' biases (``*.conv1.bias``): a per-channel GroupNorm follows each of them and subtracts any
  per-channel constant exactly, so they do not change the function; they are dropped on import and written as zeros
  on export;
* the heads: stored ``(in, out, 1, 1, 1)`` officially, ``(out, in, 1, 1, 1)`` here (transposed on the way);
* ``dummy_tensor``: dropped on import, written as ``[1.]`` on export.

:func:`roy_key_map` lists the official tensors in the official ``state_dict`` order with their shapes and our names.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from .segmentation import MedNeXtUNet

ROY_N_STAGES = 5
_BLOCK_TENSORS = ("conv1.weight", "conv1.bias", "norm.weight", "norm.bias", "conv2.weight", "conv2.bias",
                  "conv3.weight", "conv3.bias")
_RES_TENSORS = ("res_conv.weight", "res_conv.bias")


class RoyWeightsError(ValueError):
    """A network or state dict that does not fit Roy et al.'s official layout."""


@dataclass(frozen=True)
class RoyTensor:
    """One tensor of the official state dict: its key and shape, and where it lives in ``MedNeXtUNet``.

    ``ours`` is ``None`` for tensors without a counterpart (depthwise biases, ``dummy_tensor``, ``out_4`` when the
    network has no bottleneck head); ``transpose`` marks the heads (dims 0 and 1 swapped).
    """

    key: str
    shape: tuple[int, ...]
    ours: str | None
    transpose: bool = False


def check_roy_layout(net: nn.Module) -> None:
    """Raise :class:`RoyWeightsError` unless ``net`` has the official network's layout (and function)."""
    if not isinstance(net, MedNeXtUNet) or net.block != "v1":
        raise RoyWeightsError("Roy et al.'s weights need a MedNeXtUNet with block='v1' (a mednextv1_* variant)")
    problems = []
    if net.n_stages != ROY_N_STAGES:
        problems.append(f"{net.n_stages} stages instead of {ROY_N_STAGES}")
    full = (2,) * net.n_spatial
    if any(tuple(s) != full for s in net.strides[1:]):
        problems.append(f"strides {[list(s) for s in net.strides]} instead of 2 on every axis")
    if any(k == 1 for ks in net.kernel_sizes for k in ks):
        problems.append("kernels flattened on some axes (anisotropic plan)")
    if net.upsample_align != "start":
        problems.append(f"upsample_align={net.upsample_align!r} instead of 'start'")
    if net.norm != "instance":
        problems.append(f"norm={net.norm!r} instead of 'instance' (per-channel GroupNorm)")
    if problems:
        raise RoyWeightsError("network does not have Roy et al.'s layout: " + "; ".join(problems))


def roy_key_map(net: MedNeXtUNet, deep_supervision_heads: bool = True) -> list[RoyTensor]:
    """The official state dict of ``net``'s configuration, in order (``deep_supervision_heads``: ``out_1..4``)."""
    check_roy_layout(net)
    ours = net.state_dict()
    n = ROY_N_STAGES - 1
    out: list[RoyTensor] = []

    def block(official: str, mine: str, resample: bool) -> None:
        for t in _BLOCK_TENSORS + (_RES_TENSORS if resample else ()):
            if t == "conv1.bias":
                channels = ours[f"{mine}.conv1.weight"].shape[0]
                out.append(RoyTensor(f"{official}.{t}", (channels,), None))
            else:
                out.append(RoyTensor(f"{official}.{t}", tuple(ours[f"{mine}.{t}"].shape), f"{mine}.{t}"))

    def head(level: int, mine: str | None) -> None:
        if mine is None:  # out_4 without a bottleneck head here: shape from the bottleneck width
            c_in = net.features_per_stage[-1]
            shapes = {"weight": (c_in, net.num_classes) + (1,) * net.n_spatial, "bias": (net.num_classes,)}
            out.extend(RoyTensor(f"out_{level}.conv_out.{t}", shapes[t], None) for t in ("weight", "bias"))
            return
        w = ours[f"{mine}.weight"]
        out.append(RoyTensor(f"out_{level}.conv_out.weight", (w.shape[1], w.shape[0], *w.shape[2:]), f"{mine}.weight", True))
        out.append(RoyTensor(f"out_{level}.conv_out.bias", tuple(ours[f"{mine}.bias"].shape), f"{mine}.bias"))

    out.append(RoyTensor("dummy_tensor", (1,), None))  # a parameter of the network itself: first in its state dict
    out += [RoyTensor(f"stem.{t}", tuple(ours[f"encoder.stem.{t}"].shape), f"encoder.stem.{t}") for t in ("weight", "bias")]
    for i in range(n + 1):
        name = "bottleneck" if i == n else f"enc_block_{i}"
        for j in range(net.n_blocks_per_stage[i]):
            block(f"{name}.{j}", f"encoder.stages.{i}.{j}", False)
        if i < n:
            block(f"down_{i}", f"encoder.down.{i + 1}", True)
    for i in range(n - 1, -1, -1):
        k = n - 1 - i  # decoder modules are stored from the lowest resolution up
        block(f"up_{i}", f"decoder.up.{k}", True)
        for j in range(net.n_blocks_per_stage_decoder[i]):
            block(f"dec_block_{i}.{j}", f"decoder.stages.{k}.{j}", False)
    head(0, f"decoder.seg_layers.{n - 1}")
    if deep_supervision_heads:
        for i in range(1, n):
            head(i, f"decoder.seg_layers.{n - 1 - i}")
        head(n, f"decoder.seg_layers.{n}" if net.ds_bottleneck else None)
    return out


def roy_state_dict(net: MedNeXtUNet) -> OrderedDict[str, torch.Tensor]:
    """``net``'s weights in the official layout (5 heads with a bottleneck head, else only ``out_0``)."""
    ours = net.state_dict()
    sd: OrderedDict[str, torch.Tensor] = OrderedDict()
    for t in roy_key_map(net, deep_supervision_heads=net.ds_bottleneck):
        if t.ours is not None:
            v = ours[t.ours].detach().clone()
            sd[t.key] = v.transpose(0, 1).contiguous() if t.transpose else v
        elif t.key == "dummy_tensor":
            sd[t.key] = torch.ones(1)
        else:
            sd[t.key] = torch.zeros(t.shape)
    return sd


def load_roy_state_dict(net: MedNeXtUNet, state_dict: Mapping[str, torch.Tensor]) -> dict[str, list[str]]:
    """Load an official state dict into ``net`` (in place).

    Every tensor of the official network must be present with its shape, except the deep-supervision heads
    ``out_1..4`` (a checkpoint of a network built without deep supervision lacks them; ours keep their values).
    Returns ``{"dropped": [...], "missing_heads": [...]}``: official tensors without a counterpart here, and heads
    the checkpoint did not have.
    """
    spec = roy_key_map(net, deep_supervision_heads=True)
    known = {t.key for t in spec}
    unexpected = sorted(set(state_dict) - known)
    if unexpected:
        raise RoyWeightsError(
            f"{len(unexpected)} tensor(s) do not belong to Roy et al.'s MedNeXt of this size, e.g. {unexpected[:3]}"
        )
    optional = {t.key for t in spec if t.key.startswith(("out_1.", "out_2.", "out_3.", "out_4.")) or t.key == "dummy_tensor"}
    missing = [t.key for t in spec if t.key not in state_dict and t.key not in optional]
    if missing:
        raise RoyWeightsError(f"{len(missing)} tensor(s) missing, e.g. {missing[:3]}: not a complete MedNeXt v1 state dict")
    new = net.state_dict()
    dropped, missing_heads = [], []
    for t in spec:
        if t.key not in state_dict:
            if t.key != "dummy_tensor" and t.ours is not None:
                missing_heads.append(t.key)
            continue
        value = state_dict[t.key]
        if tuple(value.shape) != t.shape:
            raise RoyWeightsError(
                f"{t.key} has shape {tuple(value.shape)}, this network expects {t.shape}: another size (S/B/M/L), "
                "kernel, input channel or class count"
            )
        if t.ours is None:
            dropped.append(t.key)
            continue
        v = value.detach().to(new[t.ours].dtype)
        new[t.ours] = v.transpose(0, 1).contiguous() if t.transpose else v.clone()
    net.load_state_dict(new, strict=True)
    return {"dropped": dropped, "missing_heads": missing_heads}
