"""Roy et al.'s network under nnU-Net v2 (issue #11): the ``roy`` topology written by the V1 planners, the trainers'
handling of the bottleneck deep-supervision head, plan options, and one planning + training run through the stock
commands."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from nnunetv2_mednext.networks import check_roy_layout
from nnunetv2_mednext.networks.roy_weights import RoyWeightsError
from nnunetv2_mednext.nnunet.trainers.base import nnUNetTrainerMedNeXt
from nnunetv2_mednext.nnunet.trainers.network_from_plans import roy_topology, variant_arch_kwargs
from nnunetv2_mednext.nnunet.trainers.variants import TRAINERS


def stock_plan(strides, kernels=None, features=None) -> dict:
    """arch_kwargs as nnU-Net's planner writes them for PlainConvUNet (widths capped at 320 in 3D)."""
    n, dims = len(strides), len(strides[0])
    return {"n_stages": n, "features_per_stage": features or [min(32 * 2**i, 320) for i in range(n)],
            "conv_op": f"torch.nn.modules.conv.Conv{dims}d", "kernel_sizes": kernels or [[3] * dims] * n,
            "strides": strides, "n_conv_per_stage": [2] * n, "n_conv_per_stage_decoder": [2] * (n - 1), "conv_bias": True}


ISO6 = [[1, 1, 1]] + [[2, 2, 2]] * 5  # nnU-Net's 3D plan for a 128^3 patch at 1 mm: 6 stages


def _config(arch: dict, patch) -> SimpleNamespace:
    return SimpleNamespace(network_arch_init_kwargs=arch, patch_size=list(patch), pool_op_kernel_sizes=arch["strides"],
                           batch_dice=False)


def test_roy_topology_gives_the_official_network_on_an_isotropic_plan() -> None:
    plan = stock_plan(ISO6)
    roy = variant_arch_kwargs("mednextv1_s_k3", plan, topology="roy")
    assert roy["n_stages"] == 5 and roy["features_per_stage"] == [32, 64, 128, 256, 512]
    assert roy["strides"] == ISO6[:5] and roy["ds_bottleneck"] is True and roy["upsample_align"] == "start"
    with torch.device("meta"):
        net = TRAINERS["nnUNetTrainerMedNeXtV1_S_k3"].build_network_architecture(None, _config(roy, (128,) * 3), 1, 9, True)
    check_roy_layout(net)  # the layout the equivalence test pins to the official code
    assert sum(p.numel() for p in net.parameters()) == 5_555_437  # docs/variants.md, Roy table (5 heads)
    # the same trainer on nnU-Net's own plan keeps the plan's stages and capped widths (documented)
    with torch.device("meta"):
        plain = TRAINERS["nnUNetTrainerMedNeXtV1_S_k3"].build_network_architecture(None, _config(plan, (128,) * 3), 1, 9, True)
    assert plain.n_stages == 6 and plain.features_per_stage[-1] == 320 and not plain.ds_bottleneck
    with pytest.raises(RoyWeightsError, match="6 stages"):
        check_roy_layout(plain)


def test_roy_topology_keeps_anisotropic_strides_and_short_plans() -> None:
    aniso = stock_plan([[1, 1, 1], [1, 2, 2], [1, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]],
                       kernels=[[1, 3, 3]] * 3 + [[3, 3, 3]] * 3)
    roy = roy_topology(aniso)
    assert roy["strides"] == aniso["strides"][:5] and roy["kernel_sizes"] == aniso["kernel_sizes"][:5]
    net = TRAINERS["nnUNetTrainerMedNeXtV1_S_k3_tiny"].build_network_architecture(
        None, _config(variant_arch_kwargs("mednextv1_s_k3", aniso, topology="roy"), (8, 32, 32)), 1, 2, True)
    outs = net(torch.zeros(1, 1, 8, 32, 32))
    assert [tuple(o.shape[2:]) for o in outs] == [(8, 32, 32), (8, 16, 16), (8, 8, 8), (4, 4, 4), (2, 2, 2)]
    short = roy_topology(stock_plan([[1, 1], [2, 2], [2, 2]]))
    assert short["n_stages"] == 3 and short["features_per_stage"] == [32, 64, 128]
    with pytest.raises(Exception, match="unknown MedNeXt topology"):
        variant_arch_kwargs("mednextv1_s_k3", aniso, topology="paper")


