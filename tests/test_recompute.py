"""Selective recompute (``networks/recompute.py``) computes the same network as plain autograd and keeps less.

* every block kind (Roy et al. block, strided down / transposed up blocks, seed sub-layers with layer scale, drop
  path and BatchNorm, the conv -> norm stem and downsampling, the decoder's skip fusion) gives the plain modules'
  outputs and the gradients of its input and of every parameter, in float64 and under bf16 autocast;
* both autograd nodes pass ``gradcheck``; drop path draws once, BatchNorm running statistics update once;
* what is kept for backward is the branch input only (the saved-tensor accounting of ``bench_networks.py``);
* the policy switch, its environment variable and the suspension inside whole-block checkpointing.
"""

from __future__ import annotations

import contextlib
import copy
import subprocess
import sys

import pytest
import torch
from conftest import autograd_nodes
from torch import nn

from nnunetv2_mednext.networks import MedNeXtUNet, create_model, recompute
from nnunetv2_mednext.networks.fastops import reference_ops
from nnunetv2_mednext.networks.layers import make_norm
from nnunetv2_mednext.networks.memory import saved_tensor_bytes
from nnunetv2_mednext.networks.recompute import recompute_suspended, set_recompute
from nnunetv2_mednext.networks.seed_blocks import MedNeXtBlock, PreNormResidual, SmoothDWFFN
from nnunetv2_mednext.networks.v1_blocks import MedNeXtV1Block, MedNeXtV1Down, MedNeXtV1Up


@pytest.fixture(autouse=True)
def _recompute_on():
    """Every test starts with the policy on (its default) and leaves it so."""
    set_recompute(True)
    yield
    set_recompute(True)


def grads_of(module: nn.Module, x: torch.Tensor, seed: int, plain: bool, amp: bool = False):
    """Output, input gradient and parameter gradients of one training forward/backward, from one random stream."""
    module.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_(True)
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if amp else contextlib.nullcontext()
    torch.manual_seed(seed)
    with reference_ops(), (recompute_suspended() if plain else contextlib.nullcontext()), ctx:
        out = module(x)
        outs = out if isinstance(out, list) else [out]
        g = torch.Generator().manual_seed(7)
        loss = sum((o.float() * torch.randn(o.shape, generator=g)).sum() for o in outs)
    loss.backward()
    return ([o.detach() for o in outs], x.grad.detach(),
            {n: p.grad.detach() for n, p in module.named_parameters() if p.grad is not None})


def assert_same(ref, got, grad_tol: float, truth=None) -> None:
    """Outputs bit for bit; gradients within ``grad_tol`` of the largest gradient of the network (a tensor whose
    entries cancel to almost nothing, e.g. a bias before a norm, is compared on that scale). With ``truth`` (float64
    gradients of the same network), each gradient must be about as close to it as the reference's."""
    (ro, rx, rp), (go, gx, gp) = ref, got
    for a, b in zip(ro, go):
        assert torch.equal(a, b)
    assert set(rp) == set(gp)
    floor = max(float(v.abs().max()) for v in [rx, *rp.values()]) * 1e-3

    def close(a: torch.Tensor, b: torch.Tensor, name: str, t: torch.Tensor | None) -> None:
        if t is not None:
            err_ref, err = float((a.double() - t).abs().max()), float((b.double() - t).abs().max())
            assert err <= 2 * err_ref + grad_tol * floor, f"{name}: error {err:.2e} vs the reference's {err_ref:.2e}"
            return
        scale = max(float(a.abs().max()), floor)
        assert float((a - b).abs().max()) <= grad_tol * scale, f"{name}: {float((a - b).abs().max()) / scale:.2e}"

    close(rx, gx, "input", None if truth is None else truth[1])
    for name in rp:
        close(rp[name], gp[name], name, None if truth is None else truth[2][name])


