"""Behaviour of the MedNeXt networks (issue #2): shapes, deep supervision, gradients, training, UpKern, registry.

Every network here is tiny (widths 4-24, patches of a few thousand voxels) so the module runs in well under a
minute on two CPU cores. Helpers live in this file on purpose (``conftest.py`` is shared with other modules).
"""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nnunetv2_mednext.networks import (
    CLS_VARIANTS,
    LinearAttentionFFN,
    MedNeXtBlock,
    MedNeXtUNet,
    MedNeXtV1Block,
    UnknownVariantError,
    UpKernError,
    create_model,
    get_seg_variant,
    list_models,
    reference_topology,
    upkern_load,
)
from nnunetv2_mednext.networks import execution as execution_module
from nnunetv2_mednext.networks.fastops import reference_ops
from nnunetv2_mednext.networks.recompute import recompute_suspended

ROOT = Path(__file__).resolve().parents[1]

# --------------------------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------------------------

# nnU-Net style plans: strides[0] all ones, patch divisible by the total stride (odd multiples on purpose).
PLANS = {
    "2d_4stages_48x80": {
        "conv_op": "torch.nn.Conv2d",
        "patch": (48, 80),
        "strides": [[1, 1], [2, 2], [2, 2], [2, 2]],
        "kernels": [[3, 3]] * 4,
    },
    "2d_aniso_20x48": {
        "conv_op": nn.Conv2d,
        "patch": (20, 48),
        "strides": [[1, 1], [1, 2], [2, 2], [2, 2]],
        "kernels": [[1, 3], [3, 3], [3, 3], [3, 3]],
    },
    "3d_aniso_12x40x24": {
        "conv_op": "torch.nn.Conv3d",
        "patch": (12, 40, 24),
        "strides": [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]],
        "kernels": [[1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]],
    },
    "3d_3stages_12x20x8": {
        "conv_op": nn.Conv3d,
        "patch": (12, 20, 8),
        "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]],
        "kernels": [[3, 3, 3]] * 3,
    },
}

# block family / composition settings exercised everywhere
FAMILIES = {
    "seed_A": {"block": "seed", "composition": "A"},
    "seed_B": {"block": "seed", "composition": "B"},
    "seed_A_light1": {"block": "seed", "composition": "A", "n_light_levels": 1},
    "v1": {"block": "v1"},
}

WIDTHS = [4, 8, 12, 16]
NUM_CLASSES = 3


def build(plan: str, family: str, deep_supervision: bool = True, seed: int = 0, **overrides) -> MedNeXtUNet:
    p = PLANS[plan]
    n = len(p["strides"])
    torch.manual_seed(seed)
    kwargs = {
        "n_stages": n,
        "features_per_stage": WIDTHS[:n],
        "conv_op": p["conv_op"],
        "kernel_sizes": p["kernels"],
        "strides": p["strides"],
        "exp_ratio": 2,
        **FAMILIES[family],
        **overrides,
    }
    return MedNeXtUNet(1, NUM_CLASSES, deep_supervision=deep_supervision, **kwargs)


def nnunet_ds_shapes(patch, strides) -> list[tuple[int, ...]]:
    """Spatial output shapes nnU-Net's trainer expects: its deep-supervision scales times the patch size."""
    scales = 1 / np.cumprod(np.vstack(strides), axis=0)[:-1]
    out = []
    for s in scales:
        shape = np.array(patch) * s
        assert np.allclose(shape, np.round(shape))
        out.append(tuple(int(v) for v in np.round(shape)))
    return out


def linear_probe_loss(outputs, seed: int = 1) -> torch.Tensor:
    """A loss linear in every output (fixed random weights): its gradient never vanishes through the loss itself."""
    g = torch.Generator().manual_seed(seed)
    outputs = outputs if isinstance(outputs, list) else [outputs]
    return sum((o * torch.randn(o.shape, generator=g, dtype=o.dtype)).sum() for o in outputs)


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread for this module: on a shared 2-core machine, OpenMP threads that spin-wait on a busy core
    make these tiny convolutions 10-50x slower. Restored afterwards for the other test modules."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# --------------------------------------------------------------------------------------------------------------------
