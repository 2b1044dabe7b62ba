"""Trainer glue without running nnU-Net: schedule values, budgets, threads, plan checks, UpKern checkpoint errors."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from nnunetv2_mednext.errors import MedNeXtUserError
from nnunetv2_mednext.nnunet.trainers.base import CHECKPOINTING_ENV, checkpointing_from_env, nnUNetTrainerMedNeXt
from nnunetv2_mednext.nnunet.trainers.network_from_plans import build_mednext_from_plans, check_patch_size
from nnunetv2_mednext.nnunet.trainers.schedule import WarmupPolyLR
from nnunetv2_mednext.nnunet.trainers.threads import apply_thread_env
from nnunetv2_mednext.nnunet.trainers.upkern_checkpoint import default_target_trainer, upkern_checkpoint
from nnunetv2_mednext.nnunet.trainers.variants import TRAINERS, parse_budget


def test_warmup_poly_values_by_hand() -> None:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    s = WarmupPolyLR(opt, base_lr=0.01, total_iters=100, warmup_iters=4, iters_per_epoch=10)
    assert s.lr_at(0) == pytest.approx(0.01 * 1 / 5)
    assert s.lr_at(3) == pytest.approx(0.01 * 4 / 5)
    assert s.lr_at(4) == pytest.approx(0.01)
    assert s.lr_at(52) == pytest.approx(0.01 * (1 - 48 / 96) ** 0.9)
    assert s.lr_at(100) == 0.0
    s.step(2)  # nnU-Net's epoch hook: first iteration of epoch 2
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01 * (1 - 16 / 96) ** 0.9) == s.get_last_lr()[0]


def test_budget_parsing() -> None:
    assert parse_budget(None) == (1, 10, 2)
    assert parse_budget("3,20") == (3, 20, 2)
    assert parse_budget("3,20,5") == (3, 20, 5)
    for bad in ("lots", "1", "0,5", "1,2,3,4", "-1,2"):
        with pytest.raises(MedNeXtUserError, match="NNUNETV2_MEDNEXT_BUDGET"):
            parse_budget(bad)


def test_threads_follow_omp_num_threads_on_cpu_only(monkeypatch: pytest.MonkeyPatch) -> None:
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        assert apply_thread_env(torch.device("cpu")) == 1 and torch.get_num_threads() == 1
        assert apply_thread_env(torch.device("cuda")) is None
        monkeypatch.setenv("OMP_NUM_THREADS", "many")
        assert apply_thread_env(torch.device("cpu")) is None
    finally:
        torch.set_num_threads(before)


def _config(patch: list[int], strides: list[list[int]]) -> SimpleNamespace:
    arch = {"n_stages": len(strides), "kernel_sizes": [[3, 3]] * len(strides), "strides": strides,
            "conv_op": "torch.nn.modules.conv.Conv2d", "features_per_stage": [32, 64, 128, 256]}
    return SimpleNamespace(network_arch_init_kwargs=arch, patch_size=patch)


def test_build_from_plans_checks_patch_and_variant() -> None:
    strides = [[1, 1], [2, 2], [2, 2], [2, 2]]
    net = build_mednext_from_plans("mednext_t", _config([64, 48], strides), 1, 3, True)
    outs = net(torch.zeros(1, 1, 64, 48))
    assert [tuple(o.shape) for o in outs] == [(1, 3, 64, 48), (1, 3, 32, 24), (1, 3, 16, 12)]
    with pytest.raises(MedNeXtUserError, match=r"patch size \[60, 48\] is not divisible .* \[8, 8\]"):
        build_mednext_from_plans("mednext_t", _config([60, 48], strides), 1, 3, True)
    with pytest.raises(MedNeXtUserError, match="mednext_x"):
        build_mednext_from_plans("mednext_x", _config([64, 48], strides), 1, 3, True)
    check_patch_size([16, 64, 64], [[1, 1, 1], [1, 2, 2], [2, 2, 2]])  # anisotropic: fine


def test_checkpointing_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert checkpointing_from_env(None) is None and checkpointing_from_env(" ") is None
    assert checkpointing_from_env("1") is True and checkpointing_from_env("ON") is True
    assert checkpointing_from_env("0") is False and checkpointing_from_env("off") is False
    with pytest.raises(MedNeXtUserError, match=f"{CHECKPOINTING_ENV}='maybe' is not valid"):
        checkpointing_from_env("maybe")
    cfg = _config([64, 64], [[1, 1], [2, 2], [2, 2], [2, 2]])
    seed, v1_l = nnUNetTrainerMedNeXt, TRAINERS["nnUNetTrainerMedNeXtV1_L_k3"]
    monkeypatch.delenv(CHECKPOINTING_ENV, raising=False)
    assert not seed.build_network_architecture(None, cfg, 1, 2, True).checkpointing  # variant defaults
    assert v1_l.build_network_architecture(None, cfg, 1, 2, True).checkpointing
    monkeypatch.setenv(CHECKPOINTING_ENV, "1")
    net = seed.build_network_architecture(None, cfg, 1, 2, True)
    assert net.checkpointing and net.encoder.use_checkpoint and net.decoder.use_checkpoint
    monkeypatch.setenv(CHECKPOINTING_ENV, "0")
    assert not v1_l.build_network_architecture(None, cfg, 1, 2, True).checkpointing
    assert "checkpointing" not in seed.mednext_overrides  # the class recipe is not mutated


def test_every_mednext_trainer_builds_for_a_2d_plan() -> None:
    cfg = _config([64, 64], [[1, 1], [2, 2], [2, 2], [2, 2]])
    built = 0
    for name, cls in TRAINERS.items():
        if name.endswith(("_tiny", "_budget")) or "epoch" in name or "RefUNet" in name or "RecipeUNet" in name:
            continue
        net = cls.build_network_architecture(None, cfg, 2, 4, False)
        assert net(torch.zeros(1, 2, 64, 64)).shape == (1, 4, 64, 64), name
        built += 1
    assert built == 4 + 8 + 3  # nnUNetTrainerMedNeXt, _T, _S, _B + V1 S/B/M/L x k3/k5 + V2 S/B/M


def test_upkern_target_names_and_errors(tmp_path: Path) -> None:
    assert default_target_trainer("nnUNetTrainerMedNeXtV1_S_k3") == "nnUNetTrainerMedNeXtV1_S_k5"
    assert default_target_trainer("nnUNetTrainerMedNeXtV1_L_k3_250epochs") == "nnUNetTrainerMedNeXtV1_L_k5_250epochs"
    with pytest.raises(MedNeXtUserError, match="not a MedNeXtV1 trainer"):
        default_target_trainer("nnUNetTrainer")
    with pytest.raises(MedNeXtUserError, match="not found"):
        upkern_checkpoint(tmp_path / "missing.pth", tmp_path / "out.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(MedNeXtUserError, match="cannot read checkpoint"):
        upkern_checkpoint(tmp_path / "junk.pth", tmp_path / "out.pth")
    torch.save({"state_dict": {}}, tmp_path / "other.pth")
    with pytest.raises(MedNeXtUserError, match="not an nnU-Net training checkpoint"):
        upkern_checkpoint(tmp_path / "other.pth", tmp_path / "out.pth")
    (tmp_path / "out.pth").write_text("keep me")
    with pytest.raises(MedNeXtUserError, match="exists"):
        upkern_checkpoint(tmp_path / "other.pth", tmp_path / "out.pth")
    assert (tmp_path / "out.pth").read_text() == "keep me"


def test_every_trainer_applies_the_thread_setting() -> None:
    """Each trainer's __init__ chain passes through exactly one class that calls ``apply_thread_env``."""
    from nnunetv2_mednext.nnunet.trainers.variants import _RefUNet

    for name, cls in TRAINERS.items():
        assert issubclass(cls, nnUNetTrainerMedNeXt) != issubclass(cls, _RefUNet), name


