"""Stock ``nnUNetv2_*`` commands with our trainers and planner on bad input: one line naming the file and the fix.

Also checkpoint compatibility across trainer names (predict, ``--c``) and resume after SIGKILL. One tiny 2D
dataset is planned and one ``_tiny`` model trained per session; every other case fails in seconds.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nnunetv2_mednext.nnunet.pipeline import NnUNetRunner, nnunet_command
from nnunetv2_mednext.nnunet.synthetic import make_synthetic_2d

pytestmark = pytest.mark.slow

DS = 994
TRAINER = "nnUNetTrainerMedNeXt_tiny"


def one_line(proc: subprocess.CompletedProcess, *words: str) -> str:
    """Refused with exit != 0, no traceback anywhere, and the last stderr line names the problem and the fix."""
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert "Traceback" not in proc.stderr + proc.stdout, (proc.stdout + proc.stderr)[-4000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("nnunetv2-mednext"), last
    for w in words:
        assert w in last, (w, last)
    assert "fix" in last, last
    return last


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> NnUNetRunner:
    runner = NnUNetRunner(tmp_path_factory.mktemp("bad_nnunet"))
    make_synthetic_2d(runner.raw, DS, n_train=6, n_test=2, size=32)
    runner.plan_and_preprocess(DS, ("2d",))
    runner.train(DS, "2d", 0, TRAINER)
    return runner


def _stock(runner: NnUNetRunner, name: str, *args: object, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([nnunet_command(name), *map(str, args)], capture_output=True, text=True,
                          env=runner.env({"nnUNet_n_proc_DA": "0", **(env or {})}), timeout=600, cwd=runner.workdir)


def _train(runner: NnUNetRunner, *args: object, env: dict | None = None) -> subprocess.CompletedProcess:
    return _stock(runner, "nnUNetv2_train", *args, "-device", "cpu", env=env)


def _fold(runner: NnUNetRunner, trainer: str, fold: int = 0) -> Path:
    return runner.results / runner.dataset_name(DS) / f"{trainer}__nnUNetPlans__2d" / f"fold_{fold}"


# ---------------------------------------------------------------------------------------------------- raw data
def _bad_dataset(runner: NnUNetRunner, ds: int, kind: str) -> Path:
    folder = make_synthetic_2d(runner.raw, ds, n_train=6 if kind != "few" else 3, n_test=1, size=32, name=f"Bad{kind}")
    if kind == "empty":
        for p in (folder / "labelsTr").glob("*.png"):
            Image.fromarray(np.zeros((32, 32), np.uint8)).save(p)
    elif kind == "nosuffix":
        (folder / "imagesTr" / "synth_001_0000.png").rename(folder / "imagesTr" / "synth_001.png")
    return folder


@pytest.mark.parametrize(("kind", "words"), [
    ("empty", ["every label map in", "is empty"]),
    ("nosuffix", ["synth_001.png has no channel suffix", "synth_001_0000.png"]),
])
def test_plan_and_preprocess_on_broken_raw_data(trained: NnUNetRunner, kind: str, words: list[str]) -> None:
    ds = {"empty": 981, "nosuffix": 982}[kind]
    _bad_dataset(trained, ds, kind)
    # the stock command: nnU-Net crashes deep inside; the start-up hook names the file and the fix instead
    one_line(_stock(trained, "nnUNetv2_plan_and_preprocess", "-d", ds, "-c", "2d", "-npfp", 1, "-np", 1), *words)
    # our wrapper checks before any work
    wrapper = subprocess.run([sys.executable, "-m", "nnunetv2_mednext", "plan_and_preprocess", "-d", str(ds), "-c", "2d",
                              "--verify_dataset_integrity"], capture_output=True, text=True, env=trained.env())
    assert wrapper.returncode == 2 and "Traceback" not in wrapper.stderr and words[0] in wrapper.stderr


def test_wrapper_integrity_check_finds_truncated_nifti(trained: NnUNetRunner) -> None:
    from nnunetv2_mednext.nnunet.synthetic import make_synthetic_3d

    folder = make_synthetic_3d(trained.raw, 983, n_train=3, n_test=0, shape=(8, 16, 16), name="Truncated")
    victim = folder / "imagesTr" / "synth_001_0000.nii.gz"
    victim.write_bytes(victim.read_bytes()[: int(victim.stat().st_size * 0.8)])
    proc = subprocess.run([sys.executable, "-m", "nnunetv2_mednext", "plan_and_preprocess", "-d", "983", "-c",
                           "3d_fullres", "--verify_dataset_integrity"], capture_output=True, text=True, env=trained.env())
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "synth_001_0000.nii.gz is truncated" in proc.stderr and "fix:" in proc.stderr


def test_fewer_than_five_training_cases(trained: NnUNetRunner) -> None:
    _bad_dataset(trained, 984, "few")
    trained.plan_and_preprocess(984, ("2d",))
    one_line(_train(trained, 984, "2d", 0, "-tr", TRAINER), "only 3 training cases", "fold `all`")


# ---------------------------------------------------------------------------------------------------- training
def test_misspelled_trainer_and_unset_folders(trained: NnUNetRunner) -> None:
    one_line(_train(trained, DS, "2d", 0, "-tr", "nnUNetTrainerMedNext_tiny"), "did you mean nnUNetTrainerMedNeXt_tiny")
    folders = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")
    env = {k: v for k, v in trained.env({"nnUNet_n_proc_DA": "0"}).items() if k not in folders}
    proc = subprocess.run([nnunet_command("nnUNetv2_train"), str(DS), "2d", "0", "-tr", TRAINER, "-device", "cpu"],
                          capture_output=True, text=True, env=env, timeout=300)
    one_line(proc, "nnUNet_raw, nnUNet_preprocessed, nnUNet_results are not set")


def test_invalid_budget_leaves_no_log_behind(trained: NnUNetRunner) -> None:
    trainer = "nnUNetTrainerMedNeXt_budget"
    one_line(_train(trained, DS, "2d", 1, "-tr", trainer, env={"NNUNETV2_MEDNEXT_BUDGET": "lots"}), "'lots'")
    assert not _fold(trained, trainer, 1).exists() or not any(_fold(trained, trainer, 1).iterdir())


@pytest.mark.parametrize("kind", ["text", "classification", "other_variant"])
def test_bad_pretrained_weights(trained: NnUNetRunner, tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"{kind}.pth"
    if kind == "text":
        path.write_text("these are my weights\n")
        words = ["cannot be read as a PyTorch checkpoint"]
    elif kind == "classification":
        from nnunetv2_mednext.classification import checkpoint as ckpt_io
        from nnunetv2_mednext.networks import create_model

        ckpt_io.save(path, create_model("mednext_cls_t", in_chans=1, num_classes=2), {"model": "mednext_cls_t"})
        words = ["is not an nnU-Net training checkpoint", "classification checkpoint"]
    else:
        from nnunetv2_mednext.networks import create_model

        wrong = create_model("mednext_s", input_channels=1, num_classes=3, spatial_dims=2)
        torch.save({"network_weights": wrong.state_dict()}, path)
        words = ["do not fit this network", "in the checkpoint and", "in the network"]
    line = one_line(_train(trained, DS, "2d", 2, "-tr", TRAINER, "-pretrained_weights", path), *words)
    assert str(path.name) in line
    if kind == "other_variant":  # both shapes are named
        assert line.count("[") >= 2


def test_read_only_results_folder(trained: NnUNetRunner, confined) -> None:
    cmd = [nnunet_command("nnUNetv2_train"), DS, "2d", 3, "-tr", TRAINER, "-device", "cpu"]
    proc = confined(cmd, trained.results, mode="ro", env=trained.env({"nnUNet_n_proc_DA": "0"}))
    one_line(proc, "cannot write", "Read-only file system")


# ---------------------------------------------------------------------------------------------------- prediction
def explained(proc: subprocess.CompletedProcess, nnunet_error: str, *words: str) -> str:
    """Failed, nnU-Net's own exception printed by the hook, then one line naming the problem and the fix; the main
    process's traceback replaced (nnU-Net's worker processes print their own, which nobody hides)."""
    assert proc.returncode != 0, proc.stdout[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert lines[-2].startswith(f"nnunetv2-mednext: nnU-Net failed with {nnunet_error}"), lines[-2:]
    assert "Traceback (most recent call last):\n  File \"" + nnunet_command("nnUNetv2_predict") not in proc.stderr
    assert lines[-1].startswith("nnunetv2-mednext: error:") and "fix" in lines[-1], lines[-1]
    for w in words:
        assert w in lines[-1], (w, lines[-1])
    return lines[-1]


@pytest.mark.parametrize("kind", ["extra_channel", "no_suffix"])
def test_predict_input_naming(trained: NnUNetRunner, tmp_path: Path, kind: str) -> None:
    """Stock nnU-Net fails on these inputs too (a worker dies on the 2-channel case; a file without suffix becomes a
    case with no files); the hook adds which file and why, below nnU-Net's own error."""
    src = trained.raw / trained.dataset_name(DS) / "imagesTs"
    inp = tmp_path / "in"
    inp.mkdir()
    for f in src.glob("*.png"):
        target = f.name.replace("_0000", "") if kind == "no_suffix" else f.name
        shutil.copy(f, inp / target)
    if kind == "extra_channel":
        first = sorted(inp.glob("*_0000.png"))[0]
        shutil.copy(first, first.with_name(first.name.replace("_0000", "_0001")))
        error = "RuntimeError: Background workers died"
        words = [first.name.replace("_0000.png", ""), "reads as 2 channel(s) with nnU-Net's NaturalImage2DIO",
                 "the model (gray) has 1", "(_0000 only)"]
    else:
        error = "IndexError: list index out of range"
        words = ["has no channel suffix", "_0000.png"]
    proc = _stock(trained, "nnUNetv2_predict", "-i", inp, "-o", tmp_path / "out", "-d", DS, "-c", "2d", "-tr", TRAINER,
                  "-f", 0, "-device", "cpu", "-npp", 1, "-nps", 1)
    explained(proc, error, *words)