# forward / backward, shapes, deep supervision
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("plan", list(PLANS))
def test_forward_backward_shapes_and_deep_supervision(plan: str, family: str) -> None:
    p = PLANS[plan]
    net = build(plan, family, deep_supervision=True)
    x = torch.randn(2, 1, *p["patch"])

    outputs = net(x)
    assert isinstance(outputs, list)
    assert len(outputs) == len(p["strides"]) - 1
    expected = nnunet_ds_shapes(p["patch"], p["strides"])
    assert expected[0] == tuple(p["patch"])
    assert [tuple(o.shape) for o in outputs] == [(2, NUM_CLASSES, *s) for s in expected]

    linear_probe_loss(outputs).backward()
    grads = [q.grad for q in net.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)

    # deep supervision off through the attribute nnU-Net's trainer uses: one tensor, the full-resolution head
    net.decoder.deep_supervision = False
    with torch.no_grad():
        single = net(x)
    assert isinstance(single, torch.Tensor)
    assert single.shape == (2, NUM_CLASSES, *p["patch"])
    # training runs fused autograd nodes (networks/fastops.py), inference the plain ops: fp32 rounding differs
    torch.testing.assert_close(single, outputs[0].detach(), rtol=1e-4, atol=1e-5)

    # the parameters do not depend on deep supervision (checkpoints load either way)
    other = build(plan, family, deep_supervision=False)
    assert isinstance(other(x), torch.Tensor)
    sd_on, sd_off = net.state_dict(), other.state_dict()
    assert list(sd_on) == list(sd_off)
    assert all(sd_on[k].shape == sd_off[k].shape for k in sd_on)
    other.load_state_dict(sd_on, strict=True)


def test_total_stride_and_indivisible_input_error() -> None:
    net = build("3d_aniso_12x40x24", "seed_A")
    assert net.total_stride == (4, 8, 8)
    with pytest.raises(ValueError, match="not divisible by the network's total stride"):
        net(torch.randn(1, 1, 12, 40, 20))
    with pytest.raises(ValueError, match="expected input"):
        net(torch.randn(1, 2, 12, 40, 24))


@pytest.mark.parametrize("family", ["seed_A", "v1"])
def test_anisotropic_kernels_stay_flat_on_inactive_axes(family: str) -> None:
    """Where the plan's kernel is 1 along an axis, no depthwise kernel of that level extends along it."""
    net = build("3d_aniso_12x40x24", family)
    level0 = [net.encoder.stages[0], net.decoder.stages[-1]]
    deeper = [net.encoder.stages[2], net.decoder.stages[0]]

    def depthwise_kernels(modules):
        return [
            m.kernel_size
            for mod in modules
            for m in mod.modules()
            if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)) and m.groups == m.in_channels > 1
        ]

    flat, full = depthwise_kernels(level0), depthwise_kernels(deeper)
    assert flat and full
    assert all(k[0] == 1 for k in flat)
    assert any(k[1] > 1 for k in flat)
    assert any(k[0] > 1 for k in full)


def test_composition_b_uses_la_ffn_sparingly() -> None:
    """Option A puts an LA-FFN in every seed block; option B by default only in the two lowest-resolution levels."""

    def la_levels(net: MedNeXtUNet) -> set[int]:
        levels = set()
        for i, stage in enumerate(net.encoder.stages):
            if any(isinstance(m, LinearAttentionFFN) for m in stage.modules()):
                levels.add(i)
        return levels

    a = build("2d_4stages_48x80", "seed_A")
    b = build("2d_4stages_48x80", "seed_B")
    b_custom = build("2d_4stages_48x80", "seed_B", la_ffn_stages=[1])
    assert la_levels(a) == {0, 1, 2, 3}
    assert la_levels(b) == {2, 3}
    assert la_levels(b_custom) == {1}
    assert param_count(b) < param_count(a)


def test_light_levels_use_roy_blocks() -> None:
    net = build("2d_4stages_48x80", "seed_A", n_light_levels=2)
    for i, stage in enumerate(net.encoder.stages):
        expected = MedNeXtV1Block if i < 2 else MedNeXtBlock
        assert all(isinstance(b, expected) for b in stage)


# --------------------------------------------------------------------------------------------------------------------
# gradients reach every parameter
# --------------------------------------------------------------------------------------------------------------------


def _grad_max(net: nn.Module, x: torch.Tensor) -> dict[str, float]:
    net.zero_grad(set_to_none=True)
    linear_probe_loss(net(x)).backward()
    out = {}
    for name, q in net.named_parameters():
        assert q.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(q.grad).all(), f"{name} has a non-finite gradient"
        out[name] = q.grad.abs().max().item()
    return out


# float64 makes a structurally zero gradient ~1e-16 or less; every live gradient here is > 1e-4.
LIVE = 1e-8