BLOCKS = {
    "v1_2d": lambda: (MedNeXtV1Block(6, 6, 2, 3, nn.Conv2d), (2, 6, 9, 11)),
    "v1_3d_k5": lambda: (MedNeXtV1Block(4, 4, 3, 5, nn.Conv3d), (2, 4, 6, 7, 5)),
    "v1_down_aniso": lambda: (MedNeXtV1Down(4, 8, stride=(1, 2, 2), kernel_size=(1, 3, 3), conv_op=nn.Conv3d,
                                            exp_ratio=2), (2, 4, 3, 8, 6)),
    "v1_up_start": lambda: (MedNeXtV1Up(8, 4, stride=2, conv_op=nn.Conv2d, exp_ratio=2), (2, 8, 5, 4)),
    "v1_up_end": lambda: (MedNeXtV1Up(8, 4, stride=2, conv_op=nn.Conv2d, exp_ratio=2, upsample_align="end"),
                          (2, 8, 5, 4)),
    "seed_A_instance": lambda: (MedNeXtBlock(8, nn.Conv2d, "A", 2, "instance", 0.5), (2, 8, 12, 10)),
    "seed_A_3d_droppath": lambda: (MedNeXtBlock(4, nn.Conv3d, "A", 2, "instance", 0.5, drop_path=0.5), (4, 4, 6, 6, 6)),
    "seed_B_batch_droppath": lambda: (MedNeXtBlock(8, nn.Conv2d, "B", 3, "batch", 0.3, drop_path=0.4), (3, 8, 9, 9)),
    "seed_layer_norm_no_scale": lambda: (MedNeXtBlock(6, nn.Conv2d, "A", 2, "layer", None), (2, 6, 8, 8)),
}


