"""MedNeXt-v2 blocks: GRN by hand, identity at init, shapes on nnU-Net topologies, deep supervision, UpKern, and the
execution routes (CPU fast route, selective recompute in float64 and bf16 autocast) against the reference ops."""

from __future__ import annotations

import copy

import pytest
import torch
from test_recompute import _randomised, assert_same, grads_of
from torch import nn

from nnunetv2_mednext.networks import MedNeXtUNet, upkern_load
from nnunetv2_mednext.networks.fastops import reference_ops
from nnunetv2_mednext.networks.recompute import set_recompute
from nnunetv2_mednext.networks.v2_blocks import GlobalResponseNorm, MedNeXtV2Block, MedNeXtV2Down, MedNeXtV2Up


@pytest.fixture(autouse=True)
def _small():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    set_recompute(True)
    yield
    set_recompute(True)
    torch.set_num_threads(previous)


def _net(n_stages: int, ndim: int, aniso: bool, kernel: int = 3, ds: bool = True) -> MedNeXtUNet:
    strides = [[1] * ndim] + ([[1] + [2] * (ndim - 1)] if aniso else [[2] * ndim]) + [[2] * ndim] * (n_stages - 2)
    kernels = [([1] + [3] * (ndim - 1)) if aniso else [3] * ndim] + [[3] * ndim] * (n_stages - 1)
    torch.manual_seed(0)
    return MedNeXtUNet(2, 3, n_stages=n_stages, features_per_stage=[4, 6, 8, 8, 10, 10, 12][:n_stages],
                       conv_op=f"torch.nn.Conv{ndim}d", kernel_sizes=kernels, strides=strides, deep_supervision=ds,
                       block="v2", exp_ratio=2, n_blocks_per_stage=1, kernel_size=kernel)


def test_grn_matches_a_hand_computed_value() -> None:
    # one sample, two channels, 2x2 map: channel norms 5 and 0 (3-4 triangle; zeros), mean 2.5, so n = (2, 0)
    x = torch.tensor([[[[3.0, 0.0], [0.0, 4.0]], [[0.0, 0.0], [0.0, 0.0]]]])
    grn = GlobalResponseNorm(2, eps=0.0)
    with torch.no_grad():
        grn.gamma.copy_(torch.tensor([0.5, 1.0]))
        grn.beta.copy_(torch.tensor([0.1, -0.2]))
    y = grn(x)
    # channel 0: x + 0.5 * 2 * x + 0.1 = 2x + 0.1; channel 1: 0 + 0 - 0.2
    expected = torch.tensor([[[[6.1, 0.1], [0.1, 8.1]], [[-0.2, -0.2], [-0.2, -0.2]]]])
    assert torch.allclose(y, expected, atol=1e-6)


@pytest.mark.parametrize("shape", [(2, 5, 6, 7), (2, 5, 3, 4, 5)])
def test_grn_is_the_identity_at_init_and_has_zero_parameters(shape) -> None:
    grn = GlobalResponseNorm(shape[1])
    x = torch.randn(shape)
    assert torch.equal(grn(x), x)
    assert not grn.gamma.any() and not grn.beta.any()
    net = _net(4, 3, aniso=True)
    assert all(not m.gamma.any() and not m.beta.any() for m in net.modules() if isinstance(m, GlobalResponseNorm))


def test_grn_keeps_half_precision_inputs_finite() -> None:
    x = torch.full((1, 2, 64, 64, 64), 200.0, dtype=torch.bfloat16)  # sum of squares 1e10: beyond float16
    grn = GlobalResponseNorm(2)
    with torch.no_grad():
        grn.gamma.fill_(1.0)
    y = grn(x)
    assert y.dtype == torch.bfloat16 and torch.isfinite(y).all()
    assert torch.allclose(y.float(), torch.full_like(y.float(), 400.0), rtol=1e-2)


