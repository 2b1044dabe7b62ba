"""The fast execution paths of ``networks/fastops/`` compute the same network as the plain PyTorch ops.

* every custom autograd node passes ``torch.autograd.gradcheck`` (float64, against finite differences);
* each depthwise-convolution path (flipped-kernel input gradient, the three weight-gradient formulations, dilated
  convs on sub-grids, cropped padding-only taps) matches ``F.conv2d``/``F.conv3d`` forward and backward;
* whole networks (seed A/B, light levels, Roy et al.; 2D, 3D and anisotropic plans) give the same outputs and
  gradients with fast and reference ops, in float32 (oneDNN kernels) and float64, with unchanged ``state_dict``;
* the fused nodes really run (the equivalence checks are not vacuous) and ``torch.compile`` traces the network
  without graph breaks.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from conftest import autograd_nodes
from torch import nn

from nnunetv2_mednext.networks import MedNeXtUNet, create_model, execution, fastops
from nnunetv2_mednext.networks.fastops import (
    depthwise_conv,
    fused,
    instance_norm,
    kernels,
    reference_ops,
    useful_taps,
)
from nnunetv2_mednext.networks.fastops.layers import FastConv3d, FastConvTranspose3d
from nnunetv2_mednext.networks.recompute import recompute_suspended
from nnunetv2_mednext.networks.seed_blocks import LinearAttentionFFN, MedNeXtBlock, SmoothDWFFN
from nnunetv2_mednext.networks.v1_blocks import MedNeXtV1Block

PLANS = {
    "2d": {"conv_op": "torch.nn.Conv2d", "patch": (48, 80), "strides": [[1, 1], [2, 2], [2, 2], [2, 2]],
           "kernels": [[3, 3]] * 4},
    "2d_aniso": {"conv_op": "torch.nn.Conv2d", "patch": (20, 48), "strides": [[1, 1], [1, 2], [2, 2], [2, 2]],
                 "kernels": [[1, 3], [3, 3], [3, 3], [3, 3]]},
    "3d_aniso": {"conv_op": "torch.nn.Conv3d", "patch": (12, 40, 24),
                 "strides": [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]],
                 "kernels": [[1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]]},
    "3d": {"conv_op": "torch.nn.Conv3d", "patch": (16, 16, 16), "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]],
           "kernels": [[3, 3, 3]] * 3},
}
FAMILIES = {
    "seed_A": {"block": "seed", "composition": "A"},
    "seed_B": {"block": "seed", "composition": "B"},
    "seed_A_light1": {"block": "seed", "composition": "A", "n_light_levels": 1},
    "v1": {"block": "v1"},
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _cl(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last if x.ndim == 4 else torch.channels_last_3d)


def build(plan: str, family: str, **overrides) -> MedNeXtUNet:
    p = PLANS[plan]
    n = len(p["strides"])
    torch.manual_seed(0)
    kw = {"n_stages": n, "features_per_stage": [4, 8, 12, 16][:n], "conv_op": p["conv_op"],
          "kernel_sizes": p["kernels"], "strides": p["strides"], "exp_ratio": 2, **FAMILIES[family], **overrides}
    return MedNeXtUNet(1, 3, deep_supervision=True, **kw)


def probe_loss(outputs: list[torch.Tensor]) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return sum((o * torch.randn(o.shape, generator=g, dtype=o.dtype)).sum() for o in outputs)


def run(net: nn.Module, x: torch.Tensor, reference: bool) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
    net.zero_grad(set_to_none=True)
    with reference_ops() if reference else torch.enable_grad():
        out = net(x)
        probe_loss(out).backward()
    grads = {n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p)) for n, p in net.named_parameters()}
    return [o.detach() for o in out], grads


def assert_same_network(ref, fast, out_tol: float, grad_tol: float) -> None:
    (out_r, g_r), (out_f, g_f) = ref, fast
    for a, b in zip(out_r, out_f):
        assert (a - b).abs().max() <= out_tol * a.abs().max()
    scale = max(g.abs().max().item() for g in g_r.values())
    for name, g in g_r.items():
        # a gradient that is zero in exact arithmetic (e.g. a bias right before a norm) is rounding noise in both
        floor = 1e-3 * scale
        err = (g - g_f[name]).abs().max().item()
        assert err <= grad_tol * max(g.abs().max().item(), floor), (name, err, g.abs().max().item())


# ---------------------------------------------------------------------------------------------------------------
# small pieces
# ---------------------------------------------------------------------------------------------------------------


def test_useful_taps_by_hand() -> None:
    # 7x7, dilation 3: offsets -9, -6, ..., 9; on a 7-wide axis |offset| <= 6 -> 5 taps, on 4 -> 3, on 28 -> 7
    assert useful_taps((7, 7), (3, 3), (7, 4)) == (5, 3)
    assert useful_taps((7, 7), (3, 3), (28, 28)) == (7, 7)
    # a 21-long strip on a 7-wide axis keeps offsets -6..6
    assert useful_taps((21, 1), (1, 1), (7, 9)) == (13, 1)
    assert useful_taps((3, 3, 3), (1, 1, 1), (1, 2, 5)) == (1, 3, 3)


@pytest.mark.parametrize(
    ("shape", "kernel", "dilation", "wgrad"),
    [
        ((2, 3, 9, 11), (5, 5), (1, 1), "swapped"),
        ((2, 3, 9, 11), (7, 7), (3, 3), "swapped"),  # dilated: sub-grids, and taps cropped on the 9-wide axis
        ((2, 3, 6, 7), (7, 1), (3, 1), "native"),
        ((2, 2, 5, 6, 7), (3, 3, 3), (1, 1, 1), "sliced"),  # 3D weight gradient as 2D calls per depth tap
        ((2, 2, 5, 6, 7), (1, 5, 5), (1, 2, 2), "sliced"),
        ((2, 2, 4, 5, 6), (5, 5, 5), (3, 3, 3), "swapped"),
    ],
)
def test_depthwise_conv_matches_conv(monkeypatch, shape, kernel, dilation, wgrad) -> None:
    if wgrad != "swapped":
        monkeypatch.setattr(kernels, "_SWAPPED_WGRAD_MAX_VOXELS", 0)
    torch.manual_seed(0)
    c = shape[1]
    conv = F.conv2d if len(shape) == 4 else F.conv3d
    padding = tuple(d * (k - 1) // 2 for k, d in zip(kernel, dilation))
    x = _cl(torch.randn(shape, dtype=torch.float64)).requires_grad_()
    w = torch.randn(c, 1, *kernel, dtype=torch.float64, requires_grad=True)
    b = torch.randn(c, dtype=torch.float64, requires_grad=True)
    g = torch.randn(shape, dtype=torch.float64)
    ref = conv(x, w, b, 1, padding, dilation, c)
    ref_grads = torch.autograd.grad(ref, (x, w, b), g)
    out = depthwise_conv(x, w, b, padding, dilation)
    grads = torch.autograd.grad(out, (x, w, b), g)
    torch.testing.assert_close(out, ref)
    for a, r in zip(grads, ref_grads):
        torch.testing.assert_close(a, r)
    assert torch.autograd.gradcheck(lambda *t: depthwise_conv(*t, padding, dilation), (x, w, b))


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize(
    ("shape", "kernel", "stride", "padding", "output_padding"),
    [((2, 3, 4, 5, 6), (3, 3, 3), (2, 2, 2), (1, 1, 1), (1, 1, 1)),  # Roy et al. 3D down / up
     ((1, 2, 3, 4, 5), (1, 3, 3), (1, 2, 2), (0, 1, 1), (0, 1, 1))],  # anisotropic plan: flat first axis
)
def test_strided_and_transposed_depthwise_3d(shape, kernel, stride, padding, output_padding, transposed) -> None:
    torch.manual_seed(0)
    c = shape[1]
    cls = FastConvTranspose3d if transposed else FastConv3d
    extra = {"output_padding": output_padding} if transposed else {}
    conv = cls(c, c, kernel, stride=stride, padding=padding, groups=c, **extra).double()
    x = _cl(torch.randn(shape, dtype=torch.float64)).requires_grad_()
    assert kernels.strided_depthwise_fusable(conv, x)
    assert "_StridedDepthwise3DCPUBackward" in autograd_nodes(conv(x))
    with reference_ops():
        ref = conv(x)
    torch.testing.assert_close(conv(x), ref)
    _gradcheck_module(conv, x)


def test_instance_norm_channels_last_gradcheck() -> None:
    torch.manual_seed(0)
    x = _cl(torch.randn(2, 3, 4, 5, dtype=torch.float64) * 3 + 1).requires_grad_()
    w = torch.rand(3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(instance_norm(x, 3, w, b, 1e-5), F.group_norm(x, 3, w, b, 1e-5))
    assert torch.autograd.gradcheck(lambda *t: instance_norm(*t[:1], 3, *t[1:], 1e-5), (x, w, b))


def _gradcheck_module(module: nn.Module, *inputs: torch.Tensor) -> None:
    """gradcheck of ``module(*inputs)`` with respect to the inputs and every parameter of ``module``."""
    names = [n for n, _ in module.named_parameters()]
    n_in = len(inputs)

    def fn(*tensors):
        return torch.func.functional_call(module, dict(zip(names, tensors[n_in:])), tensors[:n_in], strict=True)

    assert torch.autograd.gradcheck(fn, (*inputs, *module.parameters()), atol=1e-6, rtol=1e-4)


class _ConvNorm(nn.Module):
    def __init__(self, seq: nn.Sequential) -> None:
        super().__init__()
        self.seq = seq

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert fused.conv_norm_fusable(self.seq[0], self.seq[1], None, x)
        return fused.conv_norm_forward(self.seq[0], self.seq[1], None, x)


class _SkipFuse(nn.Module):
    def __init__(self, seq: nn.Sequential) -> None:
        super().__init__()
        self.seq = seq

    def forward(self, up: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return execution.skip_fusion(*self.seq, up, skip)


def test_fused_roy_block_gradcheck() -> None:
    torch.manual_seed(0)
    block = MedNeXtV1Block(3, 3, 2, (3, 3), nn.Conv2d, True, "instance").double()
    x = _cl(torch.randn(2, 3, 5, 6, dtype=torch.float64)).requires_grad_()
    assert fused.roy_fusable(block.roy_parts(), x)
    assert "_RoyBlockCPUBackward" in autograd_nodes(block(x))
    _gradcheck_module(block, x)
    with reference_ops():
        ref = MedNeXtV1Block.forward(block, x)
    torch.testing.assert_close(block(x), ref)


def test_fused_ffn_sublayers_gradcheck() -> None:
    torch.manual_seed(0)
    block = MedNeXtBlock(2, nn.Conv2d, "A", 2, "instance", 0.5, 0.0, (3, 5), (3, 5, 2)).double()
    for m in block.modules():  # non-trivial norm affines and biases everywhere
        for p in m.parameters(recurse=False):
            p.data.normal_(0.3, 0.5)
    x = _cl(torch.randn(2, 2, 4, 5, dtype=torch.float64)).requires_grad_()
    kinds = {type(layer.fn) for layer in block.layers}
    assert LinearAttentionFFN in kinds and SmoothDWFFN in kinds
    assert "_PreNormFFNCPUBackward" in autograd_nodes(block(x))
    _gradcheck_module(block, x)
    with reference_ops():
        ref = block(x)
    torch.testing.assert_close(block(x), ref)


class _Seeded(nn.Module):
    """``module(x)`` with the random stream reset first: drop path draws the same masks at every call."""

    def __init__(self, module: nn.Module, seed: int = 3) -> None:
        super().__init__()
        self.module, self.seed = module, seed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.random.fork_rng():
            torch.manual_seed(self.seed)
            return self.module(x)


def test_fused_ffn_sublayers_with_batch_norm_and_drop_path() -> None:
    """The classifier's sub-layers: BatchNorm (batch statistics, running statistics updated as nn.BatchNorm does)
    and drop path (per-sample branch factor) inside the fused node; same function, gradients and buffers."""
    torch.manual_seed(0)
    block = MedNeXtBlock(3, nn.Conv2d, "A", 2, "batch", 0.5, 0.4, (3, 5), (3, 5, 2)).double()
    for m in block.modules():
        for p in m.parameters(recurse=False):
            p.data.normal_(0.3, 0.5)
    x = _cl(torch.randn(4, 3, 4, 5, dtype=torch.float64)).requires_grad_()
    seeded = _Seeded(block).train()
    assert "_PreNormFFNCPUBackward" in autograd_nodes(seeded(x))
    # 4 samples, keep 0.6: with this seed some branches are dropped and some kept in the fused sub-layers
    with torch.random.fork_rng():
        torch.manual_seed(3)
        masks = [torch.empty(4).bernoulli_(0.6) for _ in block.layers]
    assert any(0 < float(m.sum()) < 4 for m in masks)
    names = [n for n, _ in seeded.named_parameters()]

    def fn(inp, *params):  # the BatchNorm buffers stay the module's own
        return torch.func.functional_call(seeded, dict(zip(names, params)), (inp,))

    assert torch.autograd.gradcheck(fn, (x, *seeded.parameters()), atol=1e-6, rtol=1e-4)

    buffers = {n: b.clone() for n, b in block.named_buffers()}
    fast = seeded(x)
    fast_grads = torch.autograd.grad(fast.square().sum(), (x, *block.parameters()))
    fast_buffers = {n: b.clone() for n, b in block.named_buffers()}
    for n, b in block.named_buffers():  # back to the state before the fused call
        b.copy_(buffers[n])
    with reference_ops():
        ref = seeded(x)
        ref_grads = torch.autograd.grad(ref.square().sum(), (x, *block.parameters()))
    torch.testing.assert_close(fast, ref)
    for a, r in zip(fast_grads, ref_grads):
        torch.testing.assert_close(a, r)
    for n, b in block.named_buffers():
        torch.testing.assert_close(fast_buffers[n], b, msg=n)
    assert int(fast_buffers["layers.0.norm.num_batches_tracked"]) == int(buffers["layers.0.norm.num_batches_tracked"]) + 1
    block.eval()  # running statistics: the plain layers (the fused node needs batch statistics)
    assert not fused.ffn_fusable(block.layers[0].ffn_parts(), x)
    synced = nn.SyncBatchNorm.convert_sync_batchnorm(block).train()  # statistics across processes: plain layers
    assert not fused.ffn_fusable(synced.layers[0].ffn_parts(), x)


def test_fused_stem_down_and_skip_fusion_gradcheck() -> None:
    torch.manual_seed(0)
    net = build("2d", "seed_A").double()
    for p in net.parameters():
        p.data.normal_(0.1, 0.5)
    img = torch.randn(2, 1, 6, 8, dtype=torch.float64, requires_grad=True)
    x = _cl(torch.randn(2, 4, 6, 8, dtype=torch.float64)).requires_grad_()
    _gradcheck_module(_ConvNorm(net.encoder.stem), img)
    _gradcheck_module(_ConvNorm(net.encoder.down[1]), x)
    fuse = _SkipFuse(net.decoder.fuse[0])
    up = _cl(torch.randn(2, 12, 3, 4, dtype=torch.float64)).requires_grad_()
    skip = _cl(torch.randn(2, 12, 3, 4, dtype=torch.float64)).requires_grad_()
    assert "_SkipFuseCPUBackward" in autograd_nodes(fuse(up, skip))
    _gradcheck_module(fuse, up, skip)
    for module, args in ((_ConvNorm(net.encoder.stem), (img,)), (fuse, (up, skip))):
        with reference_ops():
            ref = net.encoder.stem(img) if module.seq is net.encoder.stem else module.seq(torch.cat(args, 1))
        torch.testing.assert_close(module(*args), ref)


# ---------------------------------------------------------------------------------------------------------------
# whole networks
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("plan", list(PLANS))
def test_network_fast_equals_reference_float32(plan: str, family: str) -> None:
    net = build(plan, family)
    x = torch.randn(2, 1, *PLANS[plan]["patch"])
    assert_same_network(run(net, x, True), run(net, x, False), out_tol=1e-4, grad_tol=2e-3)


@pytest.mark.parametrize("plan", ["2d_aniso", "3d"])
def test_network_fast_equals_reference_float64(plan: str) -> None:
    net = build(plan, "seed_A_light1").double()
    x = torch.randn(2, 1, *PLANS[plan]["patch"], dtype=torch.float64)
    assert_same_network(run(net, x, True), run(net, x, False), out_tol=1e-10, grad_tol=1e-7)


def test_default_variant_runs_fused_nodes_and_keeps_its_state_dict() -> None:
    net = create_model("mednext_t", num_classes=3, deep_supervision=True, topology={
        "n_stages": 5, "kernel_sizes": [[3, 3]] * 5, "strides": [[1, 1]] + [[2, 2]] * 4, "conv_op": "torch.nn.Conv2d"})
    out = net(torch.randn(1, 1, 64, 64))
    nodes = autograd_nodes(probe_loss(out))
    for node in ("_RoyBlockCPUBackward", "_PreNormFFNCPUBackward", "_ConvNormCPUBackward", "_SkipFuseCPUBackward",
                 "_DepthwiseConvCPUBackward"):  # the SEM sub-layers: plain, through the fast layers
        assert node in nodes, node
    assert "_BranchNodeBackward" not in nodes  # the CPU route does not recompute (speed first)
    # the fast layers are subclasses of the plain ones with another forward: a state_dict of the plain classes
    # (same keys and shapes) loads strictly, and back
    fast_types = {fastops.FastConv2d, fastops.FastConv3d, fastops.FastGroupNorm, fastops.FastConvTranspose2d}
    assert {type(m) for m in net.modules()} & fast_types
    assert all(type(m).__mro__[1] in (nn.Conv2d, nn.Conv3d, nn.GroupNorm, nn.ConvTranspose2d, nn.ConvTranspose3d)
               for m in net.modules() if type(m).__name__.startswith("Fast"))
    state = {k: v.clone() for k, v in net.state_dict().items()}
    plain_stem = nn.Conv2d(1, net.encoder.stem[0].out_channels, 3, padding=1, bias=False)
    plain_stem.load_state_dict(net.encoder.stem[0].state_dict(), strict=True)
    net.encoder.stem[0].load_state_dict(plain_stem.state_dict(), strict=True)
    net.load_state_dict(state, strict=True)


@pytest.mark.parametrize("checkpointing", [False, True])
def test_torch_compile_traces_without_graph_breaks(checkpointing: bool) -> None:
    torch._dynamo.reset()
    net = build("3d", "seed_A_light1")
    net.set_checkpointing(checkpointing)
    explanation = torch._dynamo.explain(net)(torch.randn(2, 1, 16, 16, 16))
    assert explanation.graph_break_count == 0
    assert explanation.graph_count == 1
    torch._dynamo.reset()


def test_env_switch_turns_fast_ops_off() -> None:
    assert fastops.fast_ops_enabled()
    with reference_ops():
        assert not fastops.fast_ops_enabled()
    assert fastops.fast_ops_enabled()
    code = "from nnunetv2_mednext.networks import fastops; print(fastops.fast_ops_enabled())"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={"NNUNETV2_MEDNEXT_FAST_OPS": "0", "PATH": "", "OMP_NUM_THREADS": "1"})
    assert proc.stdout.strip().splitlines()[-1] == "False", proc.stderr[-2000:]


@pytest.mark.parametrize("family", ["seed_A", "v1"])
@pytest.mark.parametrize("plan", ["2d", "3d"])
def test_autocast_bf16_runs_the_reference_ops(plan: str, family: str) -> None:
    """Under CPU bf16 autocast (nnU-Net's AMP step on a CPU, ``doctor``'s bf16 rows) the fused fp32 nodes step aside."""
    net = build(plan, family)
    x = torch.randn(2, 1, *PLANS[plan]["patch"])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not fastops.fast_ops_enabled()
        out = net(x)
        loss = probe_loss([o.float() for o in out])
    loss.backward()
    assert out[0].dtype == torch.bfloat16
    assert not any(n.endswith("CPUBackward") for n in autograd_nodes(loss))
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters() if p.requires_grad)
    with reference_ops(), torch.autocast("cpu", dtype=torch.bfloat16):
        ref = net(x)
    for a, b in zip(out, ref):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_classifier_fast_equals_reference_and_runs_the_fast_layers(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    net = create_model("mednext_cls_t", num_classes=3, in_chans=1, dims=(8, 16, 24, 32), depths=(1, 1, 1, 1),
                       drop_path_rate=0.0).to(dtype)
    assert isinstance(net.stages[0][0].layers[0].fn.fc1, fastops.FastConv2d)  # the fast layers are switched on
    x = torch.randn(2, 1, 64, 64, dtype=dtype)
    fast = run(net, x, False)
    with recompute_suspended():  # the SEM sub-layers' own nodes (recomputed branches hide them in backward)
        nodes = autograd_nodes(probe_loss([net(x)]))
    assert "_DepthwiseConvCPUBackward" in nodes  # the equality below is not vacuous
    tol = (1e-4, 2e-3) if dtype == torch.float32 else (1e-10, 1e-7)
    assert_same_network(run(net, x, True), fast, out_tol=tol[0], grad_tol=tol[1])


def test_one_channel_input_stays_channels_last_after_a_dense_conv() -> None:
    """A (B, 1, H, W) input is channels-last and channels-first at once; oneDNN answers channels-first, which left
    every later layer off the fast paths (the classifier's stem in training, every network's stem in inference)."""
    net = create_model("mednext_t", num_classes=3, deep_supervision=False, topology={
        "n_stages": 3, "kernel_sizes": [[3, 3]] * 3, "strides": [[1, 1]] + [[2, 2]] * 2, "conv_op": "torch.nn.Conv2d"})
    seen = []
    for m in net.encoder.stem:  # the conv itself, and so the whole stem (conv, then norm)
        m.register_forward_hook(lambda m, i, o: seen.append(fastops.is_channels_last(o) and o.shape[1] > 1))
    with torch.no_grad():
        net.eval()(fastops.prepare_input(torch.randn(2, 1, 32, 32)))
    assert seen == [True, True]
    seen.clear()
    with reference_ops(), torch.no_grad():  # the reference path leaves the layout to PyTorch
        out = net.encoder.stem[0](torch.randn(2, 1, 8, 8).contiguous(memory_format=torch.channels_last))
    assert out.is_contiguous() and not fastops.is_channels_last(out)


def test_classifier_default_runs_its_ffn_sublayers_fused() -> None:
    """``mednext_cls_t``'s defaults (BatchNorm, drop path 0.1) take the fused FFN node in training, and give the
    plain layers' outputs and gradients under the same random stream."""
    torch.manual_seed(0)
    net = create_model("mednext_cls_t", num_classes=3, in_chans=1, dims=(8, 16, 24, 32), depths=(1, 1, 2, 1)).double()
    assert max(m.p for m in net.modules() if type(m).__name__ == "DropPath") > 0
    net.train()
    x = torch.randn(3, 1, 64, 64, dtype=torch.float64)

    def seeded_run(reference: bool):
        state = {k: v.clone() for k, v in net.state_dict().items()}
        torch.manual_seed(5)
        result = run(net, x, reference)
        after = {k: v.clone() for k, v in net.state_dict().items()}
        net.load_state_dict(state)
        return result, after

    (fast, fast_state), (ref, ref_state) = seeded_run(False), seeded_run(True)
    torch.manual_seed(5)
    assert "_PreNormFFNCPUBackward" in autograd_nodes(probe_loss([net(x)]))
    assert_same_network(ref, fast, out_tol=1e-10, grad_tol=1e-7)
    for k, v in ref_state.items():  # BatchNorm running statistics included
        torch.testing.assert_close(fast_state[k], v, msg=k)


