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


@pytest.mark.parametrize("channels_last", [False, True])
def test_channel_sum_squares_by_hand_on_both_layouts(channels_last: bool) -> None:
    from nnunetv2_mednext.networks.parts import channel_sum_squares, grn_factor

    # sample 0: channel 0 holds 1, 2 (sum of squares 5), channel 1 holds 3 (9); sample 1: four twos per channel (16)
    x = torch.zeros(2, 2, 2, 1, 2)
    x[0, 0, 0, 0, 0], x[0, 0, 1, 0, 1], x[0, 1, 1, 0, 0] = 1.0, 2.0, 3.0
    x[1] = 2.0
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last_3d)
    sq = channel_sum_squares(x)
    assert torch.equal(sq, torch.tensor([[5.0, 9.0], [16.0, 16.0]]))
    n, factor = grn_factor(torch.tensor([[1.0, 3.0]]), torch.tensor([2.0, -1.0]), eps=0.0)
    assert torch.equal(n, torch.tensor([[0.5, 1.5]])) and torch.equal(factor, torch.tensor([[2.0, -0.5]]))


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
    """The fast CPU route (channels-last, fast layers, the fused v2 block node with its GRN) against the reference ops:
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


@pytest.mark.parametrize("ndim", [2, 3])
def test_fused_v2_block_gradcheck_and_equals_the_plain_modules(ndim: int) -> None:
    """The CPU route runs the whole v2 block, GRN included, as one fused node: float64 gradcheck of its hand-written
    backward (input and every parameter, gamma/beta non-zero), and the same output as the plain modules."""
    from conftest import autograd_nodes
    from test_fastops import _cl, _gradcheck_module

    from nnunetv2_mednext.networks.fastops import fused

    torch.manual_seed(0)
    conv = nn.Conv2d if ndim == 2 else nn.Conv3d
    block = MedNeXtV2Block(3, 3, 2, 3, conv, True, "instance").double()
    for prm in block.parameters():
        prm.data.normal_(0.2, 0.6)
    x = _cl(torch.randn(2, 3, *((5, 6) if ndim == 2 else (3, 4, 5)), dtype=torch.float64)).requires_grad_()
    assert fused.roy_fusable(block.roy_parts(), x)
    assert "_RoyBlockCPUBackward" in autograd_nodes(block(x))
    _gradcheck_module(block, x)
    with reference_ops():
        ref = block(x)
    torch.testing.assert_close(block(x), ref)


def test_fused_v2_block_handles_a_channel_that_is_zero_everywhere() -> None:
    """A channel whose response is zero over the whole map (its L2 norm is 0) gets the gradients of the plain
    modules, not NaN."""
    from test_fastops import _cl

    torch.manual_seed(1)
    block = MedNeXtV2Block(2, 2, 2, 3, nn.Conv2d, True, "instance").double()
    for prm in block.parameters():
        prm.data.normal_(0.2, 0.6)
    with torch.no_grad():  # expanded channel 0: zero weights and a bias that GELU maps to (almost exactly) zero
        block.conv2.weight[0].zero_()
        block.conv2.bias[0] = -40.0
    x = _cl(torch.randn(2, 2, 6, 7, dtype=torch.float64))
    grads = []
    for reference in (True, False):
        block.zero_grad(set_to_none=True)
        xi = x.clone().requires_grad_(True)
        with reference_ops() if reference else torch.enable_grad():
            out = block(xi)
            (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
        grads.append([xi.grad, *(q.grad for q in block.parameters())])
    for a, b in zip(*grads):
        assert torch.isfinite(b).all()
        torch.testing.assert_close(a, b)


def test_state_dict_names_match_the_documented_table() -> None:
    """docs/architecture.md section 2a lists these names (for mapping official weights once they appear)."""
    net = _net(4, 3, aniso=True)
    block = {"conv1.weight", "norm.weight", "norm.bias", "conv2.weight", "conv2.bias", "grn.gamma", "grn.beta",
             "conv3.weight", "conv3.bias"}
    skip = block | {"res_conv.weight", "res_conv.bias"}
    for prefix, names in [("encoder.stages.0.0.", block), ("encoder.down.1.", skip), ("decoder.up.0.", skip)]:
        assert {k[len(prefix):] for k in net.state_dict() if k.startswith(prefix)} == names, prefix


# -- presets, trainers, planners ---------------------------------------------------------------------------------
def test_v2_presets_are_registered_with_their_trainers_and_planners() -> None:
    from nnunetv2_mednext.networks import create_model, list_models
    from nnunetv2_mednext.networks.registry import SEG_VARIANTS
    from nnunetv2_mednext.nnunet.planners.mednext_planner import PLANNERS
    from nnunetv2_mednext.nnunet.trainers.variants import TRAINERS

    assert list_models("mednextv2_*") == ["mednextv2_b", "mednextv2_m", "mednextv2_s"]
    for size in ("S", "B", "M"):
        v, v1 = SEG_VARIANTS[f"mednextv2_{size.lower()}"], SEG_VARIANTS[f"mednextv1_{size.lower()}_k3"]
        # documented (docs/architecture.md 2a): v1's rows of depth and expansion, the v2 block, kernel 3, plan widths
        assert (v.block, v.kernel_size, v.widths) == ("v2", 3, None)
        assert (v.n_blocks, v.n_blocks_decoder, v.exp_ratio, v.exp_ratio_decoder) == \
            (v1.n_blocks, v1.n_blocks_decoder, v1.exp_ratio, v1.exp_ratio_decoder)
        for suffix in ("", "_tiny", "_budget"):
            assert TRAINERS[f"nnUNetTrainerMedNeXtV2_{size}{suffix}"].mednext_variant == v.name
        planner = PLANNERS[f"nnUNetPlannerMedNeXtV2_{size}"]
        assert (planner.mednext_variant, planner.default_plans_name, planner.mednext_topology) == \
            (v.name, f"nnUNetMedNeXtV2{size}Plans", "plan")
    assert SEG_VARIANTS["mednextv2_m"].checkpointing and not SEG_VARIANTS["mednextv2_s"].checkpointing
    net = create_model("mednextv2_s", input_channels=1, num_classes=3, spatial_dims=2)
    assert net.block == "v2" and sum(isinstance(m, GlobalResponseNorm) for m in net.modules()) > 0
    assert net(torch.randn(1, 1, 64, 64)).shape == (1, 3, 64, 64)


@pytest.mark.parametrize("size", ["S", "M"])
def test_v2_trainer_builds_on_an_anisotropic_six_stage_nnunet_plan(size: str) -> None:
    from types import SimpleNamespace

    from nnunetv2_mednext.nnunet.trainers.variants import TRAINERS

    strides = [[1, 1, 1], [1, 2, 2], [1, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]]
    kernels = [[1, 3, 3]] * 3 + [[3, 3, 3]] * 3
    arch = {"n_stages": 6, "features_per_stage": [4, 8, 8, 12, 12, 16], "conv_op": "torch.nn.modules.conv.Conv3d",
            "kernel_sizes": kernels, "strides": strides, "n_conv_per_stage": [2] * 6,
            "n_conv_per_stage_decoder": [2] * 5, "conv_bias": True}
    config = SimpleNamespace(network_arch_init_kwargs=arch, patch_size=[8, 32, 32], pool_op_kernel_sizes=strides,
                             batch_dice=False)
    torch.manual_seed(0)
    net = TRAINERS[f"nnUNetTrainerMedNeXtV2_{size}_tiny"].build_network_architecture(None, config, 1, 3, True)
    assert net.block == "v2" and net.n_stages == 6 and list(net.features_per_stage) == arch["features_per_stage"]
    outs = net(torch.randn(1, 1, 8, 32, 32))
    # nnU-Net's deep-supervision contract: full resolution first, then each decoder level's stride
    assert [tuple(o.shape[2:]) for o in outs] == [(8, 32, 32), (8, 16, 16), (8, 8, 8), (4, 4, 4), (2, 2, 2)]
    sum(o.float().mean() for o in outs).backward()
    assert all(p.grad is not None for p in net.parameters())


@pytest.mark.slow
def test_v2_trains_predicts_and_fine_tunes_in_3d_through_the_stock_commands(tmp_path) -> None:
    """Plan with the V2 planner, ``nnUNetv2_train`` + ``nnUNetv2_predict`` in 3D, then ``-pretrained_weights`` onto a
    dataset with other labels (ball only): nnU-Net loads every key but the heads."""
    import json

    import numpy as np
    import SimpleITK as sitk
    from test_conformance import assert_all_but_heads_loaded

    from nnunetv2_mednext.nnunet.pipeline import NnUNetRunner
    from nnunetv2_mednext.nnunet.synthetic import make_synthetic_3d

    runner = NnUNetRunner(tmp_path / "work")
    shape = (16, 32, 32)
    make_synthetic_3d(runner.raw, 961, n_train=5, n_test=1, shape=shape)
    target = make_synthetic_3d(runner.raw, 962, n_train=5, n_test=1, shape=shape, seed=1)
    for f in (*target.glob("labelsTr/*.nii.gz"), *target.glob("labelsTs/*.nii.gz")):  # box -> background
        img = sitk.ReadImage(str(f))
        out = sitk.GetImageFromArray((sitk.GetArrayFromImage(img) == 1).astype(np.uint8))
        out.CopyInformation(img)
        sitk.WriteImage(out, str(f))
    meta = json.loads((target / "dataset.json").read_text())
    meta["labels"] = {"background": 0, "ball": 1}
    (target / "dataset.json").write_text(json.dumps(meta))

    trainer, plans = "nnUNetTrainerMedNeXtV2_S_tiny", "nnUNetMedNeXtV2SPlans"
    env = {"NNUNETV2_MEDNEXT_FINAL_VALIDATION": "0"}
    for ds in (961, 962):
        runner.plan_and_preprocess(ds, ("3d_fullres",), planner="nnUNetPlannerMedNeXtV2_S")
        written = json.loads((runner.preprocessed / runner.dataset_name(ds) / f"{plans}.json").read_text())
        assert written["configurations"]["3d_fullres"]["mednext_variant"] == "mednextv2_s"
    runner.train(961, "3d_fullres", 0, trainer, plans=plans, extra_env=env)
    pred = tmp_path / "pred"
    runner.predict(961, "3d_fullres", trainer, runner.raw / runner.dataset_name(961) / "imagesTs", pred, plans=plans)
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(pred / "synth_005.nii.gz")))
    assert mask.shape == shape and set(np.unique(mask)) <= {0, 1, 2}

    source = runner.results / runner.dataset_name(961) / f"{trainer}__{plans}__3d_fullres" / "fold_0"
    weights = source / "checkpoint_final.pth"
    _export_with_active_grn(runner, source, weights)
    runner.train(962, "3d_fullres", 0, trainer, plans=plans, extra_env=env,
                 extra_args=["-pretrained_weights", str(weights)])
    log = (runner.workdir / "logs" / f"train_{trainer}_3d_fullres_0.log").read_text()
    loaded, heads = assert_all_but_heads_loaded(log, weights)
    assert any(".grn." in k for k in loaded)  # the GRN parameters are transferred too
    tuned = runner.results / runner.dataset_name(962) / f"{trainer}__{plans}__3d_fullres" / "fold_0"
    out = torch.load(tuned / "checkpoint_final.pth", map_location="cpu", weights_only=False)["network_weights"]
    assert all(out[k].shape[0] == 2 for k in heads if k.endswith("weight"))  # 2 classes now


def _export_with_active_grn(runner, fold_folder, weights) -> None:
    """``nnunetv2-mednext export-onnx`` of the trained 3D v2 model with every GRN's gamma and beta set away from
    zero (after a short training they are still near their identity init): ONNX Runtime agrees with PyTorch."""
    import json
    import subprocess
    import sys

    from nnunetv2_mednext.nnunet.deploy.onnx_export import ATOL, RTOL

    ckpt = torch.load(weights, map_location="cpu", weights_only=False)
    gen = torch.Generator().manual_seed(0)
    grn = [k for k in ckpt["network_weights"] if k.endswith((".grn.gamma", ".grn.beta"))]
    assert grn
    for k in grn:
        ckpt["network_weights"][k] = 0.5 * torch.randn(ckpt["network_weights"][k].shape, generator=gen)
    torch.save(ckpt, fold_folder / "checkpoint_grn.pth")
    done = subprocess.run([sys.executable, "-m", "nnunetv2_mednext", "export-onnx", "-m", str(fold_folder.parent),
                           "-f", "0", "-chk", "checkpoint_grn.pth"], capture_output=True, text=True,
                          env=runner.env(), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    meta = json.loads((fold_folder / "checkpoint_grn.onnx.json").read_text())
    assert meta["trainer"] == "nnUNetTrainerMedNeXtV2_S_tiny" and len(meta["tile"]) == 3
    assert set(meta["check"]) == {"random", "real"}
    for check in meta["check"].values():
        assert check["max_abs_diff"] < ATOL + RTOL * check["max_abs_logit"]
        assert check["argmax_agreement"] == 1.0
