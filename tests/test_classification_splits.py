"""Leakage guard: duplicated images and images of one patient never cross folds; split files are reused/honoured."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nnunetv2_mednext.classification.console import Console
from nnunetv2_mednext.classification.duplicates import leakage_components
from nnunetv2_mednext.classification.prepare import prepare
from nnunetv2_mednext.classification.splits import leak_report, load_splits
from nnunetv2_mednext.classification.synthetic import shape_image
from nnunetv2_mednext.errors import MedNeXtUserError

CLASSES = ("circle", "square", "stripes")


@pytest.fixture(scope="module")
def leaky(tmp_path_factory) -> Path:
    """60 images of 20 patients (3 each) plus duplicates: a cross-class exact copy, a same-class exact copy of another
    patient's image, and a near copy (pixel noise) filed under a third patient."""
    root = tmp_path_factory.mktemp("leaky")
    (root / "img").mkdir()
    rng = np.random.default_rng(3)
    rows = []
    for c in CLASSES:
        for i in range(20):
            name = f"img/{c}_{i:02d}.png"
            Image.fromarray(shape_image(c, 48, rng)).save(root / name)
            rows.append((name, c, f"{c}-patient{i // 3}"))
    a = np.asarray(Image.open(root / "img/circle_00.png"))
    Image.fromarray(a).save(root / "img/dup_cross_class.png")
    rows.append(("img/dup_cross_class.png", "square", "square-patientX"))
    Image.fromarray(np.asarray(Image.open(root / "img/square_10.png"))).save(root / "img/dup_same_class.png")
    rows.append(("img/dup_same_class.png", "square", "square-patientY"))
    s = np.asarray(Image.open(root / "img/stripes_07.png")).astype(int)
    near = np.clip(s + rng.integers(-2, 3, s.shape), 0, 255).astype(np.uint8)
    Image.fromarray(near).save(root / "img/near_copy.png")
    rows.append(("img/near_copy.png", "stripes", "stripes-patientZ"))
    (root / "data.csv").write_text("path,label,group\n" + "".join(f"{p},{lab},{g}\n" for p, lab, g in rows))
    return root


def _part_of(fold_ids: dict[str, list[str]]) -> dict[str, str]:
    return {i: part for part, ids in fold_ids.items() for i in ids}


def test_patients_and_duplicates_never_cross_folds(leaky: Path, tmp_path: Path):
    con = Console(quiet=True)
    prep = prepare(leaky / "data.csv", tmp_path / "run", n_folds=5, seed=7, console=con)
    folds = json.loads((tmp_path / "run" / "splits.json").read_text())["folds"]
    assert len(folds) == 5
    patients: dict[str, set[str]] = {}
    for s in prep.index.samples:
        patients.setdefault(s.group, set()).add(s.id)
    must_stay_together = [ids for ids in patients.values() if len(ids) > 1] + [
        {"img/circle_00.png", "img/dup_cross_class.png"},
        {"img/square_10.png", "img/dup_same_class.png"},
        {"img/stripes_07.png", "img/near_copy.png"},
    ]
    val_owner = {}
    for k, f in enumerate(folds):
        part = _part_of(f)
        assert len(part) == len(prep.index)  # every image is in train or val of every fold
        for ids in must_stay_together:
            assert len({part[i] for i in ids}) == 1, f"fold {k} splits {sorted(ids)}"
        for i in f["val"]:
            assert i not in val_owner
            val_owner[i] = k
    assert len(val_owner) == len(prep.index)  # each image is validated exactly once
    near = prep.fingerprint["duplicates"]["near_groups"]
    assert ["img/near_copy.png", "img/stripes_07.png"] in [sorted(g) for g in near]
    # the cross-class duplicate is reported, naming both files
    assert any("img/circle_00.png [circle] == img/dup_cross_class.png [square]" in w for w in con.warnings)
    assert not any("split between train" in w for w in con.warnings)