@pytest.mark.parametrize(("value", "expected"), [("1", "True True"), ("0", "False False"), ("", "False True")])
def test_channels_last_setting(value: str, expected: str) -> None:
    """``NNUNETV2_MEDNEXT_CHANNELS_LAST=1`` selects channels-last activations under autocast too (the GPU route a
    device check can recommend); unset, only the CPU fast route uses them; ``0`` never."""
    code = ("import torch; from nnunetv2_mednext.networks.fastops import prepare_input, is_channels_last\n"
            "x = torch.randn(2, 3, 8, 8)\n"
            "with torch.autocast('cpu', dtype=torch.bfloat16):\n    amp = is_channels_last(prepare_input(x))\n"
            "print(amp, is_channels_last(prepare_input(x)))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={"NNUNETV2_MEDNEXT_CHANNELS_LAST": value, "PATH": "", "OMP_NUM_THREADS": "1"})
    assert proc.stdout.strip().splitlines()[-1] == expected, proc.stderr[-2000:]


def test_invalid_switch_values_name_the_variable_and_the_fix() -> None:
    for var in ("NNUNETV2_MEDNEXT_CHANNELS_LAST", "NNUNETV2_MEDNEXT_FAST_OPS"):
        code = ("import torch; from nnunetv2_mednext.networks.fastops import prepare_input\n"
                "prepare_input(torch.randn(1, 2, 4, 4))")
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env={var: "sometimes", "PATH": "", "OMP_NUM_THREADS": "1"})
        assert proc.returncode != 0 and f"{var}='sometimes' is not valid; fix: use 1" in proc.stderr


