"""Training: a synthetic 3-class set is learned, resume repeats an uninterrupted run, predict reproduces the
evaluation, and 2-process torchrun (gloo, CPU) trains with the same outputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from nnunetv2_mednext.classification import checkpoint as ckpt_io
from nnunetv2_mednext.classification.config import TrainConfig
from nnunetv2_mednext.classification.console import Console
from nnunetv2_mednext.classification.prepare import prepare
from nnunetv2_mednext.classification.synthetic import make_shapes_dataset
from nnunetv2_mednext.classification.trainer import train_folds

TINY = {"dims": [8, 16, 24, 32], "depths": [1, 1, 1, 1], "drop_path_rate": 0.0}
TINY_JSON = json.dumps(TINY)


def classify(*args, cwd: Path | None = None, launcher: list[str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    cmd = (launcher or [sys.executable, "-m"]) + ["nnunetv2_mednext", "classify", *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=cwd)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def small_data(tmp_path_factory) -> Path:
    return make_shapes_dataset(tmp_path_factory.mktemp("cls") / "data", n_per_class=12, size=32, seed=1)


@pytest.fixture(scope="module")
def cli_run(small_data: Path) -> Path:
    out = small_data.parent / "run"
    classify("train", small_data, "-o", out, "--folds", "2", "--epochs", "2", "--input-size", "32",
             "--batch-size", "8", "--warmup-epochs", "1", "--model-kwargs", TINY_JSON, "--quiet")
    return out


def test_synthetic_three_classes_are_learned(tmp_path: Path):
    data = make_shapes_dataset(tmp_path / "data", n_per_class=60, size=32, seed=0)
    prep = prepare(data, tmp_path / "run", n_folds=3, console=Console(quiet=True))
    # validation only at the end (val_every = epochs): per-epoch validation doubled this test's time
    cfg = TrainConfig(model="mednext_cls_t", model_kwargs={"dims": (16, 32, 64, 128), "depths": (1, 1, 1, 1),
                                                           "drop_path_rate": 0.0},
                      input_size=32, epochs=40, batch_size=16, lr=3e-3, warmup_epochs=1, val_every=40, quiet=True)
    result = train_folds(prep, tmp_path / "run", cfg, folds=[0])
    m = result["folds"][0]
    assert m["n"] == 60 and m["evaluated_on"] == "val"
    # chance is 1/3; stripes are never confused, circles and squares at 32 px sometimes (0.85 on this split)
    assert m["accuracy"] > 0.8, m["confusion_matrix"]
    assert m["per_class"]["stripes"]["recall"] > 0.9, m["confusion_matrix"]
    assert m["macro"]["auc"] > 0.9, m["macro"]


def test_resume_after_interruption_repeats_the_uninterrupted_run(small_data: Path, tmp_path: Path, capsys):
    prep = prepare(small_data, None, n_folds=2, console=Console(quiet=True))
    tiny = {**TINY, "dims": tuple(TINY["dims"]), "depths": tuple(TINY["depths"])}  # tuples survive --resume checks
    cfg = TrainConfig(model_kwargs=tiny, input_size=32, epochs=3, batch_size=8, warmup_epochs=1, lr=2e-3)
    full = train_folds(prep, tmp_path / "full", cfg, folds=[0], console=Console(quiet=True))

    def interrupt(fold: int, epochs_done: int, record: dict) -> None:
        if epochs_done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_folds(prep, tmp_path / "cut", cfg, folds=[0], console=Console(quiet=True), callbacks=[interrupt])
    fold = tmp_path / "cut" / "fold_0"
    assert not (fold / "metrics.json").exists() and not (fold / "checkpoint_final.pt").exists()
    assert ckpt_io.load(fold / "checkpoint_latest.pt")["epoch"] == 2
    from nnunetv2_mednext.errors import MedNeXtUserError

    with pytest.raises(MedNeXtUserError, match="--resume"):
        train_folds(prep, tmp_path / "cut", cfg, folds=[0], console=Console(quiet=True))
    seen = []
    capsys.readouterr()
    resumed = train_folds(prep, tmp_path / "cut", cfg, folds=[0], resume=True,
                          callbacks=[lambda f, e, r: seen.append(e)])
    out = capsys.readouterr().out
    assert "resuming from checkpoint_latest.pt after epoch 2/3" in out
    assert seen == [3]  # only the missing epoch ran
    assert not (fold / "checkpoint_latest.pt").exists()
    history = json.loads((fold / "history.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    a = ckpt_io.load(tmp_path / "full" / "fold_0" / "checkpoint_final.pt")["state_dict"]
    b = ckpt_io.load(fold / "checkpoint_final.pt")["state_dict"]
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-6), k
    m_full, m_res = full["folds"][0], resumed["folds"][0]
    assert m_res["confusion_matrix"] == m_full["confusion_matrix"]
    assert m_res["macro"]["auc"] == pytest.approx(m_full["macro"]["auc"])
    # resuming a finished run only re-reads it
    again = train_folds(prep, tmp_path / "cut", cfg, folds=[0], resume=True, console=Console(quiet=True))
    assert again["folds"][0]["accuracy"] == m_res["accuracy"]


def test_cli_run_outputs_and_self_describing_checkpoint(cli_run: Path):
    for f in ("config.json", "fingerprint.json", "splits.json", "summary.json"):
        assert (cli_run / f).is_file(), f
    for k in (0, 1):
        for f in ("checkpoint_final.pt", "checkpoint_best.pt", "metrics.json", "predictions.csv", "eval_set.csv",
                  "confusion_matrix.png", "training_curve.png", "history.json"):
            assert (cli_run / f"fold_{k}" / f).is_file(), (k, f)
    meta = ckpt_io.load(cli_run / "fold_0" / "checkpoint_final.pt")["meta"]
    assert meta["class_names"] == ["circle", "square", "stripes"]
    assert meta["input_size"] == 32 and meta["in_chans"] == 1 and meta["model"] == "mednext_cls_t"
    assert len(meta["normalization"]["mean"]) == 1 and meta["model_kwargs"]["dims"] == TINY["dims"]
    summary = json.loads((cli_run / "summary.json").read_text())
    agg = summary["aggregate"]
    assert agg["n_folds"] == 2
    for key in ("accuracy", "balanced_accuracy", "macro.precision", "macro.recall", "macro.specificity",
                "macro.f1", "macro.auc", "per_class.circle.f1"):
        assert key in agg["mean"] and key in agg["std"]
    assert summary["pooled"]["n"] == 36


def test_predict_reproduces_the_evaluation(cli_run: Path, tmp_path: Path):
    fold = cli_run / "fold_1"
    preds = tmp_path / "preds.csv"
    classify("predict", fold / "eval_set.csv", "-m", fold / "checkpoint_final.pt", "-o", preds, "-q")
    classify("evaluate", preds, "-o", tmp_path / "eval", "-q")
    got = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    want = json.loads((fold / "metrics.json").read_text())
    assert got["confusion_matrix"] == want["confusion_matrix"]
    for key in ("accuracy", "balanced_accuracy"):
        assert got[key] == pytest.approx(want[key], abs=1e-9)
    for key in ("f1", "auc", "specificity", "precision", "recall"):
        assert got["macro"][key] == pytest.approx(want["macro"][key], abs=1e-6)
    p1 = np.loadtxt(preds, delimiter=",", skiprows=1, usecols=(3, 4, 5))
    p2 = np.loadtxt(fold / "predictions.csv", delimiter=",", skiprows=1, usecols=(3, 4, 5))
    assert np.allclose(p1, p2, atol=1e-6)
    # a folder in class-per-folder layout gets labels; the run folder ensembles both folds
    classify("predict", cli_run.parent / "data", "-m", cli_run, "-o", tmp_path / "all.csv", "-q")
    rows = (tmp_path / "all.csv").read_text().splitlines()
    assert rows[0] == "path,label,prediction,prob_circle,prob_square,prob_stripes" and len(rows) == 37
    proc = classify("evaluate", cli_run)
    assert "accuracy" in proc.stdout and (cli_run / "evaluation.json").is_file()


def test_torchrun_two_processes_on_cpu(small_data: Path, cli_run: Path, tmp_path: Path):
    out = tmp_path / "ddp"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m"]
    classify("train", small_data, "-o", out, "--folds", "2", "--fold", "0", "--epochs", "1", "--input-size", "32",
             "--batch-size", "4", "--warmup-epochs", "0", "--model-kwargs", TINY_JSON, "--quiet", launcher=launcher)
    assert json.loads((out / "config.json").read_text())["world_size"] == 2
    got = json.loads((out / "fold_0" / "metrics.json").read_text())
    ref = json.loads((cli_run / "fold_0" / "metrics.json").read_text())
    assert set(got) == set(ref) and set(got["macro"]) == set(ref["macro"])
    assert got["n"] == ref["n"] == 18  # every validation image once, despite the 2 shards
    assert (out / "fold_0" / "checkpoint_final.pt").is_file() and (out / "summary.json").is_file()
    # the saved checkpoint (rank 0) gives the probabilities that the 2 processes computed together
    classify("predict", out / "fold_0" / "eval_set.csv", "-m", out / "fold_0" / "checkpoint_final.pt",
             "-o", tmp_path / "p.csv", "-q")
    p1 = np.loadtxt(tmp_path / "p.csv", delimiter=",", skiprows=1, usecols=(3, 4, 5))
    p2 = np.loadtxt(out / "fold_0" / "predictions.csv", delimiter=",", skiprows=1, usecols=(3, 4, 5))
    assert np.allclose(p1, p2, atol=1e-6)


def test_one_command_training_from_a_published_layout(tmp_path: Path):
    from test_classification_converters import _msld_folds

    src = _msld_folds(tmp_path)
    out = tmp_path / "run"
    proc = classify("train", src, "--layout", "msld-folds", "-o", out, "--fold", "0", "--epochs", "1",
                    "--input-size", "32", "--batch-size", "8", "--model-kwargs", TINY_JSON)
    assert "published fold(s)" in proc.stdout and (out / "data" / "dataset.csv").is_file()
    m = json.loads((out / "fold_0" / "metrics.json").read_text())
    assert m["evaluated_on"] == "test" and m["n"] == 2 and m["n_train"] == 12 and m["n_val"] == 4
    assert m["checkpoint"] == "checkpoint_best.pt"  # chosen on Val, reported on Test