@pytest.mark.parametrize(
    ("family", "norm"),
    [("seed_A", "layer"), ("seed_B", "group"), ("seed_A_light1", "layer"), ("v1", "instance"), ("v1", "batch")],
)
@pytest.mark.parametrize("plan", ["2d_4stages_48x80", "3d_aniso_12x40x24"])
def test_every_parameter_gets_a_gradient(plan: str, family: str, norm: str) -> None:
    """With deep supervision on, every parameter (layer scales, norms, all heads...) gets a live, finite gradient."""
    net = build(plan, family, norm=norm).double()
    grads = _grad_max(net, torch.randn(2, 1, *PLANS[plan]["patch"], dtype=torch.float64))
    dead = sorted(n for n, g in grads.items() if g < LIVE)
    assert not dead, f"parameters without gradient: {dead}"
    assert any(n.endswith(".gamma") for n in grads) == family.startswith("seed")


# With a per-channel norm (instance/batch), a per-channel constant added to a seed *encoder* level's residual stream is
# invisible downstream: that stream only reaches pre-norm blocks, the strided conv + norm of the next level and the
# decoder's concat + 1x1 conv + norm. Hence the output biases of the residual branches there (and the norm bias feeding
# the stream) get exactly zero gradient. This is a property of the design, not a wiring bug; the test pins it down.
_INERT_WITH_INSTANCE_NORM = re.compile(
    r"encoder\.(stem\.1|down\.\d+\.1|stages\.\d+\.\d+\.layers\.\d+\.fn\.(fc2|proj_out))\.bias"
)


@pytest.mark.parametrize("family", ["seed_A", "seed_B"])
def test_instance_norm_seed_net_only_shift_biases_are_inert(family: str) -> None:
    net = build("2d_4stages_48x80", family).double()  # default norm: instance
    grads = _grad_max(net, torch.randn(2, 1, 48, 80, dtype=torch.float64))
    dead = {n for n, g in grads.items() if g < LIVE}
    assert dead, "expected the per-channel shift biases of the encoder streams to be inert"
    assert all(_INERT_WITH_INSTANCE_NORM.fullmatch(n) for n in dead), sorted(dead)
    # everything else is live: every weight tensor, every layer scale, every decoder/head parameter
    assert all(grads[n] >= LIVE for n in grads if not n.endswith(".bias") or n.startswith("decoder."))


def test_init_gives_depthwise_kernels_unit_scale_gain() -> None:
    """Convs use He init in fan-out mode counted per group, so depthwise kernels start with gain ~sqrt(2); with a fixed
    std of 0.02 the seed blocks' chained depthwise convs and gates had gradients of ~1e-10 (never moved by AdamW)."""
    net = create_model("mednext_t", num_classes=4)
    heads = {id(h) for h in net.decoder.seg_layers}  # their own rule (head_init), tested below
    checked = 0
    for name, m in net.named_modules():
        if isinstance(m, nn.Conv2d) and m.weight.numel() >= 1000 and id(m) not in heads:
            fan_out = int(np.prod(m.kernel_size)) * m.out_channels // m.groups
            ratio = m.weight.std().item() / np.sqrt(2.0 / fan_out)
            assert 0.85 < ratio < 1.15, (name, ratio)
            checked += m.groups > 1
    assert checked > 20
    assert all(m.bias is None for m in net.modules() if isinstance(m, MedNeXtV1Block) for m in [m.conv1])


# --------------------------------------------------------------------------------------------------------------------
# training: a tiny net overfits one batch
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["seed_A", "seed_B", "v1"])
def test_tiny_net_overfits_one_batch(family: str) -> None:
    torch.manual_seed(0)
    net = MedNeXtUNet(1, 3, 3, [8, 12, 16], nn.Conv2d, 3, [1, 2, 2], exp_ratio=2, **FAMILIES[family])
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 1, 32, 32, generator=g)
    smooth = F.avg_pool2d(x, 5, stride=1, padding=2)
    y = ((smooth > 0.1).long() + (smooth > 0.4).long())[:, 0]  # 3 spatially coherent classes
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.5 * losses[0], losses


