"""``benchmarks/equal_time.py``: the dry run names every command; a tiny real run on a fake MSD task works end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "equal_time.py"


def _bench(*args: object, timeout: int = 1800) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def test_dry_run_lists_pilot_seeds_predict_and_evaluate(tmp_path: Path) -> None:
    proc = _bench("acdc", "--dry-run", "--work", tmp_path / "w", "--seeds", 0, 1, "--variants", "mednext_s")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert any(ln.startswith("nnunetv2-mednext convert acdc") for ln in lines)
    trains = [ln for ln in lines if "nnUNetv2_train 802 2d 0" in ln]
    # 5 rows (4 default + 1 variant): one pilot each, then one run per row and seed
    assert len(trains) == 5 + 5 * 2
    assert sum("NNUNETV2_MEDNEXT_SEED=1" in ln for ln in trains) == 5
    assert any("-p nnUNetPlans_v_mednext_s" in ln and "nnUNetTrainerMedNeXtRecipeUNet_budget" in ln for ln in trains)
    assert sum(ln.startswith("nnUNetv2_predict") for ln in lines) == 10
    assert sum(ln.startswith("nnunetv2-mednext evaluate") for ln in lines) == 10


def _fake_msd(root: Path, n: int) -> Path:
    rng = np.random.default_rng(0)
    zz, yy, xx = np.mgrid[:16, :24, :24]
    for i in range(n):
        c = rng.integers(8, 16, 3)
        lab = ((zz - c[0] / 2) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= 16).astype(np.uint8)
        lab[(lab == 0) & (np.abs(yy - 4) < 2) & (np.abs(xx - 4) < 2)] = 2
        img = (100 * lab + rng.normal(0, 10, lab.shape)).astype(np.float32)
        for sub, arr in (("imagesTr", img), ("labelsTr", lab)):
            (root / sub).mkdir(parents=True, exist_ok=True)
            sitk.WriteImage(sitk.GetImageFromArray(arr), str(root / sub / f"hippocampus_{i:03d}.nii.gz"), True)
    return root


def _tools(report: str) -> list[str]:
    """The program of every command line in a report (after its ``VAR=value`` environment assignments)."""
    out = []
    for ln in report.splitlines():
        words = [w for w in ln.split() if "=" not in w]
        if words and words[0].startswith(("nnUNetv2_", "nnunetv2-mednext")):
            out.append(words[0])
    return out


@pytest.mark.slow
def test_tiny_real_run_writes_a_report_with_equal_time_budgets(tmp_path: Path) -> None:
    src = _fake_msd(tmp_path / "Task04_Hippocampus", 9)
    out = tmp_path / "report.md"
    proc = _bench("hippocampus", "--source", src, "--work", tmp_path / "w", "--minutes", 0.1, "--seeds", 0, 1, "--jobs", 2,
                  "--rows", "unet_recipe", "mednext", "--iters", 3, "--val-iters", 1, "--test-cases", 3, "--out", out)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = out.read_text()
    assert "U-Net + MedNeXt recipe" in text and "MedNeXt (default)" in text and "± " in text
    assert "| MedNeXt (default) | U-Net + MedNeXt recipe |" in text  # paired per-case comparison
    assert str(tmp_path) not in text and "$WORK" in text  # no machine paths in the report
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads((tmp_path / "w" / "equal_time.json").read_text())
    for row in data.values():
        assert sorted(map(int, row["seeds"])) == [0, 1]
        for s in row["seeds"].values():
            assert len(s["per_case"]) == 3 and 0.0 <= s["mean_dice"] <= 1.0
            assert s["epochs"] == len(s["curve"]["seconds"]) == len(s["curve"]["ema_dice"])
    # two seeds of one row differ (they are seeded differently), the same seed repeats nothing else
    a = data["mednext"]["seeds"]
    assert a["0"]["per_case"] != a["1"]["per_case"]
    # a second call reuses every finished run (no training) and its report still lists the commands behind them
    again = _bench("hippocampus", "--source", src, "--work", tmp_path / "w", "--minutes", 0.1, "--seeds", 0, 1,
                   "--jobs", 2, "--rows", "unet_recipe", "mednext", "--iters", 3, "--val-iters", 1, "--test-cases", 3,
                   "--out", tmp_path / "again.md")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "start train" not in again.stdout
    commands, reused = _tools(text), _tools((tmp_path / "again.md").read_text())
    assert commands.count("nnUNetv2_train") == 2 + 4 and commands.count("nnUNetv2_predict") == 4
    assert sorted(reused) == sorted(commands)


def test_dry_run_resenc_row_is_planned_by_nnunets_planner_and_skips_the_final_validation(tmp_path: Path) -> None:
    proc = _bench("hippocampus", "--dry-run", "--work", tmp_path / "w", "--seeds", 0, "--rows", "unet_recipe",
                  "resenc_m")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert any(ln.startswith("nnUNetv2_plan_and_preprocess -d 4") and "-pl nnUNetPlannerResEncM" in ln for ln in lines)
    trains = [ln for ln in lines if "nnUNetv2_train 4 3d_fullres 0" in ln]
    assert len(trains) == 2 + 2  # a pilot and one seed per row
    resenc = [ln for ln in trains if "-p nnUNetResEncUNetMPlans" in ln]
    assert len(resenc) == 2 and all("-tr nnUNetTrainerMedNeXtRefUNet_budget" in ln for ln in resenc)
    assert all("NNUNETV2_MEDNEXT_FINAL_VALIDATION=0" in ln for ln in trains)
    assert any(ln.startswith("nnUNetv2_predict") and "-p nnUNetResEncUNetMPlans" in ln for ln in lines)


def test_fixed_epochs_skip_the_pilot_and_train_every_row_alike(tmp_path: Path) -> None:
    proc = _bench("hippocampus", "--dry-run", "--work", tmp_path / "w", "--seeds", 0, 1, "--rows", "mednext",
                  "--options", "head_init_fan_out", "--fixed-epochs", 7)
    assert proc.returncode == 0, proc.stderr
    trains = [ln for ln in proc.stdout.splitlines() if "nnUNetv2_train 4 3d_fullres 0" in ln]
    assert len(trains) == 2 * 2  # two rows, two seeds, no pilot
    assert all("NNUNETV2_MEDNEXT_BUDGET=7,25,2" in ln for ln in trains), trains
    assert sum("-p nnUNetPlans_o_head_init_fan_out" in ln for ln in trains) == 2


def test_dry_run_kvasir_converts_image_mask_folders_with_a_drawn_test_set(tmp_path: Path) -> None:
    """Kvasir-SEG: ``convert images-masks`` with 100 frames drawn with seed 0 held out, 2d plans, every row of
    issue 28 plus nnU-Net's own trainer, predictions on imagesTs scored against labelsTs."""
    proc = _bench("kvasir", "--dry-run", "--work", tmp_path / "w", "--seeds", 0, "--rows", "unet", "unet_recipe",
                  "mednext", "v1_s_k3", "v2_s", "resenc_m")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    convert = next(ln for ln in lines if " convert images-masks " in f" {ln} ")
    assert "--test-cases 100 --seed 0" in convert and "--id 501" in convert and "--write-splits" in convert
    assert any(ln.startswith("nnUNetv2_plan_and_preprocess -d 501 -c 2d") for ln in lines)
    trains = [ln for ln in lines if "nnUNetv2_train 501 2d 0" in ln]
    assert len(trains) == 2 * 6  # a pilot and one seed per row
    predicts = [ln for ln in lines if ln.startswith("nnUNetv2_predict")]
    assert len(predicts) == 6 and all("Dataset501_Kvasir/imagesTs" in ln for ln in predicts)
    proc = _bench("kvasir", "--dry-run", "--work", tmp_path / "w2", "--seeds", 0, "--rows", "mednext", "unet_recipe",
                  "--backend", "onnxruntime")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    exports = [ln for ln in lines if ln.startswith("nnunetv2-mednext export-onnx -m")]
    onnx = [ln for ln in lines if ln.startswith("nnunetv2-mednext predict ") and "--backend onnxruntime" in ln]
    assert len(exports) == len(onnx) == 2 and not any(ln.startswith("nnUNetv2_predict") for ln in lines)
    assert lines.index(exports[0]) < lines.index(onnx[0])  # the export comes before the prediction