def test_channels_last_setting_keeps_every_layer_channels_last_under_autocast() -> None:
    """``NNUNETV2_MEDNEXT_CHANNELS_LAST=1`` (the route the device check measures for cuDNN's depthwise kernels): under
    autocast every multi-channel map a convolution reads is channels-last, from a one-channel input on."""
    code = (
        "import torch\n"
        "from nnunetv2_mednext.networks import create_model\n"
        "from nnunetv2_mednext.networks.fastops import is_channels_last\n"
        "net = create_model('mednext_t', num_classes=3, spatial_dims=3, deep_supervision=True, topology={"
        "'n_stages': 4, 'kernel_sizes': [[3, 3, 3]] * 4, 'strides': [[1, 1, 1]] + [[2, 2, 2]] * 3, "
        "'conv_op': 'torch.nn.Conv3d'})\n"
        "seen = []\n"
        "for m in net.modules():\n"
        "    if isinstance(m, (torch.nn.Conv3d, torch.nn.ConvTranspose3d)):\n"
        "        m.register_forward_pre_hook(lambda m, a: seen.append(a[0].shape[1] == 1 or is_channels_last(a[0])))\n"
        "with torch.autocast('cpu', dtype=torch.bfloat16):\n"
        "    sum(o.float().sum() for o in net(torch.randn(1, 1, 16, 16, 16))).backward()\n"
        "print(len(seen), all(seen))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={"NNUNETV2_MEDNEXT_CHANNELS_LAST": "1", "PATH": "", "OMP_NUM_THREADS": "1"})
    n, ok = proc.stdout.strip().splitlines()[-1].split()
    assert int(n) > 20 and ok == "True", proc.stderr[-2000:]