# --------------------------------------------------------------------------------------------------------------------
# gradient checkpointing
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["seed_A", "v1"])
def test_checkpointing_gives_same_outputs_and_gradients(family: str, monkeypatch: pytest.MonkeyPatch) -> None:
    ref = build("2d_4stages_48x80", family, drop_path_rate=0.0)
    ckpt = copy.deepcopy(ref)
    ckpt.set_checkpointing(True)
    calls = []
    real = execution_module.checkpoint

    def counting(*args, **kwargs):
        calls.append(kwargs.get("use_reentrant"))
        return real(*args, **kwargs)

    monkeypatch.setattr(execution_module, "checkpoint", counting)
    x = torch.randn(2, 1, 48, 80)
    with recompute_suspended():  # the plain graph (checkpointed blocks run their branches plain too)
        out_ref = ref(x)
    out_ckpt = ckpt(x)
    linear_probe_loss(out_ref).backward()
    n_before_backward = len(calls)
    linear_probe_loss(out_ckpt).backward()
    assert n_before_backward > 0 and set(calls) == {False}  # really checkpointed, non-reentrant
    for a, b in zip(out_ref, out_ckpt):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    for (name, p), q in zip(ref.named_parameters(), ckpt.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6, msg=name)
    ckpt.set_checkpointing(False)
    calls.clear()
    ckpt(x)
    assert not calls


@pytest.mark.parametrize("family", ["seed_A", "v1"])
def test_checkpointing_updates_batchnorm_running_stats_once(family: str) -> None:
    """The backward recomputation must not move running statistics a second time."""
    ref = build("2d_4stages_48x80", family, norm="batch", drop_path_rate=0.0)
    ckpt = copy.deepcopy(ref)
    ckpt.set_checkpointing(True)
    x = torch.randn(2, 1, 48, 80)
    for net in (ref, ckpt):
        net.train()
        linear_probe_loss(net(x)).backward()
    buffers = dict(ckpt.named_buffers())
    block_bn = [n for n in buffers if n.endswith("running_mean") and ".stages." in n]
    assert block_bn, "no batch norm inside a checkpointed block"
    for name, value in ref.named_buffers():
        torch.testing.assert_close(buffers[name], value, rtol=1e-5, atol=1e-6, msg=name)
    assert all(int(buffers[n.replace("running_mean", "num_batches_tracked")]) == 1 for n in block_bn)
    for name, m in ckpt.named_modules():  # momentum restored after the recomputation
        if isinstance(m, torch.nn.BatchNorm2d):
            assert m.momentum == 0.1, name


def test_checkpointing_under_torch_compile_matches_eager() -> None:
    """torch.compile (aot_eager: dynamo + AOT autograd, no C++ compiler needed) with checkpointing and batch norm."""
    torch._dynamo.reset()
    ref = build("2d_4stages_48x80", "seed_A", norm="batch", drop_path_rate=0.0)
    ckpt = copy.deepcopy(ref)
    ckpt.set_checkpointing(True)
    compiled = torch.compile(ckpt, backend="aot_eager")
    x = torch.randn(2, 1, 48, 80)
    with reference_ops():  # a compiled network traces the plain ops (fastops steps aside while compiling)
        out_ref = ref(x)
        linear_probe_loss(out_ref).backward()
    out_c = compiled(x)
    linear_probe_loss(out_c).backward()
    for a, b in zip(out_ref, out_c):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    for (name, p), q in zip(ref.named_parameters(), ckpt.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-3, atol=1e-5, msg=name)
    buffers = dict(ckpt.named_buffers())
    for name, value in ref.named_buffers():
        torch.testing.assert_close(buffers[name], value, rtol=1e-4, atol=1e-5, msg=name)
    torch._dynamo.reset()


# --------------------------------------------------------------------------------------------------------------------
# UpKern
# --------------------------------------------------------------------------------------------------------------------


def _upkern_axis_by_hand(t: torch.Tensor, axis: int) -> torch.Tensor:
    """1D rule of linear interpolation 3 -> 5 with align_corners=True: [a, b, c] -> [a, (a+b)/2, b, (b+c)/2, c]."""
    if t.shape[axis] == 1:
        return t
    assert t.shape[axis] == 3
    a, b, c = t.unbind(axis)
    return torch.stack([a, (a + b) / 2, b, (b + c) / 2, c], dim=axis)


def upkern_by_hand(weight: torch.Tensor) -> torch.Tensor:
    """Bi-/trilinear interpolation is separable: apply the 1D rule along each spatial axis in turn."""
    for axis in range(2, weight.ndim):
        weight = _upkern_axis_by_hand(weight, axis)
    return weight


