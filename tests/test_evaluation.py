"""Dice / HD95 against analytic values, both HD95 conventions and their empty-mask rules, and folder evaluation."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage
from scipy.spatial.distance import cdist

from nnunetv2_mednext.cli import main
from nnunetv2_mednext.errors import MedNeXtUserError
from nnunetv2_mednext.evaluation import dice, evaluate_folders, hd95, mm_metrics, transunet_metrics, write_reports
from nnunetv2_mednext.evaluation.evaluate import ordered_labels
from nnunetv2_mednext.evaluation.metrics import surface_distances


def _cube(shape: tuple[int, ...], lo: tuple[int, ...], hi: tuple[int, ...]) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[tuple(slice(a, b) for a, b in zip(lo, hi))] = True
    return m


# ------------------------------------------------------------------------------------------------ analytic values
def test_dice_concentric_squares() -> None:
    outer = _cube((30, 30), (5, 5), (25, 25))  # 400 px
    inner = _cube((30, 30), (10, 10), (20, 20))  # 100 px, inside
    assert dice(inner, outer) == pytest.approx(2 * 100 / 500)
    assert dice(outer, outer) == 1.0
    # every surface pixel of the inner square is exactly 5 px from the outer square's surface
    np.testing.assert_allclose(surface_distances(inner, outer), 5.0)


def test_hd95_two_points_anisotropic() -> None:
    a, b = np.zeros((8, 8, 12), bool), np.zeros((8, 8, 12), bool)
    a[2, 3, 4], b[5, 3, 8] = True, True
    assert hd95(a, b) == pytest.approx(5.0)  # voxels: sqrt(3² + 4²)
    assert hd95(a, b, (2.0, 1.0, 0.5)) == pytest.approx(math.hypot(6.0, 2.0))  # mm: dz = 6, dx = 2


def test_hd95_parallel_plates() -> None:
    ref = _cube((12, 14, 14), (2, 3, 3), (3, 11, 11))
    pred = _cube((12, 14, 14), (6, 3, 3), (7, 11, 11))  # same plate 4 slices further
    assert hd95(pred, ref) == pytest.approx(4.0)
    assert hd95(pred, ref, (3.0, 0.7, 0.7)) == pytest.approx(12.0)
    assert mm_metrics(pred, ref, (3.0, 0.7, 0.7)) == (0.0, pytest.approx(12.0))
    assert transunet_metrics(pred, ref) == (0.0, pytest.approx(4.0))  # spacing ignored


def test_shifted_cubes_known_surface_distances() -> None:
    ref = _cube((14, 14, 14), (2, 2, 2), (10, 10, 10))  # 8³
    pred = _cube((14, 14, 14), (2, 2, 3), (10, 10, 11))  # shifted by 1 voxel along x
    # 296 surface voxels each side; 100 of them (a 6x6 inner face and an 8x8 outer face) are 1 voxel off, 196 are 0
    d = surface_distances(pred, ref)
    assert d.size == 296 and int((d == 1).sum()) == 100 and int((d == 0).sum()) == 196
    assert dice(pred, ref) == pytest.approx(2 * 7 * 64 / 1024)
    for spacing, expected in (((1, 1, 1), 1.0), ((3.0, 2.0, 0.5), 0.5), ((1, 1, 2.5), 2.5)):
        assert hd95(pred, ref, spacing) == pytest.approx(expected)
    # the same shift along z: mm follows the z spacing, the pixel mode does not
    pred_z = _cube((14, 14, 14), (3, 2, 2), (11, 10, 10))
    assert mm_metrics(pred_z, ref, (3.0, 0.5, 0.5))[1] == pytest.approx(3.0)
    assert transunet_metrics(pred_z, ref)[1] == pytest.approx(1.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hd95_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = ndimage.binary_opening(rng.random((10, 18, 18)) > 0.6)
    b = ndimage.binary_closing(rng.random((10, 18, 18)) > 0.75)
    a[0, 0, 0] = b[-1, -1, -1] = True  # objects touching the array border
    spacing = (2.5, 1.0, 0.6)
    structure = ndimage.generate_binary_structure(3, 1)

    def surf(m: np.ndarray) -> np.ndarray:
        return np.argwhere(m & ~ndimage.binary_erosion(m, structure, border_value=0)) * spacing

    dist = cdist(surf(a), surf(b))
    expected = np.percentile(np.concatenate([dist.min(1), dist.min(0)]), 95)
    assert hd95(a, b, spacing) == pytest.approx(expected)


def test_empty_mask_rules() -> None:
    full = _cube((6, 6, 6), (1, 1, 1), (4, 4, 4))
    empty = np.zeros_like(full)
    # TransUNet calculate_metric_percase
    assert transunet_metrics(full, full) == (1.0, 0.0)
    assert transunet_metrics(full, empty) == (1.0, 0.0)  # prediction on an empty reference
    assert transunet_metrics(empty, full) == (0.0, 0.0)  # missed structure scores HD95 0
    assert transunet_metrics(empty, empty) == (0.0, 0.0)  # correct empty prediction scores DSC 0
    # mm mode: NaN where undefined
    d, h = mm_metrics(empty, empty, (1, 1, 1))
    assert math.isnan(d) and math.isnan(h)
    for p, r in ((full, empty), (empty, full)):
        d, h = mm_metrics(p, r, (1, 1, 1))
        assert d == 0.0 and math.isnan(h)


# ------------------------------------------------------------------------------------------------ folders
SYNAPSE_LABELS = {"background": 0, "aorta": 1, "gallbladder": 2, "kidney_left": 3, "kidney_right": 4, "liver": 5,
                  "pancreas": 6, "spleen": 7, "stomach": 8}


def _write(path: Path, arr: np.ndarray, spacing_zyx: tuple[float, ...]) -> None:
    img = sitk.GetImageFromArray(arr.astype(np.uint8))
    img.SetSpacing(tuple(reversed(spacing_zyx)))
    sitk.WriteImage(img, str(path), True)


@pytest.fixture()
def volume_folders(tmp_path: Path) -> tuple[Path, Path]:
    gt, pred = tmp_path / "labelsTs", tmp_path / "pred"
    gt.mkdir(), pred.mkdir()
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "RV": 1, "MYO": 2, "LV": 3}}))
    shape, sp = (14, 14, 14), (2.0, 1.0, 1.0)
    ref = np.zeros(shape, np.uint8)
    ref[_cube(shape, (2, 2, 2), (10, 10, 10))] = 1
    ref[_cube(shape, (11, 11, 11), (13, 13, 13))] = 2
    # case a: class 1 shifted along z by one slice (HD95 2 mm, 1 vox), class 2 perfect, class 3 absent in both
    pa = np.zeros(shape, np.uint8)
    pa[_cube(shape, (3, 2, 2), (11, 10, 10))] = 1
    pa[ref == 2] = 2
    _write(gt / "a.nii.gz", ref, sp)
    _write(pred / "a.nii.gz", pa, sp)
    # case b: class 1 perfect, class 2 missed, class 3 predicted although absent
    pb = np.zeros(shape, np.uint8)
    pb[ref == 1] = 1
    pb[0, 0, 0] = 3
    _write(gt / "b.nii.gz", ref, sp)
    _write(pred / "b.nii.gz", pb, sp)
    return gt, pred


def test_evaluate_folders_both_modes(volume_folders: tuple[Path, Path], tmp_path: Path) -> None:
    gt, pred = volume_folders
    res = evaluate_folders(gt, pred)  # labels from ../dataset.json
    assert res["labels"] == {"1": "RV", "2": "MYO", "3": "LV"}
    a, b = (c["metrics"] for c in res["metric_per_case"])
    assert a["1"]["Dice"] == pytest.approx(0.875) and a["1"]["HD95_mm"] == pytest.approx(2.0)
    assert a["1"]["HD95_transunet_px"] == pytest.approx(1.0)
    assert math.isnan(a["3"]["Dice"]) and a["3"]["DSC_transunet"] == 0.0  # both empty
    assert b["2"]["Dice"] == 0.0 and math.isnan(b["2"]["HD95_mm"])  # missed
    assert (b["2"]["DSC_transunet"], b["2"]["HD95_transunet_px"]) == (0.0, 0.0)
    assert (b["3"]["DSC_transunet"], b["3"]["HD95_transunet_px"]) == (1.0, 0.0)  # predicted on empty reference
    # means: per class over cases (NaN skipped), overall = mean of the class means
    assert res["mean"]["1"]["Dice"] == pytest.approx((0.875 + 1) / 2)
    assert res["std"]["1"]["Dice"] == pytest.approx(0.0625)
    assert res["count"]["3"]["Dice"] == 1 and res["mean"]["3"]["Dice"] == 0.0
    assert res["foreground_mean"]["Dice"] == pytest.approx(np.mean([0.9375, 0.5, 0.0]))
    assert res["mean"]["3"]["DSC_transunet"] == pytest.approx(0.5)
    assert res["foreground_mean"]["HD95_transunet_px"] == pytest.approx(np.mean([0.5, 0.0, 0.0]))

    paths = write_reports(res, tmp_path / "report", "demo")
    summary = json.loads(paths["summary.json"].read_text())  # strict JSON: NaN written as null
    assert summary["metric_per_case"][0]["metrics"]["3"]["Dice"] is None and summary["method"] == "demo"
    rows = list(csv.DictReader(paths["per_case.csv"].open()))
    assert len(rows) == 6 and rows[0]["case"] == "a"
    table = paths["table.md"].read_text()
    assert "| Method | Mean DSC | HD95 | RV | Myo | LV |" in table and "HD95 in voxels" in table


def test_paper_column_order() -> None:
    shuffled = {str(v): k for k, v in SYNAPSE_LABELS.items() if v}
    shuffled["7"], shuffled["1"] = shuffled["1"], shuffled["7"]  # aorta coded 7, spleen 1
    cols = [t for _, t in ordered_labels(shuffled)]
    assert cols == ["Aorta", "Gallbl.", "Kid (L)", "Kid (R)", "Liver", "Pancreas", "Spleen", "Stomach"]
    assert ordered_labels(shuffled)[0][0] == "7"
    assert [t for _, t in ordered_labels({"2": "b", "1": "a"})] == ["a", "b"]


def test_png_and_missing_predictions(tmp_path: Path) -> None:
    from PIL import Image

    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir(), pred.mkdir()
    ref = np.zeros((30, 30), np.uint8)
    ref[5:25, 5:25] = 1
    p = np.zeros_like(ref)
    p[10:20, 10:20] = 1
    for i in range(2):
        Image.fromarray(ref).save(gt / f"c{i}.png")
    Image.fromarray(p).save(pred / "c0.png")
    with pytest.raises(MedNeXtUserError, match=r"1 of 2 cases have no prediction.*--allow-missing"):
        evaluate_folders(gt, pred, labels=[1])
    res = evaluate_folders(gt, pred, labels=[1], mode="transunet", allow_missing=True)
    assert res["missing_predictions"] == ["c1"] and res["file_ending"] == ".png"
    c0, c1 = (c["metrics"]["1"] for c in res["metric_per_case"])
    assert c0["DSC_transunet"] == pytest.approx(0.4) and c1["DSC_transunet"] == 0.0
    assert "Dice" not in c0  # mm mode not requested


def test_evaluate_cli(volume_folders: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gt, pred = volume_folders
    out = tmp_path / "ev"
    assert main(["evaluate", str(gt), str(pred), "-o", str(out), "--mode", "mm", "--method", "MedNeXt"]) == 0
    text = capsys.readouterr().out
    assert "| MedNeXt |" in text and "HD95 in mm" in text
    assert {p.name for p in out.iterdir()} == {"summary.json", "per_case.csv", "summary.csv", "table.md"}
    assert main(["evaluate", str(gt), str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