def test_plan_options_reach_the_network_and_trainer_overrides_win() -> None:
    plan = {**stock_plan([[1, 1], [2, 2], [2, 2]]), "upsample_align": "end", "ds_bottleneck": True}
    net = TRAINERS["nnUNetTrainerMedNeXtV1_S_k3"].build_network_architecture(None, _config(plan, (32, 32)), 1, 2, True)
    assert net.upsample_align == "end" and net.ds_bottleneck
    kw = variant_arch_kwargs("mednextv1_s_k3", plan, {"ds_bottleneck": False})
    assert kw["ds_bottleneck"] is False and kw["upsample_align"] == "end"
    assert "ds_bottleneck" not in variant_arch_kwargs("mednextv1_s_k3", stock_plan([[1, 1], [2, 2]]))


def _bare_trainer(network, strides) -> nnUNetTrainerMedNeXt:
    """A trainer object with just what the loss and scale hooks read (nnU-Net's __init__ needs dataset folders)."""
    from nnunetv2.utilities.label_handling.label_handling import LabelManager

    t = object.__new__(TRAINERS["nnUNetTrainerMedNeXtV1_S_k3"])
    t.network, t.enable_deep_supervision, t.is_ddp, t.device = network, True, False, torch.device("cpu")
    t.configuration_manager = SimpleNamespace(pool_op_kernel_sizes=strides, batch_dice=False)
    t.label_manager = LabelManager({"background": 0, "a": 1, "b": 2}, regions_class_order=None)
    return t


@pytest.mark.parametrize("bottleneck", [True, False])
def test_trainer_supervises_the_bottleneck_head_with_roys_weights(bottleneck: bool) -> None:
    from batchgeneratorsv2.transforms.utils.deep_supervision_downsampling import DownsampleSegForDSTransform

    strides = [[1, 1], [2, 2], [2, 2], [1, 2]]
    arch = variant_arch_kwargs("mednextv1_s_k3", {**stock_plan(strides, features=[4, 8, 12, 16]), "ds_bottleneck": bottleneck})
    torch.manual_seed(0)
    net = TRAINERS["nnUNetTrainerMedNeXtV1_S_k3"].build_network_architecture(None, _config(arch, (16, 32)), 1, 3, True)
    t = _bare_trainer(net, strides)
    scales = t._get_deep_supervision_scales()
    expected = [[1, 1], [0.5, 0.5], [0.25, 0.25]] + ([[0.25, 0.125]] if bottleneck else [])
    assert np.allclose(np.array(scales), np.array(expected))
    loss = t._build_loss()
    if bottleneck:  # Roy et al. (nnU-Net v1 fork): every output weighted 2^-i, none dropped
        assert np.allclose(loss.weight_factors, np.array([1, 0.5, 0.25, 0.125]) / 1.875)
    else:  # nnU-Net v2's own rule: the lowest-resolution output gets weight 0
        assert np.allclose(loss.weight_factors, np.array([1, 0.5, 0]) / 1.5)
    seg = torch.randint(0, 3, (2, 1, 16, 32)).float()
    targets = [DownsampleSegForDSTransform(ds_scales=scales)(segmentation=s)["segmentation"] for s in seg]
    targets = [torch.stack([t_[i] for t_ in targets]) for i in range(len(scales))]
    outputs = net(torch.randn(2, 1, 16, 32))
    assert [o.shape[2:] for o in outputs] == [tt.shape[2:] for tt in targets]
    loss(outputs, targets).backward()
    heads = net.decoder.seg_layers  # [lowest decoder level, ..., full resolution] (+ bottleneck)
    lowest_decoder_live = heads[0].weight.grad is not None and float(heads[0].weight.grad.abs().sum()) > 0
    assert lowest_decoder_live == bottleneck  # nnU-Net's weight 0 leaves it without gradient
    if bottleneck:
        assert len(heads) == 4 and float(heads[3].weight.grad.abs().sum()) > 0