def test_upkern_hand_rule_matches_known_values() -> None:
    """The hand rule itself, on numbers worked out on paper."""
    row = torch.tensor([[[[1.0, 0.0, 4.0]]]])  # (1, 1, 1, 3)
    assert upkern_by_hand(row).flatten().tolist() == [1.0, 0.5, 0.0, 2.0, 4.0]
    ramp = torch.tensor([[3.0 * i + j for j in range(3)] for i in range(3)])[None, None]  # f(i, j) = 3i + j
    expected = torch.tensor([[1.5 * i + 0.5 * j for j in range(5)] for i in range(5)])  # f at half steps
    torch.testing.assert_close(upkern_by_hand(ramp)[0, 0], expected)


V1_TOPOLOGIES = {
    2: {
        "n_stages": 3,
        "features_per_stage": [4, 8, 16],
        "kernel_sizes": [[3, 3]] * 3,
        "strides": [[1, 1], [2, 2], [2, 2]],
        "conv_op": "torch.nn.Conv2d",
    },
    3: {
        "n_stages": 3,
        "features_per_stage": [4, 8, 16],
        "kernel_sizes": [[1, 3, 3], [3, 3, 3], [3, 3, 3]],
        "strides": [[1, 1, 1], [1, 2, 2], [2, 2, 2]],
        "conv_op": "torch.nn.Conv3d",
    },
}


def _v1(name: str, dims: int, seed: int = 0, num_classes: int = 2, **topology_changes) -> MedNeXtUNet:
    torch.manual_seed(seed)
    topo = {**V1_TOPOLOGIES[dims], **topology_changes}
    return create_model(name, input_channels=1, num_classes=num_classes, spatial_dims=dims, topology=topo)


def _is_depthwise(module: nn.Module) -> bool:
    return isinstance(module, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)) and (
        module.groups == module.in_channels == module.out_channels > 1
    )


@pytest.mark.parametrize("dims", [2, 3])
def test_upkern_k3_to_k5(dims: int) -> None:
    source, target = _v1("mednextv1_s_k3", dims, seed=0), _v1("mednextv1_s_k5", dims, seed=1)
    src = {k: v.clone() for k, v in source.state_dict().items()}
    resized = upkern_load(target, source)
    out = target.state_dict()
    assert list(out) == list(src)

    depthwise_keys = {
        f"{name}.weight" for name, m in target.named_modules() if _is_depthwise(m) and max(m.kernel_size) == 5
    }
    assert depthwise_keys and set(resized) == depthwise_keys
    n_copied = 0
    for key, value in out.items():
        if key in depthwise_keys:
            assert src[key].shape[2:] != value.shape[2:]
            assert max(value.shape[2:]) == 5
            torch.testing.assert_close(value, upkern_by_hand(src[key]), rtol=0, atol=1e-6, msg=key)
        else:
            assert torch.equal(value, src[key]), key
            n_copied += 1
    assert n_copied > len(depthwise_keys)  # convs, norms, heads, biases...
    if dims == 3:  # the anisotropic level keeps its flat axis
        assert tuple(target.encoder.stages[0][0].conv1.kernel_size) == (1, 5, 5)
    x = torch.randn(1, 1, *([8] * dims))
    assert torch.isfinite(target(x)).all()


def test_upkern_from_state_dict_and_return_value() -> None:
    source, target = _v1("mednextv1_b_k3", 2), _v1("mednextv1_b_k5", 2, seed=3)
    resized = upkern_load(target, source.state_dict())
    assert resized == [k for k in target.state_dict() if k in resized]  # in state-dict order
    assert all(k.endswith("conv1.weight") for k in resized)


@pytest.mark.parametrize(
    ("source_kwargs", "target_kwargs", "message"),
    [
        ({"features_per_stage": [8, 16, 32]}, {}, r"shape mismatch at 'encoder\.stem\.weight'"),
        ({"num_classes": 2}, {"num_classes": 5}, r"shape mismatch at 'decoder\.seg_layers\.0\.weight'"),
        ({"n_stages": 2, "kernel_sizes": [[3, 3]] * 2, "strides": [[1, 1], [2, 2]], "features_per_stage": [4, 8]}, {},
         "differ in structure"),
    ],
)
def test_upkern_rejects_other_mismatches(source_kwargs: dict, target_kwargs: dict, message: str) -> None:
    source_kwargs, target_kwargs = dict(source_kwargs), dict(target_kwargs)  # parametrize values are shared
    src_classes = source_kwargs.pop("num_classes", 2)
    tgt_classes = target_kwargs.pop("num_classes", 2)
    source = _v1("mednextv1_s_k3", 2, num_classes=src_classes, **source_kwargs)
    target = _v1("mednextv1_s_k5", 2, seed=1, num_classes=tgt_classes, **target_kwargs)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(UpKernError, match=message):
        upkern_load(target, source)
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())  # target untouched
    assert issubclass(UpKernError, ValueError)