def test_leak_report_catches_a_naive_split(leaky: Path, tmp_path: Path):
    """Negative control: an image-level split (no grouping) leaks, and the checker says so."""
    from sklearn.model_selection import StratifiedKFold

    prep = prepare(leaky / "data.csv", tmp_path / "run", n_folds=5, console=Console(quiet=True))
    ids, labels = prep.index.ids, prep.index.labels()
    naive = [{"train": [ids[i] for i in tr], "val": [ids[i] for i in va]}
             for tr, va in StratifiedKFold(5, shuffle=True, random_state=0).split(ids, labels)]
    path = tmp_path / "naive.json"
    path.write_text(json.dumps(naive))  # nnU-Net's list format
    splits = load_splits(path, prep.index)
    comps = leakage_components(prep.index, prep.fingerprint)
    report = leak_report(splits, prep.index, comps)
    assert len(report) == 5 and all("split between train and evaluation" in r for r in report)
    # ... and a user-given split is honoured (copied to the run folder) with those warnings
    con = Console(quiet=True)
    honoured = prepare(leaky / "data.csv", tmp_path / "run2", splits_file=path, console=con)
    assert honoured.splits["n_folds"] == 5
    assert json.loads((tmp_path / "run2" / "splits.json").read_text())["folds"][0]["val"] == naive[0]["val"]
    assert sum("split between train" in w for w in con.warnings) == 5


def test_splits_are_saved_reused_and_seeded(leaky: Path, tmp_path: Path):
    a = prepare(leaky / "data.csv", tmp_path / "a", n_folds=3, seed=1, console=Console(quiet=True))
    b = prepare(leaky / "data.csv", tmp_path / "b", n_folds=3, seed=1, console=Console(quiet=True))
    assert a.splits["folds"] == b.splits["folds"]  # fixed seed, same folds
    again = prepare(leaky / "data.csv", tmp_path / "a", n_folds=3, seed=1, console=Console(quiet=True))
    assert again.splits["folds"] == a.splits["folds"]  # same options: the saved file is reused
    (tmp_path / "a" / "splits.json").write_text(json.dumps({"folds": [b.splits["folds"][0]]}))
    reused = prepare(leaky / "data.csv", tmp_path / "a", console=Console(quiet=True))
    assert reused.splits["n_folds"] == 1  # no split option given: the saved file is reused as it is
    # an explicit option that disagrees with the saved split is refused, and nothing in the folder changes
    before = {p.name: p.read_bytes() for p in (tmp_path / "a").iterdir()}
    with pytest.raises(MedNeXtUserError, match=r"splits.json was made with --folds 1, this call asks for --folds 3"):
        prepare(leaky / "data.csv", tmp_path / "a", n_folds=3, console=Console(quiet=True))
    with pytest.raises(MedNeXtUserError, match="--seed"):
        prepare(leaky / "data.csv", tmp_path / "b", seed=2, console=Console(quiet=True))
    assert {p.name: p.read_bytes() for p in (tmp_path / "a").iterdir()} == before


def test_holdout_and_drop_duplicates(leaky: Path, tmp_path: Path):
    prep = prepare(leaky / "data.csv", tmp_path / "h", split_mode="holdout", duplicates="drop",
                   console=Console(quiet=True))
    dropped = {d["id"] for d in prep.dropped}
    # conflicting labels: both copies go; same-label copies: one stays
    assert {"img/circle_00.png", "img/dup_cross_class.png"} <= dropped
    assert len({"img/square_10.png", "img/dup_same_class.png"} & dropped) == 1
    (fold,) = prep.splits["folds"]
    assert set(fold) == {"train", "val", "test"}
    n = len(prep.index)
    assert abs(len(fold["test"]) / n - 0.2) < 0.08 and abs(len(fold["val"]) / n - 0.1) < 0.08
    part = _part_of(fold)
    for s in prep.index.samples:
        mates = [t.id for t in prep.index.samples if t.group == s.group]
        assert len({part[m] for m in mates}) == 1


def test_bad_split_files_and_too_few_groups(leaky: Path, tmp_path: Path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"train": ["img/circle_00.png"], "val": ["nope.png"]}]))
    with pytest.raises(MedNeXtUserError, match="not in the dataset"):
        prepare(leaky / "data.csv", tmp_path / "x", splits_file=bad, console=Console(quiet=True))
    both = tmp_path / "both.json"
    both.write_text(json.dumps([{"train": ["img/circle_00.png"], "val": ["img/circle_00.png"]}]))
    with pytest.raises(MedNeXtUserError, match="in both train and val"):
        prepare(leaky / "data.csv", tmp_path / "y", splits_file=both, console=Console(quiet=True))
    with pytest.raises(MedNeXtUserError, match="too few"):
        prepare(leaky / "data.csv", tmp_path / "z", n_folds=40, console=Console(quiet=True))


