"""Real RGB photographs: Kvasir-SEG (``$NNUNETV2_MEDNEXT_SHARED/data/kvasir_seg``) through the stock commands.

A CI-sized subset (the 12 smallest frames, native sizes): ``convert images-masks`` -> ``nnUNetv2_plan_and_preprocess``
-> ``nnUNetv2_train`` with the package's trainer -> ``nnUNetv2_predict`` and ``nnunetv2-mednext predict --backend
onnxruntime`` on the held-out frames -> ``nnUNetv2_evaluate_folder``. Skipped, saying why, when the data is absent.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import requires_shared_data, shared_data
from PIL import Image

from nnunetv2_mednext.nnunet.pipeline import NnUNetRunner

KVASIR = shared_data("kvasir_seg")
pytestmark = [pytest.mark.shared_data, requires_shared_data("kvasir_seg")]
TRAINER = "nnUNetTrainerMedNeXt_budget"


def _subset(dst: Path, n: int = 12) -> list[str]:
    """Symlinks to the ``n`` frames with the fewest pixels and their masks, as ``dst/images`` + ``dst/masks``."""
    sizes = sorted((Image.open(p).size[0] * Image.open(p).size[1], p.stem) for p in (KVASIR / "images").glob("*.jpg"))
    stems = sorted(s for _, s in sizes[:n])
    for sub, ext in (("images", ".jpg"), ("masks", ".png")):
        (dst / sub).mkdir(parents=True)
        for s in stems:
            (dst / sub / f"{s}{ext}").symlink_to(KVASIR / sub / f"{s}{ext}")
    return stems


def test_kvasir_subset_through_the_stock_commands(tmp_path: Path) -> None:
    stems = _subset(tmp_path / "src")
    runner = NnUNetRunner(tmp_path / "work")
    env = runner.env({"PYTHONWARNINGS": "ignore"})
    proc = subprocess.run([sys.executable, "-m", "nnunetv2_mednext", "convert", "images-masks", str(tmp_path / "src"),
                           "--out", str(runner.raw), "--id", "501", "--name", "KvasirSub", "--labels", "polyp",
                           "--test-cases", "2", "--seed", "0"], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    raw = runner.raw / "Dataset501_KvasirSub"
    meta = json.loads((raw / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "R", "1": "G", "2": "B"} and meta["numTraining"] == 10
    test = meta["conversion"]["test"]
    assert len(test) == 2 and set(test) <= set(stems)
    for s in stems:  # masks as given: 0/255 -> 0/1, the image's own size
        tag = "Ts" if s in test else "Tr"
        lab = np.asarray(Image.open(raw / f"labels{tag}" / f"{s}.png"))
        src = np.asarray(Image.open(KVASIR / "masks" / f"{s}.png"))
        np.testing.assert_array_equal(lab, (src == 255).astype(np.uint8))
    runner.plan_and_preprocess(501, ("2d",))  # stock planner; --verify_dataset_integrity: nnU-Net's own check
    runner.train(501, "2d", 0, TRAINER, extra_env={"NNUNETV2_MEDNEXT_BUDGET": "1,4,1", "NNUNETV2_MEDNEXT_SEED": "0"})
    stock = tmp_path / "pred_stock"
    runner.predict(501, "2d", TRAINER, raw / "imagesTs", stock)
    summary = runner.evaluate(raw / "labelsTs", stock)
    assert len(summary["metric_per_case"]) == 2 and "1" in summary["mean"]
    model = runner.results / "Dataset501_KvasirSub" / f"{TRAINER}__nnUNetPlans__2d"
    ort = tmp_path / "pred_onnx"
    for argv in (["export-onnx", "-m", str(model), "-f", "0"],
                 ["predict", "-i", str(raw / "imagesTs"), "-o", str(ort), "-d", "501", "-c", "2d", "-tr", TRAINER,
                  "-f", "0", "-device", "cpu", "--backend", "onnxruntime", "-npp", "1", "-nps", "1"]):
        proc = subprocess.run([sys.executable, "-m", "nnunetv2_mednext", *argv], capture_output=True, text=True,
                              env={**env, "OMP_NUM_THREADS": "1"}, timeout=900, cwd=tmp_path)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    for s in test:  # the exported network gives nnU-Net's masks
        a = np.asarray(Image.open(stock / f"{s}.png"))
        b = np.asarray(Image.open(ort / f"{s}.png"))
        assert a.shape == b.shape and (a != b).mean() < 1e-3, s
    assert os.path.isfile(raw / "imagesTs" / f"{test[0]}_0000.png")
