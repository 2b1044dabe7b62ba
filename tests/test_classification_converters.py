"""The published layouts of SARS-CoV-2 CT, MSLD v1 and Large COVID-19 CT, on small fake copies."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image

from nnunetv2_mednext.classification.console import Console
from nnunetv2_mednext.classification.converters import convert, msld_patient
from nnunetv2_mednext.classification.index import index_csv
from nnunetv2_mednext.classification.prepare import prepare
from nnunetv2_mednext.classification.synthetic import shape_image

_rng = np.random.default_rng(11)


def _img(path: Path, kind: str = "circle", size: int = 24, rgb: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    a = shape_image(kind, size, _rng)
    Image.fromarray(np.stack([a, a // 2, a], 2) if rgb else a).save(path)


def test_sarscov2(tmp_path: Path):
    src = tmp_path / "download" / "archive"
    for i in range(1, 7):
        _img(src / "COVID" / f"Covid ({i}).png", "circle")
        _img(src / "non-COVID" / f"Non-Covid ({i}).png", "square")
    conv = convert("sarscov2", tmp_path / "download", tmp_path / "out")
    assert conv.class_counts == {"COVID": 6, "non-COVID": 6} and conv.splits_path is None
    assert any("no patient ids" in n for n in conv.notes)
    idx = index_csv(conv.csv_path)
    assert idx.class_names == ["COVID", "non-COVID"] and len(idx) == 12
    assert all(Path(s.path).is_file() for s in idx.samples)


def test_msld_originals_grouped_by_patient(tmp_path: Path):
    base = tmp_path / "msld" / "Original Images" / "Original Images"
    for p in range(1, 6):
        for k in range(1, 3):
            _img(base / "Monkey Pox" / f"M{p:02d}_{k:02d}.jpg", "circle", rgb=True)
            _img(base / "Others" / f"NM{p:02d}_{k:02d}.jpg", "stripes", rgb=True)
    for name in ("19.jpg", "19_1.jpg", "19_2.jpg", "7.jpg", "7_1.jpg"):  # the shipped copy's numeric case names
        _img(base / "Others" / name, "stripes", rgb=True)
    _img(tmp_path / "msld" / "Augmented Images" / "Augmented Images" / "Monkeypox_augmented" / "M01_01_01.jpg")
    conv = convert("msld", tmp_path / "msld", tmp_path / "out")
    assert conv.class_counts == {"Monkeypox": 10, "Others": 15}  # augmented copies ignored
    assert msld_patient("NM12_01_aug3.jpg") == "NM12" and msld_patient("P13_2.jpg") == "P13"
    assert msld_patient("11.jpg") == msld_patient("11_1.jpg") == "11" and msld_patient("58_!.jpg") == "58"
    assert msld_patient("19_2.jpg", "Others") == "Others:19" and msld_patient("_1.jpg") is None
    prep = prepare(conv.csv_path, tmp_path / "run", n_folds=2, console=Console(quiet=True))
    assert prep.fingerprint["color_mode"] == "rgb"
    for f in prep.splits["folds"]:
        part = {i: k for k, ids in f.items() for i in ids}
        for s in prep.index.samples:
            mate = s.id.replace("_01.jpg", "_02.jpg")
            if mate in part:
                assert part[mate] == part[s.id]  # both images of a patient in one part
        others = [i for i in part if "/Others/" in i and i.rsplit("/", 1)[1][0].isdigit()]
        assert len({part[i] for i in others if i.rsplit("/", 1)[1].startswith("19")}) == 1
        assert len({part[i] for i in others if i.rsplit("/", 1)[1].startswith("7")}) == 1


def _msld_folds(root: Path) -> Path:
    src = root / "msld"
    layout = {1: ([1, 2, 3], [4], [5]), 2: ([3, 4, 5], [1], [2]), 3: ([5, 1, 2], [3], [4])}
    for k, (train, val, test) in layout.items():
        fold = src / "Fold1" / "Fold1" / f"Fold{k}"
        for part, patients in (("Train", train), ("Val", val), ("Test", test)):
            for p in patients:
                for aug in ([""] if part == "Test" else ["_01", "_02"]):
                    _img(fold / part / "Monkeypox" / f"M{p:02d}_01{aug}.jpg", "circle")
                    _img(fold / part / "Others" / f"NM{p:02d}_01{aug}.jpg", "square")
    return src


def test_msld_published_folds(tmp_path: Path):
    src = _msld_folds(tmp_path)
    conv = convert("msld-folds", src, tmp_path / "out")
    splits = json.loads(conv.splits_path.read_text())
    assert splits["n_folds"] == 3
    for f in splits["folds"]:
        assert set(f) == {"train", "val", "test"}
        assert len(f["train"]) == 12 and len(f["val"]) == 4 and len(f["test"]) == 2
        assert all("/Test/" in p for p in f["test"])
    con = Console(quiet=True)
    prep = prepare(conv.csv_path, tmp_path / "run", splits_file=conv.splits_path, console=con)
    assert prep.splits["n_folds"] == 3
    assert not any("split between" in w for w in con.warnings)  # the published folds are patient-independent


def test_large_covid_ct_with_metadata(tmp_path: Path):
    src = tmp_path / "large"
    cur = src / "curated_data" / "curated_data"
    meta = {"normal": [], "covid": [], "cap": []}
    for folder, key, prefix in (("1NonCOVID", "normal", "normal"), ("2COVID", "covid", "6_Rahimzadeh_patient"),
                                ("3CAP", "cap", "cap")):
        for p in range(1, 4):
            for s in range(1, 4):
                name = f"{prefix}{p:03d}_{s}.png"
                _img(cur / folder / name, "circle")
                meta[key].append({"index": len(meta[key]), "File name": name, "Patient ID": f"patient{p}"})
    for key, rows in meta.items():
        with open(src / f"meta_data_{key}.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["index", "File name", "Patient ID"])
            w.writeheader()
            w.writerows(rows)
    conv = convert("largecovid", src, tmp_path / "out3")
    assert conv.class_counts == {"Normal": 9, "COVID": 9, "CAP": 9}
    idx = index_csv(conv.csv_path)
    assert idx.has_groups and {s.group for s in idx.samples if s.label == "COVID"} == {
        "COVID:patient1", "COVID:patient2", "COVID:patient3"}
    two = convert("largecovid-2class", src, tmp_path / "out2")
    assert two.class_counts == {"Normal": 9, "COVID": 9}
    assert "--split" in conv.recommended