def test_upkern_rejects_other_family() -> None:
    target = _v1("mednextv1_s_k5", 2)
    source = create_model("mednext_t", num_classes=2, topology={**V1_TOPOLOGIES[2]})
    with pytest.raises(UpKernError, match="missing in source"):
        upkern_load(target, source)


# --------------------------------------------------------------------------------------------------------------------
# registry, documented sizes, nnU-Net integration
# --------------------------------------------------------------------------------------------------------------------

_ROW = re.compile(r"^\| `(?P<name>[a-z0-9_]+)` \| (?P<task>\w+) \| (?P<block>\w+) \| (?P<input>[0-9×]+) \| "
                  r"(?P<classes>\d+) \| (?P<params>\d+) \| (?P<mparams>[\d.]+) \| (?P<gmacs>[\d.]+) \|$")


def _documented_rows() -> list[dict[str, str]]:
    path = ROOT / "docs" / "variants.md"
    assert path.is_file(), "docs/variants.md is missing: run python benchmarks/variants_table.py"
    rows = [m.groupdict() for line in path.read_text(encoding="utf-8").splitlines() if (m := _ROW.match(line))]
    assert rows, "no variant rows found in docs/variants.md"
    return rows


def _build_documented(row: dict[str, str], device: str = "meta") -> nn.Module:
    channels, *spatial = (int(v) for v in row["input"].split("×"))
    classes = int(row["classes"])
    with torch.device(device):
        if row["task"] == "classification":
            return create_model(row["name"], in_chans=channels, num_classes=classes)
        return create_model(row["name"], input_channels=channels, num_classes=classes, spatial_dims=len(spatial))


def test_documented_parameter_counts_match_models() -> None:
    rows = _documented_rows()
    assert {r["name"] for r in rows} == set(list_models()), "docs/variants.md is out of date with the registry"
    for name in list_models():
        if name.startswith("mednextv1_"):  # documented in 3D 128^3 and in 2D 224^2
            assert {r["input"] for r in rows if r["name"] == name} == {"1×128×128×128", "1×224×224"}
    for row in rows:
        model = _build_documented(row)
        assert param_count(model) == int(row["params"]), f"{row['name']} {row['input']}: docs/variants.md is stale"
        assert f"{int(row['params']) / 1e6:.2f}" == row["mparams"]
    # meta-device builds (used for speed) count like real ones
    row = next(r for r in rows if r["name"] == "mednext_t")
    assert param_count(_build_documented(row, device="cpu")) == int(row["params"])


def test_documented_macs_match_flop_counter() -> None:
    from torch.utils.flop_counter import FlopCounterMode

    rows = _documented_rows()
    for name, inp in [("mednext_t", "1×224×224"), ("mednextv1_s_k3", "1×128×128×128"), ("mednext_cls_t", "3×224×224")]:
        row = next(r for r in rows if r["name"] == name and r["input"] == inp)
        model = _build_documented(row).eval()
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            model(torch.zeros((1, *(int(v) for v in inp.split("×"))), device="meta"))
        assert f"{counter.get_total_flops() / 2 / 1e9:.2f}" == row["gmacs"], name


def test_registry_lists_all_families() -> None:
    names = list_models()
    assert {"mednext_t", "mednext_s", "mednext_b"} <= set(names)
    assert {f"mednextv1_{s}_k{k}" for s in "sbml" for k in (3, 5)} <= set(names)
    assert set(CLS_VARIANTS) <= set(names)
    assert list_models(task="classification") == sorted(CLS_VARIANTS)
    assert list_models("mednextv1_*_k5") == sorted(f"mednextv1_{s}_k5" for s in "sbml")
    assert get_seg_variant("mednextv1_l_k5").checkpointing and not get_seg_variant("mednextv1_s_k5").checkpointing


def test_reference_topology() -> None:
    t2, t3 = reference_topology(2), reference_topology(3)
    assert t2["n_stages"] == 6 and t2["strides"][0] == [1, 1] and t2["strides"][1:] == [[2, 2]] * 5
    assert t3["n_stages"] == 5 and t3["conv_op"] == "torch.nn.Conv3d"
    with pytest.raises(ValueError):
        reference_topology(1)


