"""Every trainer nnU-Net can find through the installed package, and every planner we register, actually works.

Trainers are enumerated the way nnU-Net's lookup sees them (the classes of the ``nnUNet_extTrainer`` folder that
our start-up hook registers), then each is built exactly as ``nnUNetv2_train`` builds it
(``get_trainer_from_args`` + ``initialize()``) in one fresh interpreter. Planners all run through
``nnunetv2-mednext plan_and_preprocess -pl ...``. One tiny dataset, planned once: about a minute in all.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from nnunetv2_mednext.nnunet.pipeline import NnUNetRunner
from nnunetv2_mednext.nnunet.synthetic import make_synthetic_2d

DS = 993
BUDGET = "3,7,2"

ENUMERATE = r"""
import importlib, inspect, json, os, pkgutil, sys
import torch
from nnunetv2.run.run_training import get_trainer_from_args
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

names = set()
for folder in filter(None, os.environ.get("nnUNet_extTrainer", "").split(os.pathsep)):
    sys.path.insert(0, folder)
    for info in pkgutil.walk_packages([folder]):
        module = importlib.import_module(info.name)
        names.update(n for n, o in vars(module).items()
                     if inspect.isclass(o) and issubclass(o, nnUNetTrainer) and o is not nnUNetTrainer)
    sys.path.remove(folder)
rows = {}
for name in sorted(names):
    trainer = get_trainer_from_args(sys.argv[1], "2d", 0, name, "nnUNetPlans", device=torch.device("cpu"))
    trainer.initialize()
    net = trainer.network
    rows[name] = {
        "class": type(trainer).__name__, "init_kwargs": sorted(trainer.my_init_kwargs),
        "epochs": trainer.num_epochs, "iters": trainer.num_iterations_per_epoch,
        "val_iters": trainer.num_val_iterations_per_epoch,
        "network": type(net).__name__, "block": getattr(net, "block", None),
        "optimizer": type(trainer.optimizer).__name__, "lr": trainer.optimizer.param_groups[0]["lr"],
        "initial_lr": trainer.initial_lr, "n_outputs": len(net(torch.zeros(1, 1, *trainer.configuration_manager.patch_size))),
        "ds_scales": len(trainer._get_deep_supervision_scales()),
    }
print("ROWS=" + json.dumps(rows))
"""


@pytest.fixture(scope="module")
def planned(tmp_path_factory: pytest.TempPathFactory) -> NnUNetRunner:
    runner = NnUNetRunner(tmp_path_factory.mktemp("enum"))
    make_synthetic_2d(runner.raw, DS, n_train=6, n_test=1, size=32)
    runner.plan_and_preprocess(DS, ("2d",))
    return runner


def _expected_length(name: str) -> tuple[int, int, int]:
    if name.endswith("_tiny"):
        return 2, 4, 2
    if name.endswith("_budget"):
        e, i, v = (int(x) for x in BUDGET.split(","))
        return e, i, v
    m = re.search(r"_(\d+)epochs?$", name)
    return (int(m.group(1)) if m else 1000), 250, 50


def test_every_exported_trainer_constructs_and_initialises_as_nnunetv2_train_does(planned: NnUNetRunner) -> None:
    from nnunetv2_mednext.nnunet.trainers import TRAINERS

    env = planned.env({"NNUNETV2_MEDNEXT_BUDGET": BUDGET, "OMP_NUM_THREADS": "1"})
    env.pop("nnUNet_extTrainer", None)  # what a fresh shell has: the start-up hook registers our folder
    proc = subprocess.run([sys.executable, "-c", ENUMERATE, str(DS)], env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = json.loads(next(ln for ln in proc.stdout.splitlines() if ln.startswith("ROWS="))[5:])
    assert set(rows) == set(TRAINERS), "the ext-trainer folder and the package's trainer table disagree"
    assert len(rows) >= 53
    for name, row in rows.items():
        assert row["class"] == name
        assert row["init_kwargs"] == sorted(["plans", "configuration", "fold", "dataset_json", "device"]), name
        assert (row["epochs"], row["iters"], row["val_iters"]) == _expected_length(name), name
        assert row["n_outputs"] == row["ds_scales"], f"{name}: deep-supervision outputs != loss scales"
        if "RefUNet" in name:
            assert (row["network"], row["optimizer"], row["initial_lr"]) == ("PlainConvUNet", "SGD", 1e-2), name
            continue
        assert row["optimizer"] == "AdamW", name
        if "RecipeUNet" in name:
            assert row["network"] == "PlainConvUNet" and row["initial_lr"] == 3e-3, name
        elif "MedNeXtV1_" in name or "MedNeXtV2_" in name:
            assert (row["network"], row["block"], row["initial_lr"]) == ("MedNeXtUNet", "v2" if "V2_" in name else "v1", 1e-3), name
        else:
            assert (row["network"], row["block"], row["initial_lr"]) == ("MedNeXtUNet", "seed", 3e-3), name
        assert 0 < row["lr"] <= row["initial_lr"], name  # warm-up: at or below the peak


def test_every_registered_planner_plans_through_the_wrapper(planned: NnUNetRunner) -> None:
    import pydoc

    import torch

    from nnunetv2_mednext.nnunet.planners import PLANNERS
    from nnunetv2_mednext.nnunet.planners import mednext_planner as mp

    target_gb = 2.0
    cmd = [sys.executable, "-m", "nnunetv2_mednext", "plan_and_preprocess", "-d", str(DS), "-c", "2d", "--no_pp",
           "-npfp", "1", "-gpu_memory_target", str(target_gb), "-pl", *PLANNERS]
    proc = subprocess.run(cmd, env=planned.env({"OMP_NUM_THREADS": "1"}), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    folder = planned.preprocessed / planned.dataset_name(DS)
    for name, planner in PLANNERS.items():
        plans = json.loads((folder / f"{planner.default_plans_name}.json").read_text())
        cfg = plans["configurations"]["2d"]
        arch = cfg["architecture"]
        assert cfg["mednext_variant"] == planner.mednext_variant, name
        strides = np.array(arch["arch_kwargs"]["strides"])
        assert np.all(np.array(cfg["patch_size"]) % strides.prod(axis=0) == 0), name
        cls = pydoc.locate(arch["network_class_name"])
        net = cls(input_channels=1, num_classes=3, deep_supervision=True, **arch["arch_kwargs"])
        outs = net(torch.zeros(1, 1, *cfg["patch_size"]))
        # one head per decoder stage, plus the bottleneck head of Roy et al.'s topology (V1 planners)
        assert len(outs) == len(strides) - 1 + bool(arch["arch_kwargs"].get("ds_bottleneck")), name
        per_sample = float(net.compute_conv_feature_map_size(cfg["patch_size"])) * mp.BYTES_PER_PROXY_UNIT
        assert cfg["batch_size"] * per_sample <= target_gb * 1e9 or cfg["batch_size"] == 2, name


def test_unknown_planner_fails_before_any_work(planned: NnUNetRunner) -> None:
    cmd = [sys.executable, "-m", "nnunetv2_mednext", "plan_and_preprocess", "-d", str(DS), "-pl", "nnUNetPlannerMedNext"]
    proc = subprocess.run(cmd, env=planned.env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "did you mean nnUNetPlannerMedNeXt" in lines[0] and "fix: pass -pl with one of" in lines[0]
    assert not os.path.exists(planned.preprocessed / planned.dataset_name(DS) / "nnUNetMedNextPlans.json")