def test_cv_test_split_keeps_groups_and_carves_validation(leaky: Path, tmp_path: Path):
    """``--split cv-test``: each image tested exactly once, train:val:test about 70:10:20, every leakage group
    (patient, exact and near copies) inside one part of every fold; the split is reused only as cv-test."""
    prep = prepare(leaky / "data.csv", tmp_path, split_mode="cv-test", console=Console(quiet=True))
    sp = prep.splits
    assert sp["mode"] == "cv-test" and sp["n_folds"] == 5 and "70:10:20" in sp["method"]
    n = len(prep.index)
    tested = [i for f in sp["folds"] for i in f["test"]]
    assert sorted(tested) == sorted(prep.index.ids)  # every image in exactly one test part
    for f, fp in zip(sp["folds"], sp["_positions"]):
        assert set(f) == {"train", "val", "test"}
        assert abs(len(f["val"]) / n - 0.1) < 0.07 and abs(len(f["test"]) / n - 0.2) < 0.07  # 21 groups of 3
        owner: dict[int, set[str]] = {}
        for part, pos in fp.items():
            for p in pos:
                owner.setdefault(int(prep.components[p]), set()).add(part)
        assert all(len(parts) == 1 for parts in owner.values())
        assert {s.label for s in prep.index.samples if s.id in set(f["val"])} == set(CLASSES)
    assert not leak_report(sp, prep.index, prep.components)
    with pytest.raises(MedNeXtUserError, match="made with --split cv-test"):
        prepare(leaky / "data.csv", tmp_path, split_mode="cv", console=Console(quiet=True))
    again = prepare(leaky / "data.csv", tmp_path, console=Console(quiet=True))  # no --split: reused as it is
    assert again.splits["folds"] == sp["folds"]


def test_image_level_split_says_it_is_leaky(leaky: Path, tmp_path: Path):
    """``--split image-cv`` ignores patients and duplicates (stratified by class only) and says so: a ``leaky`` flag,
    its method, and one warning line counting the groups that cross parts, instead of one per fold."""
    con = Console(quiet=True)
    prep = prepare(leaky / "data.csv", tmp_path, split_mode="image-cv", console=con)
    sp = prep.splits
    assert sp["leaky"] is True and sp["mode"] == "image-cv" and "LEAKY" in sp["method"]
    assert sp["grouped_by"] == ["nothing (image-level, leaky)"]
    labels = prep.index.labels()
    for fp in sp["_positions"]:  # stratified: 20-22 images per class, so 4-5 of each in every held-out fold
        counts = np.bincount(labels[fp["val"]], minlength=3)
        assert counts.min() >= 4 and counts.max() <= 5
    crossing = [any(len({part for part, pos in fp.items() for p in pos if prep.components[p] == c}) > 1
                    for c in np.unique(prep.components)) for fp in sp["_positions"]]
    assert any(crossing)  # patients are split across parts: that is the leak
    lines = [w for w in con.warnings if "leaky split by design" in w]
    assert len(lines) == 1 and "per fold have images on both sides" in lines[0]
    saved = json.loads((tmp_path / "splits.json").read_text())
    assert saved["leaky"] is True and saved["mode"] == "image-cv"


def test_summary_of_a_run_names_its_split_and_flags_a_leaky_one(tmp_path: Path):
    """``summary.json`` records the split's method; an image-level split is flagged and its printed summary says it
    is no patient-independent result."""
    from nnunetv2_mednext.classification.metrics import compute_metrics
    from nnunetv2_mednext.classification.trainer import format_summary, summarize_run, write_predictions

    names = ["a", "b"]
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    y = [0, 1, 1, 1]
    for k in (0, 1):
        fold = tmp_path / f"fold_{k}"
        fold.mkdir()
        m = {**compute_metrics(y, probs, names), "fold": k, "evaluated_on": "val"}
        (fold / "metrics.json").write_text(json.dumps(m))
        write_predictions(fold / "predictions.csv", [f"x{k}{i}.png" for i in range(4)], probs, names,
                          labels=[names[i] for i in y])
    for leaky in (False, True):
        (tmp_path / "splits.json").write_text(json.dumps({"method": "M", "leaky": leaky, "folds": []}))
        summary = summarize_run(tmp_path, names)
        assert summary["split"] == {"method": "M", "leaky": leaky}
        assert summary["aggregate"]["mean"]["accuracy"] == pytest.approx(0.75)  # 3 of 4 right in both folds
        assert format_summary(summary)[0].startswith("LEAKY split (M)") is leaky