# ---------------------------------------------------------------------------------------------------- checkpoints
def test_checkpoint_loads_under_another_trainer_name_for_predict_and_resume(trained: NnUNetRunner, tmp_path: Path) -> None:
    """A run copied to another run-length name of the same family (how users extend a training) predicts and
    continues with ``--c`` from where it stopped."""
    src = _fold(trained, TRAINER).parent
    other = "nnUNetTrainerMedNeXt_budget"
    dst = src.parent / f"{other}__nnUNetPlans__2d"
    shutil.copytree(src, dst)
    out = tmp_path / "pred"
    trained.predict(DS, "2d", other, trained.raw / trained.dataset_name(DS) / "imagesTs", out)
    assert len(list(out.glob("*.png"))) == 2
    (dst / "fold_0" / "checkpoint_final.pth").unlink()  # as if the 2-epoch run had stopped after its last epoch
    trained.train(DS, "2d", 0, other, extra_args=["--c"], extra_env={"NNUNETV2_MEDNEXT_BUDGET": "3,4,1"})
    final = torch.load(dst / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert final["current_epoch"] == 3 and len(final["logging"]["train_losses"]) == 3
    first = torch.load(src / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert final["logging"]["train_losses"][:2] == first["logging"]["train_losses"]  # epochs 0-1 not redone


def test_resume_after_sigkill(trained: NnUNetRunner, tmp_path: Path) -> None:
    """SIGKILL after epoch 1 (no clean-up at all), then ``--c``: only the epoch in progress is lost."""
    ext = tmp_path / "ext"
    ext.mkdir()
    (ext / "killed_trainer.py").write_text(
        "import os, signal\n"
        "from nnunetv2_mednext.nnunet.trainers.variants import nnUNetTrainerMedNeXt_budget\n\n\n"
        "class nnUNetTrainerMedNeXtKillTest(nnUNetTrainerMedNeXt_budget):\n"
        "    def on_epoch_end(self):\n"
        "        super().on_epoch_end()\n"
        "        if os.environ.get('KILL_AFTER_EPOCH') == str(self.current_epoch):\n"
        "            os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    trainer = "nnUNetTrainerMedNeXtKillTest"
    env = {"NNUNETV2_MEDNEXT_BUDGET": "3,3,1", "nnUNet_extTrainer": str(ext)}
    killed = _train(trained, DS, "2d", 4, "-tr", trainer, env={**env, "KILL_AFTER_EPOCH": "1"})
    assert killed.returncode == -9, killed.stderr[-2000:]
    fold = _fold(trained, trainer, 4)
    latest = torch.load(fold / "checkpoint_latest.pth", map_location="cpu", weights_only=False)
    assert latest["current_epoch"] == 1 and not (fold / "checkpoint_final.pth").exists()
    resumed = _train(trained, DS, "2d", 4, "-tr", trainer, "--c", env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    final = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert final["current_epoch"] == 3 and len(final["logging"]["train_losses"]) == 3
    assert final["logging"]["epoch_start_timestamps"][0] == latest["logging"]["epoch_start_timestamps"][0]


def test_every_family_trains_and_predicts_end_to_end(trained: NnUNetRunner, tmp_path: Path) -> None:
    """One short training + stock prediction per network family (the seed family is the session's model)."""
    images = trained.raw / trained.dataset_name(DS) / "imagesTs"
    for trainer in ("nnUNetTrainerMedNeXtV1_S_k3_tiny", "nnUNetTrainerMedNeXtV2_S_tiny", "nnUNetTrainerMedNeXtRecipeUNet_tiny"):
        trained.train(DS, "2d", 0, trainer)
        out = tmp_path / trainer
        trained.predict(DS, "2d", trainer, images, out)
        preds = sorted(out.glob("*.png"))
        assert len(preds) == 2 and all(np.asarray(Image.open(p)).shape == (32, 32) for p in preds)
        assert json.loads((out / "dataset.json").read_text())["labels"]["square"] == 2
    _fine_tune_v2_in_2d(trained)
    assert os.environ.get("OMP_NUM_THREADS") == "1"


def _fine_tune_v2_in_2d(trained: NnUNetRunner) -> None:
    """2D v2 through ``-pretrained_weights`` (fold 0's weights start fold 1): every key but the heads is loaded,
    the GRN parameters included (the 3D fine-tune onto other labels is in test_mednext_v2)."""
    from test_conformance import assert_all_but_heads_loaded

    trainer = "nnUNetTrainerMedNeXtV2_S_tiny"
    weights = _fold(trained, trainer) / "checkpoint_final.pth"
    trained.train(DS, "2d", 1, trainer, extra_args=["-pretrained_weights", str(weights)],
                  extra_env={"NNUNETV2_MEDNEXT_FINAL_VALIDATION": "0"})
    loaded, _ = assert_all_but_heads_loaded((trained.logs / f"train_{trainer}_2d_1.log").read_text(), weights)
    assert any(k.endswith(".grn.gamma") for k in loaded)
    assert (_fold(trained, trainer, 1) / "checkpoint_final.pth").exists()
