"""Converters on small fake copies of the public Synapse/BTCV and ACDC layouts (same names, tiny volumes)."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import SimpleITK as sitk
from conftest import requires_shared_data, shared_data

from nnunetv2_mednext.cli import main
from nnunetv2_mednext.conversion import acdc, convert_acdc, convert_synapse, synapse
from nnunetv2_mednext.errors import MedNeXtUserError

SHAPE = (6, 16, 16)
SHARED_ACDC = shared_data("acdc_ssl4mis_h5")


def _write_nii(path: Path, array: np.ndarray, spacing_zyx: tuple[float, ...], origin=(0.0, 0.0, 0.0)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = sitk.GetImageFromArray(array)
    img.SetSpacing(tuple(reversed(spacing_zyx)))
    img.SetOrigin(origin)
    sitk.WriteImage(img, str(path), True)


def _organ_label(values: range | list[int]) -> np.ndarray:
    """A label volume with one 1x2x2 block per value (block i at z = i % Z, y = 2*(i // Z))."""
    lab = np.zeros(SHAPE, np.uint8)
    for i, v in enumerate(values):
        z, y = i % SHAPE[0], 2 * (i // SHAPE[0])
        lab[z, y:y + 2, 4:6] = v
    return lab


def _integrity_ok(folder: Path, capfd: pytest.CaptureFixture[str]) -> None:
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    capfd.readouterr()
    verify_dataset_integrity(str(folder), num_processes=1)  # raises on any error
    out = capfd.readouterr().out
    assert "verify_dataset_integrity Done" in out
    assert "Error" not in out and "Warning" not in out, out


def _ids(folder: Path, sub: str) -> list[str]:
    suffix = "_0000.nii.gz" if sub.startswith("images") else ".nii.gz"
    return sorted(p.name[: -len(suffix)] for p in (folder / sub).glob(f"*{suffix}"))


# ---------------------------------------------------------------------------------------------------- Synapse
@pytest.fixture(scope="module")
def synapse_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("btcv") / "RawData"
    rng = np.random.default_rng(0)
    for n in synapse.TRAIN_CASES + synapse.TEST_CASES:
        image = rng.normal(40, 100, SHAPE).astype(np.int16)
        _write_nii(root / "Training" / "img" / f"img{n}.nii.gz", image, (3.0, 0.8, 0.7), origin=(1.0, 2.0, 3.0))
        _write_nii(root / "Training" / "label" / f"label{n}.nii.gz", _organ_label(range(1, 14)), (3.0, 0.8, 0.7),
                   origin=(1.0, 2.0, 3.0))
    _write_nii(root / "Testing" / "img" / "img0061.nii.gz", np.zeros(SHAPE, np.int16), (3.0, 0.8, 0.7))  # unlabelled
    return root


@pytest.fixture(scope="module")
def synapse_transunet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("transunet") / "data" / "Synapse"
    rng = np.random.default_rng(1)
    (root / "train_npz").mkdir(parents=True)
    (root / "test_vol_h5").mkdir(parents=True)
    for n in synapse.TRAIN_CASES:
        label = _organ_label(range(1, 9))
        for z in range(SHAPE[0]):
            np.savez(root / "train_npz" / f"case{n}_slice{z:03d}.npz", image=rng.random(SHAPE[1:]).astype(np.float32),
                     label=label[z].astype(np.float32))
    for n in synapse.TEST_CASES:
        with h5py.File(root / "test_vol_h5" / f"case{n}.npy.h5", "w") as f:
            f["image"] = rng.random(SHAPE).astype(np.float32)
            f["label"] = _organ_label(range(1, 9)).astype(np.float32)
    return root


def test_synapse_raw_transunet_protocol(synapse_raw: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    res = convert_synapse(synapse_raw, tmp_path / "raw", dataset_id=801, write_splits=True,
                          preprocessed=tmp_path / "pre", log=lambda _m: None)
    folder = res.folder
    assert folder.name == "Dataset801_Synapse" and res.layout == "raw"
    assert _ids(folder, "imagesTr") == _ids(folder, "labelsTr") == sorted(f"case{n}" for n in synapse.TRAIN_CASES)
    assert _ids(folder, "imagesTs") == _ids(folder, "labelsTs") == sorted(f"case{n}" for n in synapse.TEST_CASES)
    ds = json.loads((folder / "dataset.json").read_text())
    assert ds["labels"] == synapse.TRANSUNET8_LABELS and ds["numTraining"] == 18 and ds["channel_names"] == {"0": "CT"}
    # BTCV 13 -> TransUNet 8: block i holds BTCV value i + 1
    lab_img = sitk.ReadImage(str(folder / "labelsTs" / "case0001.nii.gz"))
    lab = sitk.GetArrayFromImage(lab_img)
    expected = _organ_label([synapse.BTCV13_TO_TRANSUNET8.get(v, 0) for v in range(1, 14)])
    np.testing.assert_array_equal(lab, expected)
    assert np.allclose(lab_img.GetSpacing(), (0.7, 0.8, 3.0)) and np.allclose(lab_img.GetOrigin(), (1.0, 2.0, 3.0))
    splits = json.loads((tmp_path / "pre" / folder.name / "splits_final.json").read_text())
    assert len(splits) == 5 and sorted(c for s in splits for c in s["val"]) == _ids(folder, "imagesTr")
    assert all(not set(s["train"]) & set(s["val"]) and len(s["train"]) + len(s["val"]) == 18 for s in splits)
    _integrity_ok(folder, capfd)


def test_synapse_transunet_layout(synapse_transunet: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    res = convert_synapse(synapse_transunet.parent.parent, tmp_path / "raw", dataset_id=803, name="SynapseTU",
                          log=lambda _m: None)
    folder = res.folder
    assert res.layout == "transunet"
    assert _ids(folder, "imagesTr") == sorted(f"case{n}" for n in synapse.TRAIN_CASES)
    assert _ids(folder, "imagesTs") == sorted(f"case{n}" for n in synapse.TEST_CASES)
    img = sitk.ReadImage(str(folder / "imagesTr" / "case0005_0000.nii.gz"))
    assert img.GetSize() == (16, 16, 6)  # slices stacked along z
    assert np.allclose(img.GetSpacing(), tuple(reversed(synapse.NOMINAL_SPACING)))
    lab = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "labelsTr" / "case0005.nii.gz")))
    np.testing.assert_array_equal(lab, _organ_label(range(1, 9)))  # already in TransUNet coding: unchanged
    assert "nominal" in json.loads((folder / "dataset.json").read_text())["conversion"]["spacing"]
    _integrity_ok(folder, capfd)


def test_synapse_cv5_and_13_organs(synapse_raw: Path, tmp_path: Path) -> None:
    res = convert_synapse(synapse_raw, tmp_path / "raw", protocol="cv5", organs=13, write_splits=True,
                          preprocessed=tmp_path / "pre", log=lambda _m: None)
    assert len(res.train) == 30 and res.test == [] and _ids(res.folder, "imagesTs") == []
    ds = json.loads((res.folder / "dataset.json").read_text())
    assert ds["labels"] == synapse.BTCV13_LABELS
    lab = sitk.GetArrayFromImage(sitk.ReadImage(str(res.folder / "labelsTr" / "case0001.nii.gz")))
    np.testing.assert_array_equal(lab, _organ_label(range(1, 14)))
    splits = json.loads(res.splits_file.read_text())
    assert [len(s["val"]) for s in splits] == [6] * 5


def test_synapse_errors(synapse_raw: Path, synapse_transunet: Path, tmp_path: Path,
                        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "raw"
    convert_synapse(synapse_raw, out, log=lambda _m: None)
    with pytest.raises(MedNeXtUserError, match=r"already exists.*--overwrite"):
        convert_synapse(synapse_raw, out, log=lambda _m: None)
    convert_synapse(synapse_raw, out, overwrite=True, log=lambda _m: None)
    with pytest.raises(MedNeXtUserError, match="already used by"):
        convert_synapse(synapse_raw, out, name="Other", log=lambda _m: None)
    with pytest.raises(MedNeXtUserError, match="13 organs need"):
        convert_synapse(synapse_transunet, tmp_path / "r2", organs=13, log=lambda _m: None)
    # CLI: an odd layout gives one line on stderr and exit code 2
    (tmp_path / "empty").mkdir()
    assert main(["convert", "synapse", str(tmp_path / "empty"), "--out", str(tmp_path / "r3")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no Synapse layout" in err and "fix:" in err


def test_synapse_missing_cases(synapse_transunet: Path, tmp_path: Path) -> None:
    partial = tmp_path / "partial"
    (partial / "train_npz").mkdir(parents=True)
    for p in (synapse_transunet / "train_npz").glob("case0005_*.npz"):
        (partial / "train_npz" / p.name).write_bytes(p.read_bytes())
    with pytest.raises(MedNeXtUserError, match=r"29 of 30 protocol cases not found.*--allow-missing"):
        convert_synapse(partial, tmp_path / "raw", log=lambda _m: None)
    res = convert_synapse(partial, tmp_path / "raw", allow_missing=True, log=lambda _m: None)
    assert res.train == ["case0005"] and len(res.missing) == 29
    (partial / "train_npz" / "case0005_slice002.npz").unlink()
    with pytest.raises(MedNeXtUserError, match="gaps"):
        convert_synapse(partial, tmp_path / "raw2", allow_missing=True, log=lambda _m: None)


# ---------------------------------------------------------------------------------------------------- ACDC
def _acdc_label(patient: int, phase: str, z: int) -> np.ndarray:
    """Label slices that encode their z index (so stacking order is checkable), values 0..3."""
    lab = np.zeros((z, 12, 10), np.uint8)
    for k in range(z):
        lab[k, 1:3, 1 : 2 + k] = 1
        lab[k, 4:6, 2:5] = 2
        lab[k, 7:9, 3:6] = 3 if phase == "ED" or patient % 2 else 0
    return lab


@pytest.fixture(scope="module")
def acdc_h5(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SSL4MIS layout: whole volumes for the val/test patients of *its* split, slices (K = 1..N) for the rest."""
    root = tmp_path_factory.mktemp("ssl4mis") / "ACDC"
    (root / "data").mkdir(parents=True)
    rng = np.random.default_rng(2)
    volume_patients = set(range(1, 101, 3))
    for p in range(1, 101):
        for frame, phase in (("01", "ED"), ("02", "ES")):
            z = 9 + p % 4  # >= 10 slices for some, to check numeric (not lexicographic) slice order
            lab = _acdc_label(p, phase, z)
            img = rng.random(lab.shape).astype(np.float32)
            if p in volume_patients:
                with h5py.File(root / "data" / f"patient{p:03d}_frame{frame}.h5", "w") as f:
                    f.create_dataset("image", data=img, compression="gzip")
                    f.create_dataset("label", data=lab, compression="gzip")
            else:
                for k in range(z):
                    with h5py.File(root / "data" / f"patient{p:03d}_frame{frame}_slice_{k + 1}.h5", "w") as f:
                        f["image"], f["label"] = img[k], lab[k]
    (root / "train.list").write_text("patient004_frame01\n")
    return root


@pytest.fixture(scope="module")
def acdc_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("acdc_raw") / "database"
    for p in range(1, 102):
        folder = root / ("training" if p <= 100 else "testing") / f"patient{p:03d}"
        folder.mkdir(parents=True)
        es = 8 + p % 5
        (folder / "Info.cfg").write_text(f"ED: 1\nES: {es}\nGroup: NOR\nHeight: 180.0\nNbFrame: 20\nWeight: 80.0\n")
        for frame, phase in ((1, "ED"), (es, "ES")):
            lab = _acdc_label(p, phase, 5)
            spacing = (10.0, 1.4 + p / 1000, 1.4 + p / 1000)
            _write_nii(folder / f"patient{p:03d}_frame{frame:02d}.nii.gz", (lab * 50).astype(np.int16), spacing)
            if p <= 100:
                _write_nii(folder / f"patient{p:03d}_frame{frame:02d}_gt.nii.gz", lab, spacing)
    return root


def test_acdc_ssl4mis_layout(acdc_h5: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    res = convert_acdc(acdc_h5, tmp_path / "raw", write_splits=True, preprocessed=tmp_path / "pre", log=lambda _m: None)
    folder = res.folder
    assert folder.name == "Dataset802_ACDC" and res.layout == "ssl4mis"
    test_ids = sorted(f"patient{p:03d}_{ph}" for p in acdc.TEST_PATIENTS for ph in ("ED", "ES"))
    assert _ids(folder, "imagesTs") == _ids(folder, "labelsTs") == test_ids
    assert len(_ids(folder, "imagesTr")) == 160 and not set(_ids(folder, "imagesTr")) & set(test_ids)
    splits = json.loads(res.splits_file.read_text())
    assert len(splits) == 1
    assert sorted({c.split("_")[0] for c in splits[0]["val"]}) == [f"patient{p:03d}" for p in acdc.VAL_PATIENTS]
    assert len(splits[0]["train"]) == 140 and len(splits[0]["val"]) == 20
    # patient 002 (slices, z = 11): rebuilt in slice_1..slice_11 order; 001 was a whole volume
    for case in ("patient002_ES", "patient001_ED"):
        p, ph = int(case[7:10]), case.split("_")[1]
        sub = "labelsTs" if p in acdc.TEST_PATIENTS else "labelsTr"
        img = sitk.ReadImage(str(folder / sub / f"{case}.nii.gz"))
        np.testing.assert_array_equal(sitk.GetArrayFromImage(img), _acdc_label(p, ph, 9 + p % 4))
        assert np.allclose(img.GetSpacing(), tuple(reversed(acdc.NOMINAL_SPACING)))
    ds = json.loads((folder / "dataset.json").read_text())
    assert ds["labels"] == acdc.LABELS and ds["numTraining"] == 160
    _integrity_ok(folder, capfd)


def test_acdc_raw_layout(acdc_raw: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    res = convert_acdc(acdc_raw, tmp_path / "raw", dataset_id=804, log=lambda _m: None)
    folder = res.folder
    assert res.layout == "raw" and len(res.train) == 160 and len(res.test) == 40
    # ES comes from Info.cfg (frame 8 + p % 5); geometry is the file's own
    img = sitk.ReadImage(str(folder / "imagesTs" / "patient003_ES_0000.nii.gz"))
    src = sitk.ReadImage(str(acdc_raw / "training" / "patient003" / f"patient003_frame{8 + 3 % 5:02d}.nii.gz"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(img), sitk.GetArrayFromImage(src))
    assert np.allclose(img.GetSpacing(), src.GetSpacing())
    _integrity_ok(folder, capfd)


def test_acdc_cli_subset_and_errors(acdc_h5: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("nnUNet_preprocessed", raising=False)
    out = tmp_path / "raw"
    args = ["convert", "acdc", str(acdc_h5), "--out", str(out), "--max-per-split", "2", "--spacing", "5,1,1", "-q"]
    assert main(args) == 0
    folder = out / "Dataset802_ACDC"
    assert _ids(folder, "imagesTs") == ["patient002_ED", "patient002_ES", "patient003_ED", "patient003_ES"]
    assert np.allclose(sitk.ReadImage(str(folder / "labelsTs" / "patient002_ED.nii.gz")).GetSpacing(), (1, 1, 5))
    assert main(args) == 2 and "--overwrite" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0
    assert main(["convert", "acdc", str(acdc_h5), "--out", str(out), "--id", "805", "--write-splits"]) == 2
    assert "--preprocessed" in capsys.readouterr().err
    assert not (out / "Dataset805_ACDC").exists()  # checked before anything is written
    assert main(["convert", "acdc", str(acdc_h5), "--out", str(out), "--spacing", "1,2"]) == 2
    assert "spacing" in capsys.readouterr().err


@pytest.mark.shared_data
@requires_shared_data("acdc_ssl4mis_h5")
def test_acdc_shared_copy(tmp_path: Path) -> None:
    res = convert_acdc(SHARED_ACDC, tmp_path / "raw", max_per_split=2, log=lambda _m: None)
    assert res.layout == "ssl4mis" and len(res.train) == 8 and len(res.test) == 4
    for case in res.test:
        lab = sitk.ReadImage(str(res.folder / "labelsTs" / f"{case}.nii.gz"))
        img = sitk.ReadImage(str(res.folder / "imagesTs" / f"{case}_0000.nii.gz"))
        assert lab.GetSize() == img.GetSize() and 6 <= lab.GetSize()[2] <= 17
        assert set(np.unique(sitk.GetArrayFromImage(lab))) == {0, 1, 2, 3}


def test_msd_conversion_holds_out_the_last_cases_as_test_set(tmp_path: Path) -> None:
    src = tmp_path / "Task04_Hippocampus"
    rng = np.random.default_rng(0)
    for i in range(7):
        lab = np.zeros((5, 10, 10), np.uint8)
        lab[1:3, 2:6, 2:6], lab[3, 6:9, 6:9] = 1, 2
        _write_nii(src / "imagesTr" / f"hippocampus_{i:03d}.nii.gz", rng.normal(size=lab.shape).astype(np.float32),
                   (1.0, 1.0, 1.0))
        _write_nii(src / "labelsTr" / f"hippocampus_{i:03d}.nii.gz", lab.astype(np.float32), (1.0, 1.0, 1.0))
    from nnunetv2_mednext.conversion import convert_msd

    res = convert_msd(src, tmp_path / "raw", dataset_id=4, test_cases=2, write_splits=True,
                      preprocessed=tmp_path / "pre", log=lambda _m: None)
    assert res.test == ["hippocampus_005", "hippocampus_006"] and len(res.train) == 5
    folder = res.folder
    assert sorted(p.name for p in (folder / "imagesTs").iterdir()) == ["hippocampus_005_0000.nii.gz",
                                                                        "hippocampus_006_0000.nii.gz"]
    assert len(list((folder / "labelsTr").iterdir())) == 5 and len(list((folder / "labelsTs").iterdir())) == 2
    info = json.loads((folder / "dataset.json").read_text())
    assert info["numTraining"] == 5 and info["labels"] == {"background": 0, "Anterior": 1, "Posterior": 2}
    lab = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "labelsTs" / "hippocampus_006.nii.gz")))
    assert lab.dtype == np.uint8 and lab.max() == 2  # float labels rewritten as integers
    splits = json.loads(res.splits_file.read_text())
    assert len(splits) == 5 and all(set(s["train"]) | set(s["val"]) == set(res.train) for s in splits)
    with pytest.raises(MedNeXtUserError, match="leaves fewer than 2"):
        convert_msd(src, tmp_path / "raw2", dataset_id=5, test_cases=6, log=lambda _m: None)