@pytest.mark.parametrize("ndim,n_stages,aniso", [(2, 4, False), (2, 7, True), (3, 4, True), (3, 7, True)])
def test_shapes_and_deep_supervision_on_plan_topologies(ndim: int, n_stages: int, aniso: bool) -> None:
    net = _net(n_stages, ndim, aniso).eval()  # eval: a one-voxel bottleneck is fine for the norms
    base = 2 ** (n_stages - 1)
    size = [base // 2 if aniso else base] + [base] * (ndim - 1)  # the total stride, per axis
    x = torch.randn(2, 2, *size)  # two samples: a one-voxel bottleneck still has two values per channel
    with torch.no_grad():
        out = net(x)
    assert len(out) == n_stages - 1
    assert out[0].shape == (2, 3, *size)
    for o, s in zip(out, net.level_shapes(size)):
        assert o.shape[2:] == s
    net.decoder.deep_supervision = False
    with torch.no_grad():
        assert net(x).shape == (2, 3, *size)
    kinds = {type(m) for m in net.modules()}
    assert {MedNeXtV2Block, MedNeXtV2Down, MedNeXtV2Up} <= kinds


def test_every_block_has_a_grn_after_the_expansion() -> None:
    net = _net(4, 2, aniso=False)
    blocks = [m for m in net.modules() if isinstance(m, MedNeXtV2Block)]
    assert len(blocks) == 4 + 3 + 3 + 3  # encoder stages, decoder stages, down and up blocks
    for b in blocks:
        assert b.grn.gamma.numel() == b.exp_ratio * b.in_channels
        assert any(m is b.grn for m in b.residual_branch().modules)


def test_upkern_from_k3_to_k5() -> None:
    small, large = _net(4, 3, aniso=True, kernel=3), _net(4, 3, aniso=True, kernel=5)
    with torch.no_grad():
        for m in small.modules():
            if isinstance(m, GlobalResponseNorm):
                m.gamma.normal_()
                m.beta.normal_()
    resized = upkern_load(large, small)
    assert resized and all(k.endswith("conv1.weight") for k in resized)
    state, src = large.state_dict(), small.state_dict()
    for k, v in src.items():
        if k not in resized:
            assert torch.equal(state[k], v), k
    # an in-plane 3x3 kernel lands in the centre of the 5x5 one (the through-plane 1 stays 1 on anisotropic axes)
    w3, w5 = src["encoder.stages.0.0.conv1.weight"], state["encoder.stages.0.0.conv1.weight"]
    assert w5.shape[2:] == (1, 5, 5) and w3.shape[2:] == (1, 3, 3)


BLOCKS = {
    "v2_2d": lambda: (MedNeXtV2Block(4, 4, 2, 3, nn.Conv2d), (2, 4, 9, 11)),
    "v2_3d_k5": lambda: (MedNeXtV2Block(4, 4, 2, 5, nn.Conv3d), (2, 4, 6, 7, 5)),
    "v2_down_aniso": lambda: (MedNeXtV2Down(4, 6, stride=(1, 2, 2), kernel_size=(1, 3, 3), conv_op=nn.Conv3d,
                                            exp_ratio=2), (2, 4, 3, 8, 6)),
    "v2_up_start": lambda: (MedNeXtV2Up(6, 4, stride=2, conv_op=nn.Conv2d, exp_ratio=2), (2, 6, 5, 4)),
}


@pytest.mark.parametrize("kind", list(BLOCKS))
def test_block_recompute_float64_equals_plain_autograd(kind: str) -> None:
    torch.manual_seed(0)
    block, shape = BLOCKS[kind]()
    block = _randomised(block).double().train()  # GRN gamma / beta random too (1-D parameters)
    assert block.grn.gamma.abs().min() > 0
    x = torch.randn(shape, dtype=torch.float64)
    assert_same(grads_of(block, x, seed=1, plain=True), grads_of(block, x, seed=1, plain=False), 1e-10)


@pytest.mark.parametrize("kind", ["v2_2d", "v2_up_start"])
def test_block_recompute_bf16_autocast_equals_plain_autograd(kind: str) -> None:
    torch.manual_seed(0)
    block, shape = BLOCKS[kind]()
    block = _randomised(block).train()
    x = torch.randn(shape)
    state = copy.deepcopy(block.state_dict())
    plain = grads_of(block, x, seed=1, plain=True, amp=True)
    block.load_state_dict(state)
    ours = grads_of(block, x, seed=1, plain=False, amp=True)
    truth = grads_of(copy.deepcopy(block).double(), x.double(), seed=1, plain=True)
    assert_same(plain, ours, 1e-2, truth)


@pytest.mark.parametrize("amp", [False, True])
def test_whole_v2_network_recompute_equals_plain_autograd(amp: bool) -> None:
    net = _randomised(_net(4, 3, aniso=True)).train()
    net = net if amp else net.double()
    x = torch.randn(2, 2, 4, 16, 16, dtype=torch.float32 if amp else torch.float64)
    state = copy.deepcopy(net.state_dict())
    plain = grads_of(net, x, seed=2, plain=True, amp=amp)
    net.load_state_dict(state)
    ours = grads_of(net, x, seed=2, plain=False, amp=amp)
    truth = grads_of(copy.deepcopy(net).double(), x.double(), seed=2, plain=True) if amp else None
    assert_same(plain, ours, 1e-2 if amp else 1e-9, truth)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cpu_fast_route_equals_reference_ops(dtype: torch.dtype) -> None:
    """The fast CPU route (channels-last, fast layers; GRN runs its plain module there) against the reference ops:
    outputs, every parameter gradient and the input gradient."""
    net = _randomised(_net(4, 3, aniso=True)).to(dtype).train()
    x = torch.randn(2, 2, 4, 16, 16, dtype=dtype).contiguous(memory_format=torch.channels_last_3d)

    def run(reference: bool):
        net.zero_grad(set_to_none=True)
        xi = x.detach().clone().requires_grad_(True)
        with reference_ops() if reference else torch.enable_grad():
            out = net(xi)
            g = torch.Generator().manual_seed(1)
            sum((o * torch.randn(o.shape, generator=g, dtype=o.dtype)).sum() for o in out).backward()
        return [o.detach() for o in out], xi.grad, {n: p.grad.clone() for n, p in net.named_parameters()}

    (ro, rx, rp), (fo, fx, fp) = run(True), run(False)
    tol = 1e-10 if dtype == torch.float64 else 2e-3
    for a, b in zip(ro, fo):
        assert (a - b).abs().max() <= tol * a.abs().max()
    scale = max(float(g.abs().max()) for g in rp.values())
    for name, g in [("input", rx), *rp.items()]:
        other = fx if name == "input" else fp[name]
        assert float((g - other).abs().max()) <= tol * max(float(g.abs().max()), 1e-3 * scale), name


def test_state_dict_names_match_the_documented_table() -> None:
    """docs/architecture.md section 2a lists these names (for mapping official weights once they appear)."""
    net = _net(4, 3, aniso=True)
    block = {"conv1.weight", "norm.weight", "norm.bias", "conv2.weight", "conv2.bias", "grn.gamma", "grn.beta",
             "conv3.weight", "conv3.bias"}
    skip = block | {"res_conv.weight", "res_conv.bias"}
    for prefix, names in [("encoder.stages.0.0.", block), ("encoder.down.1.", skip), ("decoder.up.0.", skip)]:
        assert {k[len(prefix):] for k in net.state_dict() if k.startswith(prefix)} == names, prefix
