"""timm models in the classification trainer (any name, from scratch, clear errors, old torchvision-ResNet
checkpoints still load) and ``--time-budget`` (epochs from a timed pilot, kept by ``--resume``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from nnunetv2_mednext.classification import checkpoint as ckpt_io
from nnunetv2_mednext.classification.config import TrainConfig
from nnunetv2_mednext.classification.console import Console
from nnunetv2_mednext.classification.models import build_classifier, check_input, model_source
from nnunetv2_mednext.classification.prepare import prepare
from nnunetv2_mednext.classification.synthetic import make_shapes_dataset
from nnunetv2_mednext.classification.trainer import _earlier_budget, train_folds
from nnunetv2_mednext.errors import MedNeXtUserError

TINY = {"dims": (8, 16, 24, 32), "depths": (1, 1, 1, 1), "drop_path_rate": 0.0}


def classify(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "nnunetv2_mednext", "classify", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=600)


def _one_line_error(proc: subprocess.CompletedProcess, *words: str) -> str:
    assert proc.returncode != 0, proc.stdout[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert "fix:" in lines[0]
    return lines[0]


def test_timm_models_take_channels_classes_and_kwargs():
    r18 = build_classifier("resnet18", 1, 3)
    assert type(r18).__module__.startswith("timm.") and r18.conv1.in_channels == 1 and r18.fc.out_features == 3
    atto = build_classifier("convnext_atto", 1, 4, drop_path_rate=0.2)
    assert atto.stem[0].in_channels == 1 and atto.head.fc.out_features == 4
    assert atto(torch.randn(2, 1, 64, 64)).shape == (2, 4)
    assert max(m.drop_prob for m in atto.modules() if type(m).__name__ == "DropPath") == pytest.approx(0.2)
    assert model_source("mednext_cls_t") == "mednext" and model_source("efficientnet_b0") == "timm"
    with pytest.raises(MedNeXtUserError, match="bad --model-kwargs for resnet18"):
        build_classifier("resnet18", 1, 3, no_such_argument=1)


def test_unknown_names_list_close_matches():
    with pytest.raises(MedNeXtUserError, match=r"unknown classifier 'resnet181' \(close matches: resnet18") as e:
        model_source("resnet181")
    assert "fix:" in str(e.value)
    with pytest.raises(MedNeXtUserError, match="close matches: mednext_cls_"):
        model_source("mednext_cls_x")


def test_mednext_pretrained_and_fixed_size_models_are_clear_errors():
    with pytest.raises(MedNeXtUserError, match="mednext_cls_t has no pretrained weights"):
        build_classifier("mednext_cls_t", 1, 3, pretrained=True)
    vit = build_classifier("vit_tiny_patch16_224", 1, 3)
    with pytest.raises(MedNeXtUserError, match=r"vit_tiny_patch16_224 cannot take 1x32x32 inputs .* img_size"):
        check_input(vit, "vit_tiny_patch16_224", 1, 32)
    assert vit.training  # the check leaves the mode as it was
    check_input(build_classifier("vit_tiny_patch16_224", 1, 3, img_size=32), "vit_tiny_patch16_224", 1, 32)


def test_old_torchvision_resnet_checkpoint_loads_and_predicts_identically(tmp_path: Path):
    import torchvision

    # what the torchvision-based builder made: resnet18(weights=None) with a 1-channel conv1
    old = torchvision.models.resnet18(weights=None, num_classes=3)
    old.conv1 = nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    for m in old.modules():
        if isinstance(m, nn.BatchNorm2d):  # non-trivial statistics, so a wrong mapping would show
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    meta = {"model": "resnet18", "model_kwargs": {}, "class_names": ["a", "b", "c"], "input_size": 32, "in_chans": 1,
            "color_mode": "grey", "normalization": {"mean": [0.5], "std": [0.2]}, "intensity": "", "fold": 0,
            "package_version": "0.1.0"}
    ckpt_io.save(tmp_path / "old.pt", old, meta)
    new = ckpt_io.build_from(ckpt_io.load(tmp_path / "old.pt"))
    x = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(new(x), old.eval()(x), atol=1e-5)


def test_pretrained_offline_is_one_line(tmp_path: Path):
    data = make_shapes_dataset(tmp_path / "data", n_per_class=6, size=32)
    proc = classify("train", data, "-o", tmp_path / "run", "--folds", "2", "--epochs", "1", "--input-size", "32",
                    "--model", "resnet18", "--model-kwargs", '{"pretrained": true}',
                    env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "TORCH_HOME": str(tmp_path / "th")})
    _one_line_error(proc, "cannot load the pretrained weights of resnet18", "from scratch")
    _one_line_error(classify("train", data, "-o", tmp_path / "r2", "--model", "convnext_ato"),
                    "unknown classifier 'convnext_ato'", "convnext_atto")
    _one_line_error(classify("train", data, "-o", tmp_path / "r3", "--time-budget", "0"), "--time-budget")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    data = make_shapes_dataset(tmp_path_factory.mktemp("budget") / "data", n_per_class=12, size=32, seed=2)
    return prepare(data, None, n_folds=2, console=Console(quiet=True))


def test_time_budget_fixes_epochs_from_the_pilot(prepared, tmp_path: Path, capsys):
    cfg = TrainConfig(model_kwargs=TINY, input_size=32, epochs=100, time_budget=2.0, batch_size=8, warmup_epochs=1)
    result = train_folds(prepared, tmp_path / "run", cfg, folds=[0, 1])
    budget = json.loads((tmp_path / "run" / "config.json").read_text())["time_budget"]
    # the arithmetic of the estimate, from the pilot's own measurements
    assert budget["steps_per_epoch"] == 2  # 18 training images, batch 8, the partial batch dropped
    assert budget["estimated_epoch_s"] == pytest.approx(2 * budget["step_s"] + budget["validation_s"], abs=2e-3)
    epochs = max(1, int(2.0 // budget["estimated_epoch_s"]))
    assert budget["epochs"] == pytest.approx(epochs, abs=1)  # the rounding of the stored seconds aside
    for fold in (0, 1):  # every fold trains the same number of epochs, --epochs 100 is replaced
        m = result["folds"][fold]
        assert m["epochs"] == budget["epochs"] and m["time_budget_s"] == 2.0
        history = json.loads((tmp_path / "run" / f"fold_{fold}" / "history.json").read_text())["history"]
        assert len(history) == budget["epochs"]
    assert f"-> {budget['epochs']} epochs" in capsys.readouterr().out


def test_time_budget_shorter_than_an_epoch_and_resume(prepared, tmp_path: Path):
    cfg = TrainConfig(model_kwargs=TINY, input_size=32, time_budget=1e-4, batch_size=8, warmup_epochs=0)
    con = Console(quiet=True)
    train_folds(prepared, tmp_path / "short", cfg, folds=[0], console=con)
    budget = json.loads((tmp_path / "short" / "config.json").read_text())["time_budget"]
    assert budget["epochs"] == 1 and budget["fits"] is False
    assert any("shorter than one epoch" in w for w in con.warnings)

    # an interrupted budget run resumes with the epochs it chose, without a second pilot
    cfg = TrainConfig(model_kwargs=TINY, input_size=32, time_budget=3.0, batch_size=8, warmup_epochs=0)

    def stop(fold: int, done: int, rec: dict) -> None:
        if done == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_folds(prepared, tmp_path / "cut", cfg, folds=[0], console=Console(quiet=True), callbacks=[stop])
    first = json.loads((tmp_path / "cut" / "config.json").read_text())["time_budget"]
    assert first["epochs"] >= 2, first  # else there is nothing to resume; 3 s is many epochs of this network
    res = train_folds(prepared, tmp_path / "cut", cfg, folds=[0], resume=True, console=Console(quiet=True))
    assert json.loads((tmp_path / "cut" / "config.json").read_text())["time_budget"] == first
    assert res["folds"][0]["epochs"] == first["epochs"]
    # the other fold, trained later into the same folder, gets the same epochs; other settings time again
    other = train_folds(prepared, tmp_path / "cut", cfg, folds=[1], console=Console(quiet=True))
    assert other["folds"][1]["epochs"] == first["epochs"]
    assert json.loads((tmp_path / "cut" / "config.json").read_text())["time_budget"] == first
    assert _earlier_budget(tmp_path / "cut", replace(cfg, epochs=7, quiet=True)) == first
    assert _earlier_budget(tmp_path / "cut", replace(cfg, batch_size=4)) is None
    assert _earlier_budget(tmp_path / "cut", replace(cfg, time_budget=6.0)) is None


def _fake_msld(root: Path) -> Path:
    """MSLD's shipped layout (``original_images/{Monkey_Pox,Others}``, case-prefixed names), synthetic pixels."""
    import numpy as np
    from PIL import Image

    from nnunetv2_mednext.classification.synthetic import shape_image

    rng = np.random.default_rng(4)
    for cls, kind, names in (("Monkey_Pox", "circle", [f"P{c}_{k}" for c in range(1, 11) for k in (1, 2)]),
                             ("Others", "stripes", [f"{c}{sfx}" for c in range(1, 11) for sfx in ("", "_1")])):
        (root / "original_images" / cls).mkdir(parents=True)
        for name in names:
            grey = shape_image(kind, 32, rng)
            Image.fromarray(np.stack([grey, grey // 2, grey], 2)).save(root / "original_images" / cls / f"{name}.jpg")
    return root


def test_classification_study_runs_resumes_and_reports(tmp_path: Path):
    """``benchmarks/classification_study.py``, CI-sized: a fake MSLD, split (b), 1 epoch at 32 px, two models x two
    seeds on two pinned processes; a second call finds every job done; the report's paired differences are the
    per-seed differences of the result files."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "classification_study.py"
    results, work = tmp_path / "results", tmp_path / "work"
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, str(script), "run", "--dataset", "msld", "--split", "b", "--epochs", "1", "--tiny",
            "--models", "mednext_cls_t", "resnet18", "--seeds", "0", "1", "--jobs", "2", "--work", str(work),
            "--results", str(results), "--data", str(_fake_msld(tmp_path / "msld"))]
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "4 jobs to run" in proc.stdout
    study = results / "msld_b_e1"
    kept = json.loads((results / "splits" / "msld_b.json").read_text())  # the split travels with the results,
    used = json.loads((work / "common" / "msld_b" / "splits.json").read_text())  # ids as <class>/<file>
    assert kept["folds"] == [{p: ["/".join(i.split("/")[-2:]) for i in ids] for p, ids in f.items()}
                             for f in used["folds"]]
    files = sorted(p.name for p in study.glob("*.json"))
    assert files == ["mednext_cls_t__s0__f0.json", "mednext_cls_t__s1__f0.json", "resnet18__s0__f0.json",
                     "resnet18__s1__f0.json"]
    res = {p.stem: json.loads(p.read_text()) for p in study.glob("*.json")}
    split = json.loads((work / "common" / "msld_b" / "splits.json").read_text())
    assert split["mode"] == "cv-test"
    for r in res.values():
        assert r["epochs"] == 1 and r["metrics"]["evaluated_on"] == "test"
        assert len(r["predictions"]) == len(split["folds"][0]["test"]) == r["metrics"]["n"]
        assert "--color-jitter" in r["command"] and "--seed" in r["command"]
    # case groups never cross parts: P3_1/P3_2 and 3/3_1 sit in one part of the split every job used
    part = {i.split("/")[-1]: k for k, ids in split["folds"][0].items() for i in ids}
    assert part["P3_1.jpg"] == part["P3_2.jpg"] and part["3.jpg"] == part["3_1.jpg"]
    again = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0 and "0 jobs to run" in again.stdout, again.stderr[-2000:]
    out = tmp_path / "report.md"
    rep = subprocess.run([sys.executable, str(script), "report", "--results", str(results), "--out", str(out)],
                         capture_output=True, text=True, env=env, timeout=600)
    assert rep.returncode == 0, rep.stderr[-2000:]
    md = out.read_text()
    assert "## MSLD: split (b) leak-safe" in md and "positive class Monkeypox" in md
    row = next(ln for ln in md.splitlines() if ln.startswith("| `resnet18`"))
    diffs = [100 * (res[f"resnet18__s{s}__f0"]["metrics"]["balanced_accuracy"]
                    - res[f"mednext_cls_t__s{s}__f0"]["metrics"]["balanced_accuracy"]) for s in (0, 1)]
    assert row.split("|")[-2].strip() == f"{sum(diffs) / 2:+.2f} ({diffs[0]:+.1f}, {diffs[1]:+.1f})"
    assert (tmp_path / "results_classification_msld_b_e1.png").stat().st_size > 1000


def test_classifier_speed_benchmark_tiny():
    """``benchmarks/bench_classifiers.py --tiny`` measures every network against ResNet-18 in one process."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_classifiers.py"
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(script), "--tiny"], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {ln.split("|")[1].strip(" `"): ln.split("|")[2:] for ln in proc.stdout.splitlines() if ln.startswith("| `")}
    assert list(rows) == ["mednext_cls_t", "mednext_cls_t (reference ops)", "resnet18", "convnext_atto"]
    assert rows["resnet18"][2].strip() == rows["resnet18"][4].strip() == "1.00 [1.00-1.00]"  # train, inference
    assert rows["mednext_cls_t"][0] == rows["mednext_cls_t (reference ops)"][0]  # the same network, other ops
    assert float(rows["resnet18"][0]) == 11.18  # timm resnet18 at 3 channels, 3 classes