@pytest.mark.parametrize(("name", "warm", "decay_everything"), [
    ("nnUNetTrainerMedNeXtV1_S_k3", False, True),  # Roy et al.: AdamW(all parameters, 1e-3, wd 3e-5), poly, no warm-up
    ("nnUNetTrainerMedNeXt", True, False),
])
def test_v1_recipe_is_roys(name: str, warm: bool, decay_everything: bool) -> None:
    cls = TRAINERS[name]
    t = object.__new__(cls)
    strides = [[1, 1], [2, 2], [2, 2]]
    t.network = cls.build_network_architecture(None, _config(variant_arch_kwargs(cls.mednext_variant, stock_plan(strides)),
                                                             (16, 16)), 1, 2, True)
    t.initial_lr, t.weight_decay = cls.mednext_lr, cls.mednext_weight_decay
    t.num_epochs, t.num_iterations_per_epoch = 1000, 250
    t.device = torch.device("cpu")
    optimizer, scheduler = t.configure_optimizers()
    assert optimizer.defaults["eps"] == 1e-4
    decays = {g["weight_decay"] for g in optimizer.param_groups}
    assert decays == ({cls.mednext_weight_decay} if decay_everything else {cls.mednext_weight_decay, 0.0})
    assert (scheduler.lr_at(0) < cls.mednext_lr) == warm
    if not warm:
        assert cls.mednext_lr == 1e-3 and cls.mednext_weight_decay == 3e-5
        # nnU-Net v1's per-epoch poly value at each epoch start; within an epoch ours decays smoothly
        for epoch in (0, 500, 999):
            assert scheduler.lr_at(epoch * 250) == pytest.approx(1e-3 * (1 - epoch / 1000) ** 0.9)


@pytest.mark.slow
def test_v1_planner_writes_roy_plans_and_the_trainer_trains_all_five_heads(tmp_path: Path) -> None:
    """The wrapper route ``nnunetv2-mednext plan_and_preprocess -pl nnUNetPlannerMedNeXtV1_S_k3``, then a tiny stock
    training: the bottleneck head exists in the checkpoint and received gradients (AdamW moments are non-zero)."""
    from nnunetv2_mednext.nnunet.pipeline import NnUNetRunner
    from nnunetv2_mednext.nnunet.synthetic import make_synthetic_2d

    runner = NnUNetRunner(tmp_path)
    make_synthetic_2d(runner.raw, 993, n_train=6, n_test=1, size=64)
    runner.plan_and_preprocess(993, ("2d",), planner="nnUNetPlannerMedNeXtV1_S_k3")
    name = runner.dataset_name(993)
    plans = json.loads((runner.preprocessed / name / "nnUNetMedNeXtV1Sk3Plans.json").read_text())
    cfg = plans["configurations"]["2d"]
    arch = cfg["architecture"]["arch_kwargs"]
    assert cfg["mednext_topology"] == "roy" and cfg["mednext_variant"] == "mednextv1_s_k3"
    assert arch["n_stages"] == 5 and arch["features_per_stage"] == [32, 64, 128, 256, 512] and arch["ds_bottleneck"]

    trainer = "nnUNetTrainerMedNeXtV1_S_k3_tiny"
    runner.train(993, "2d", 0, trainer, plans="nnUNetMedNeXtV1Sk3Plans")
    fold = runner.results / name / f"{trainer}__nnUNetMedNeXtV1Sk3Plans__2d" / "fold_0"
    ckpt = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert "decoder.seg_layers.4.weight" in ckpt["network_weights"]
    log = next(fold.glob("training_log_*.txt")).read_text()
    assert "deep supervision: 5 outputs" in log
    # find the head's parameter index the way configure_optimizers groups parameters (decay first, then no-decay)
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    pm = PlansManager(plans)
    net = TRAINERS[trainer].build_network_architecture(pm, pm.get_configuration("2d"), 1, 3, True)
    named = [(n, p) for n, p in net.named_parameters()]
    order = [n for n, p in named if p.ndim > 1] + [n for n, p in named if p.ndim <= 1]
    state = ckpt["optimizer_state"]["state"]
    for key in ("decoder.seg_layers.4.weight", "decoder.seg_layers.4.bias"):
        assert float(state[order.index(key)]["exp_avg"].abs().sum()) > 0, key