def _randomised(module: nn.Module) -> nn.Module:
    """Non-trivial norm affine parameters and layer scales (zeros or ones would hide mistakes)."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.ndim == 1:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5 + (1.0 if "weight" in name else 0.0))
    return module


@pytest.mark.parametrize("kind", list(BLOCKS))
def test_block_float64_equals_plain_autograd(kind: str) -> None:
    torch.manual_seed(0)
    block, shape = BLOCKS[kind]()
    block = _randomised(block).double().train()
    x = torch.randn(shape, dtype=torch.float64)
    plain = grads_of(block, x, seed=11, plain=True)
    ours = grads_of(block, x, seed=11, plain=False)
    assert_same(plain, ours, 1e-10)


@pytest.mark.parametrize("kind", ["v1_2d", "v1_up_start", "seed_A_instance", "seed_B_batch_droppath"])
def test_block_bf16_autocast_equals_plain_autograd(kind: str) -> None:
    """Under autocast the recompute makes autocast's dtype decisions again: same outputs bit for bit, and
    gradients as close to the float64 ones as plain autograd's (the layer-scale form of the projection's weight
    gradient rounds at another place)."""
    torch.manual_seed(0)
    block, shape = BLOCKS[kind]()
    block = _randomised(block).train()
    x = torch.randn(shape)
    state = copy.deepcopy(block.state_dict())
    plain = grads_of(block, x, seed=11, plain=True, amp=True)
    block.load_state_dict(state)
    ours = grads_of(block, x, seed=11, plain=False, amp=True)
    block.load_state_dict(state)
    truth = grads_of(copy.deepcopy(block).double(), x.double(), seed=11, plain=True)
    assert_same(plain, ours, 1e-2, truth)


def test_nodes_run_and_keep_only_the_branch_input() -> None:
    """The equivalences above are not vacuous: the nodes run, and a Roy block keeps nothing but its input."""
    torch.manual_seed(0)
    block = MedNeXtV1Block(6, 6, 4, 3, nn.Conv2d).train()
    x = torch.randn(2, 6, 16, 16, requires_grad=True)
    with reference_ops():
        assert "_BranchNodeBackward" in autograd_nodes(block(x))
        kept = saved_tensor_bytes(lambda: block(x), list(block.parameters()))
        with recompute_suspended():
            assert "_BranchNodeBackward" not in autograd_nodes(block(x))
            plain = saved_tensor_bytes(lambda: block(x), list(block.parameters()))
    assert kept == x.numel() * x.element_size()
    # plain autograd: DW input, norm input, expansion input (C each), GELU input and compression input (4C each),
    # and the norm's per-(sample, channel) mean and rstd
    assert plain == 11 * x.numel() * x.element_size() + 2 * 2 * 6 * 4


def test_branch_and_region_nodes_gradcheck() -> None:
    torch.manual_seed(0)
    sub = _randomised(PreNormResidual(SmoothDWFFN(3, 2, nn.Conv2d), make_norm("instance", 3, nn.Conv2d), 3, 0.7, 0.0))
    sub = sub.double()
    x = torch.randn(2, 3, 5, 4, dtype=torch.float64, requires_grad=True)
    params = [p for p in sub.parameters()]

    def f(inp, *ps):
        with torch.no_grad():
            for p, v in zip(params, ps):
                p.copy_(v)
        return sub(inp)

    # gradients of input and parameters together: functional_call keeps the parameters as graph inputs
    from torch.func import functional_call

    names = [n for n, _ in sub.named_parameters()]
    values = [p.detach().clone().requires_grad_(True) for p in params]

    def g(inp, *ps):
        return functional_call(sub, dict(zip(names, ps)), (inp,))

    with reference_ops():
        assert torch.autograd.gradcheck(g, (x, *values))
        seq = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.GroupNorm(4, 4)).double()
        assert torch.autograd.gradcheck(lambda t: recompute.region_forward(seq, (seq,), t), (x,))
    del f


def test_drop_path_draws_once_and_batchnorm_updates_once() -> None:
    torch.manual_seed(0)
    block = MedNeXtBlock(8, nn.Conv2d, "A", 2, "batch", 0.5, drop_path=0.5).double().train()
    x = torch.randn(4, 8, 6, 6, dtype=torch.float64)
    state = {k: v.clone() for k, v in block.state_dict().items()}
    plain = grads_of(block, x, seed=3, plain=True)
    after_plain = {k: v.clone() for k, v in block.state_dict().items()}
    block.load_state_dict(state)
    ours = grads_of(block, x, seed=3, plain=False)
    assert_same(plain, ours, 1e-10)
    for k, v in after_plain.items():  # running mean/var and num_batches_tracked: one update, as plain
        assert torch.equal(block.state_dict()[k], v), k
    block.load_state_dict(state)
    other_draw = grads_of(block, x, seed=4, plain=False)
    assert not torch.equal(other_draw[0][0], ours[0][0])  # drop path is active: the draw decides the output


@pytest.mark.parametrize("family", ["seed", "v1"])
@pytest.mark.parametrize("amp", [False, True])
def test_whole_network_equals_plain_autograd(family: str, amp: bool) -> None:
    """Whole networks (stem, downsampling, skip fusion, every block, heads) with deep supervision, 3D anisotropic."""
    torch.manual_seed(0)
    net = MedNeXtUNet(2, 3, n_stages=4, features_per_stage=[4, 8, 12, 16], conv_op="torch.nn.Conv3d",
                      kernel_sizes=[[1, 3, 3]] + [[3, 3, 3]] * 3, strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]],
                      deep_supervision=True, block=family, exp_ratio=2, n_light_levels=1 if family == "seed" else 0,
                      drop_path_rate=0.3)
    net = net.train() if amp else net.double().train()
    x = torch.randn(2, 2, 4, 16, 16, dtype=torch.float32 if amp else torch.float64)
    state = copy.deepcopy(net.state_dict())
    plain = grads_of(net, x, seed=5, plain=True, amp=amp)
    net.load_state_dict(state)
    ours = grads_of(net, x, seed=5, plain=False, amp=amp)
    truth = None
    if amp:
        net.load_state_dict(state)
        truth = grads_of(copy.deepcopy(net).double(), x.double(), seed=5, plain=True)
    assert_same(plain, ours, 1e-2 if amp else 1e-9, truth)


def test_recompute_keeps_less_for_backward_than_plain_autograd() -> None:
    torch.manual_seed(0)
    net = create_model("mednext_t", num_classes=3, spatial_dims=2, deep_supervision=True, topology={
        "n_stages": 5, "kernel_sizes": [[3, 3]] * 5, "strides": [[1, 1]] + [[2, 2]] * 4, "conv_op": "torch.nn.Conv2d"})
    x = torch.randn(2, 1, 64, 64)

    def kept(plain: bool) -> int:
        def fwd():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return sum(o.float().sum() for o in net(x))
        with recompute_suspended() if plain else contextlib.nullcontext():
            return saved_tensor_bytes(fwd, list(net.parameters()))

    assert kept(False) < 0.4 * kept(True)


def test_no_recompute_without_autograd_or_when_switched_off() -> None:
    block = MedNeXtV1Block(4, 4, 2, 3, nn.Conv2d)
    x = torch.randn(1, 4, 8, 8, requires_grad=True)
    with reference_ops():
        with torch.no_grad():
            assert block(x).grad_fn is None
        set_recompute(False)
        assert "_BranchNodeBackward" not in autograd_nodes(block(x))
        set_recompute(True)
        assert "_BranchNodeBackward" in autograd_nodes(block(x))


def test_whole_block_checkpointing_suspends_selective_recompute() -> None:
    """With ``checkpointing=True`` each block is recomputed as a whole already; its branches run plain inside."""
    torch.manual_seed(0)
    net = create_model("mednextv1_s_k3", num_classes=2, spatial_dims=2, checkpointing=True, topology={
        "n_stages": 3, "kernel_sizes": [[3, 3]] * 3, "strides": [[1, 1]] + [[2, 2]] * 2, "conv_op": "torch.nn.Conv2d"})
    x = torch.randn(1, 1, 16, 16)
    plain = grads_of(net, x, seed=0, plain=True)
    calls = []
    original = recompute._BranchNode.apply

    def spy(*args):
        calls.append(1)
        return original(*args)

    recompute._BranchNode.apply = spy  # type: ignore[method-assign]
    try:
        ours = grads_of(net, x, seed=0, plain=False)
    finally:
        recompute._BranchNode.apply = original  # type: ignore[method-assign]
    assert calls == []
    assert_same(plain, ours, 1e-6)


def test_env_variable() -> None:
    code = "from nnunetv2_mednext.networks import recompute; print(recompute.recompute_enabled())"
    for value, expected in (("0", "False"), ("off", "False"), ("1", "True"), ("", "True")):
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env={"NNUNETV2_MEDNEXT_RECOMPUTE": value, "PATH": "", "OMP_NUM_THREADS": "1"})
        assert proc.stdout.strip().splitlines()[-1] == expected, proc.stderr[-2000:]
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={"NNUNETV2_MEDNEXT_RECOMPUTE": "maybe", "PATH": "", "OMP_NUM_THREADS": "1"})
    assert proc.returncode != 0 and "NNUNETV2_MEDNEXT_RECOMPUTE='maybe' is not valid" in proc.stderr


def test_compiled_network_traces_the_checkpointed_branches() -> None:
    """Under ``torch.compile`` the branches become ``torch.utils.checkpoint`` regions: same outputs and gradients."""
    torch.manual_seed(0)
    net = create_model("mednext_t", num_classes=2, spatial_dims=2, deep_supervision=False, topology={
        "n_stages": 3, "kernel_sizes": [[3, 3]] * 3, "strides": [[1, 1]] + [[2, 2]] * 2, "conv_op": "torch.nn.Conv2d"},
        n_light_levels=1).train()
    x = torch.randn(2, 1, 16, 16)
    eager = grads_of(net, x, seed=0, plain=True)
    torch._dynamo.reset()
    compiled = torch.compile(net, backend="aot_eager", fullgraph=True)
    try:
        got = grads_of(compiled, x, seed=0, plain=False)
    finally:
        torch._dynamo.reset()
    got = ([o for o in got[0]], got[1], {k.removeprefix("_orig_mod."): v for k, v in got[2].items()})
    for a, b in zip(eager[0], got[0]):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    assert_same(([], *eager[1:]), ([], *got[1:]), 1e-4)


@pytest.mark.parametrize("last", ["relu", "sigmoid", "gelu"])
def test_branch_whose_body_saves_its_output(last: str) -> None:
    """ReLU and sigmoid save their *output* for backward: the node must keep the re-run body's output then (it frees
    it only when no node of the body saved it, e.g. after GELU, which saves its input)."""
    from nnunetv2_mednext.networks.parts import ResidualBranch

    torch.manual_seed(0)
    conv = nn.Conv2d(4, 8, 3, padding=1).double()
    proj = nn.Conv2d(8, 4, 1).double()
    act = {"relu": nn.ReLU(), "sigmoid": nn.Sigmoid(), "gelu": nn.GELU()}[last]

    def body(t: torch.Tensor) -> torch.Tensor:
        return act(conv(t))

    branch = ResidualBranch(body, proj, (conv, act))
    x = torch.randn(2, 4, 6, 5, dtype=torch.float64, requires_grad=True)
    params = [x, *conv.parameters(), *proj.parameters()]
    with reference_ops():
        ours = torch.autograd.grad(recompute.branch_forward(branch, x).square().sum(), params)
        with recompute_suspended():
            plain = torch.autograd.grad(recompute.branch_forward(branch, x).square().sum(), params)
    for a, b in zip(ours, plain):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