@pytest.mark.parametrize(
    ("variant", "dims", "patch", "features"),
    [("mednext_t", 2, (64, 96), None), ("mednextv1_s_k3", 3, (8, 32, 32), [4, 8, 16, 16])],
)
def test_get_network_from_plans_builds_mednext(variant: str, dims: int, patch: tuple, features) -> None:
    """nnU-Net's own builder, given arch_kwargs as they would sit in a plans file (dotted conv_op string)."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    strides = [[1] * dims] + ([[1, 2, 2]] if dims == 3 else [[2, 2]]) + [[2] * dims] * 2
    kernels = [[1, 3, 3]] + [[3, 3, 3]] * 3 if dims == 3 else [[3, 3]] * 4
    conv_op = f"torch.nn.modules.conv.Conv{dims}d"
    arch_kwargs = get_seg_variant(variant).arch_kwargs(4, kernels, strides, conv_op, features)
    # a stock PlainConvUNet plan also carries these: they are accepted and ignored
    arch_kwargs.update({"n_conv_per_stage": [2] * 4, "n_conv_per_stage_decoder": [2] * 3, "conv_bias": True,
                        "norm_op": None, "norm_op_kwargs": {"eps": 1e-5, "affine": True}, "dropout_op": None,
                        "dropout_op_kwargs": None, "nonlin": None, "nonlin_kwargs": {"inplace": True}})
    torch.manual_seed(0)
    net = get_network_from_plans(
        "nnunetv2_mednext.networks.segmentation.MedNeXtUNet", arch_kwargs, ["conv_op"], 1, 4,
        allow_init=True, deep_supervision=True,
    )
    assert isinstance(net, MedNeXtUNet) and net.conv_op is getattr(nn, f"Conv{dims}d")
    with torch.no_grad():
        outputs = net(torch.randn(1, 1, *patch))
    assert [tuple(o.shape[2:]) for o in outputs] == nnunet_ds_shapes(patch, strides)
    assert all(o.shape[:2] == (1, 4) for o in outputs)
    net.decoder.deep_supervision = False
    with torch.no_grad():
        assert net(torch.randn(1, 1, *patch)).shape == (1, 4, *patch)


def test_compute_conv_feature_map_size_monotonic() -> None:
    with torch.device("meta"):
        seed = [create_model(n, num_classes=4) for n in ("mednext_t", "mednext_s", "mednext_b")]
        v1 = [create_model(f"mednextv1_{s}_k3", num_classes=4, spatial_dims=3) for s in "sbml"]
    for nets, patches in [
        (seed, [(64, 64), (64, 128), (128, 128), (224, 224), (256, 320)]),
        (v1, [(32, 32, 32), (32, 64, 64), (64, 64, 64), (128, 128, 128)]),
    ]:
        sizes = np.array([[int(n.compute_conv_feature_map_size(p)) for p in patches] for n in nets])
        assert (sizes > 0).all()
        assert (np.diff(sizes, axis=1) > 0).all(), sizes  # grows with the patch
        assert (np.diff(sizes, axis=0) > 0).all(), sizes  # grows with the variant
    with pytest.raises(ValueError, match="entries"):
        seed[0].compute_conv_feature_map_size((64, 64, 64))


def test_feature_map_size_tracks_real_activation_memory() -> None:
    """The planner's proxy must order configurations like the bytes autograd actually saves (tiny nets)."""

    def saved_bytes(net: nn.Module, x: torch.Tensor) -> int:
        seen: dict[int, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            net(x)
        return sum(seen.values())

    nets = [build("2d_4stages_48x80", "seed_A"), build("2d_4stages_48x80", "seed_A", exp_ratio=4)]
    proxies = [int(n.compute_conv_feature_map_size((48, 80))) for n in nets]
    real = [saved_bytes(n, torch.randn(1, 1, 48, 80)) for n in nets]
    assert proxies[1] > proxies[0] and real[1] > real[0]


# --------------------------------------------------------------------------------------------------------------------
# classification
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("in_chans", [1, 3])
@pytest.mark.parametrize("name", ["mednext_cls_t", "mednext_cls_s", "mednext_cls_b"])
def test_classifier_output_shape(name: str, in_chans: int) -> None:
    torch.manual_seed(0)
    net = create_model(name, in_chans=in_chans, num_classes=3).eval()
    with torch.no_grad():
        out = net(torch.randn(2, in_chans, 64, 64))
    assert out.shape == (2, 3) and torch.isfinite(out).all()


def test_classifier_trains_and_resets_head() -> None:
    torch.manual_seed(0)
    net = create_model("mednext_cls_t", in_chans=1, num_classes=2, composition="B")
    x, y = torch.randn(4, 1, 32, 32), torch.tensor([0, 1, 0, 1])
    F.cross_entropy(net(x), y).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    net.reset_classifier(5)
    assert net(x).shape == (4, 5)


# --------------------------------------------------------------------------------------------------------------------
# clear errors
# --------------------------------------------------------------------------------------------------------------------


def test_unknown_variant_lists_available_names() -> None:
    with pytest.raises(UnknownVariantError) as info:
        create_model("mednext_xxl")
    message = str(info.value)
    assert "mednext_xxl" in message and "available" in message
    assert all(name in message for name in list_models())
    assert isinstance(info.value, KeyError)
    with pytest.raises(UnknownVariantError, match="classification variant"):
        get_seg_variant("mednext_cls_t")


def _kw(**changes) -> dict:
    base = {"input_channels": 1, "num_classes": 2, "n_stages": 3, "features_per_stage": [4, 8, 8],
            "conv_op": nn.Conv2d, "kernel_sizes": 3, "strides": [[1, 1], [2, 2], [2, 2]]}
    return {**base, **changes}


@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [
        ({"strides": [[2, 2], [2, 2], [2, 2]]}, ValueError, r"strides\[0\] must be all ones"),
        ({"strides": [1, 2]}, ValueError, "one per stage"),
        ({"kernel_sizes": [[3, 3, 3]] * 3}, ValueError, "kernel_sizes entry must have 2 entries"),
        ({"conv_op": nn.Conv1d}, ValueError, "conv_op must be torch.nn.Conv2d or torch.nn.Conv3d"),
        ({"conv_op": "torch.nn.Linear"}, ValueError, "conv_op must be"),
        ({"conv_op": "torch.nn.NoSuchConv"}, ValueError, "cannot be imported"),
        ({"conv_op": 4}, ValueError, "spatial dimension must be 2 or 3"),
        ({"n_stages": 1, "strides": [[1, 1]], "features_per_stage": [4]}, ValueError, "n_stages must be >= 2"),
        ({"block": "v3"}, ValueError, "block must be one of"),
        ({"composition": "C"}, ValueError, "composition must be 'A' or 'B'"),
        ({"norm": "weird"}, ValueError, "unknown norm"),
        ({"sem_kernels": (5, 6)}, ValueError, "SEM kernels must be odd"),
        ({"drop_path_rate": 1.0}, ValueError, "drop path rate"),
        ({"not_a_kwarg": 1}, TypeError, r"unexpected keyword argument.*not_a_kwarg"),
    ],
)
def test_invalid_construction_raises_clear_errors(changes: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        MedNeXtUNet(**_kw(**changes))


def test_unknown_kwarg_through_registry() -> None:
    with pytest.raises(TypeError, match=r"unexpected keyword argument.*layerscale"):
        create_model("mednext_t", num_classes=2, layerscale=1e-6)
    with pytest.raises(TypeError):
        create_model("mednext_cls_t", not_an_option=True)


def test_head_init_fan_in_gives_unit_scale_logits_and_survives_nnunet_reinit() -> None:
    """``head_init="fan_in"``: initial logits of about unit scale (fan-out heads give ~5-10); nnU-Net re-applies
    ``initialize`` to every module after construction, which must keep the heads' rule."""
    torch.manual_seed(0)
    x = torch.randn(2, 1, 64, 64)
    stds = {}
    for rule in ("fan_out", "fan_in"):
        net = create_model("mednext_t", num_classes=4, deep_supervision=False, head_init=rule)
        net.apply(net.initialize)  # what get_network_from_plans does
        head = net.decoder.seg_layers[0]
        expected = 1 / math.sqrt(head.in_channels) if rule == "fan_in" else math.sqrt(2 / head.out_channels)
        assert float(head.weight.detach().std()) == pytest.approx(expected, rel=0.2)
        with torch.no_grad():
            stds[rule] = float(net(x).std())
    assert stds["fan_in"] < 2.0 < stds["fan_out"]
    with pytest.raises(ValueError, match="head_init"):
        create_model("mednext_t", num_classes=2, head_init="zeros")