def test_seed_from_env_makes_networks_and_sampling_repeat(monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np

    from nnunetv2_mednext.nnunet.trainers.seeding import SEED_ENV, seed_from_env

    cfg = _config([64, 64], [[1, 1], [2, 2], [2, 2], [2, 2]])
    monkeypatch.delenv(SEED_ENV, raising=False)
    assert seed_from_env() is None
    draws = []
    for seed in ("7", "7", "8"):
        monkeypatch.setenv(SEED_ENV, seed)
        assert seed_from_env() == int(seed)
        net = nnUNetTrainerMedNeXt.build_network_architecture(None, cfg, 1, 2, True)
        draws.append((next(net.parameters()).detach().clone(), np.random.rand()))
    assert torch.equal(draws[0][0], draws[1][0]) and draws[0][1] == draws[1][1]
    assert not torch.equal(draws[0][0], draws[2][0])
    monkeypatch.setenv(SEED_ENV, "seven")
    with pytest.raises(MedNeXtUserError, match=f"{SEED_ENV}='seven' is not valid; fix"):
        seed_from_env()


@pytest.mark.parametrize("length", ["budget", "tiny"])
def test_short_runs_can_skip_nnunets_final_validation(monkeypatch: pytest.MonkeyPatch, length: str) -> None:
    """``NNUNETV2_MEDNEXT_FINAL_VALIDATION=0`` skips the end-of-training validation of ``_budget`` and ``_tiny`` runs;
    the ``_XXepochs`` lengths always validate."""
    from nnunetv2_mednext.errors import MedNeXtUserError
    from nnunetv2_mednext.nnunet.trainers.variants import (
        FINAL_VALIDATION_ENV,
        LENGTHS,
        _ShortRun,
        final_validation_wanted,
    )

    run = LENGTHS[length]
    assert issubclass(run, _ShortRun) and not issubclass(LENGTHS["250epochs"], _ShortRun)

    class Base:
        def __init__(self) -> None:
            self.calls: list[object] = []

        def perform_actual_validation(self, save_probabilities: bool = False) -> None:
            self.calls.append(save_probabilities)

        def print_to_log_file(self, *args: object) -> None:
            self.calls.append(" ".join(map(str, args)))

    class Budget(run, Base):  # type: ignore[valid-type,misc]
        def __init__(self) -> None:  # the run length is not under test here
            Base.__init__(self)

    assert final_validation_wanted(None) and final_validation_wanted("on") and not final_validation_wanted(" OFF ")
    for value, expected in ((None, [True]), ("1", [True]), ("0", [f"final validation skipped ({FINAL_VALIDATION_ENV}=0)"])):
        if value is None:
            monkeypatch.delenv(FINAL_VALIDATION_ENV, raising=False)
        else:
            monkeypatch.setenv(FINAL_VALIDATION_ENV, value)
        trainer = Budget()
        trainer.perform_actual_validation(True)
        assert trainer.calls == expected
    monkeypatch.setenv(FINAL_VALIDATION_ENV, "maybe")
    with pytest.raises(MedNeXtUserError, match=f"{FINAL_VALIDATION_ENV}='maybe' is not valid; fix: use 1"):
        run.run_length()  # checked when the trainer is built, before nnU-Net writes a log
