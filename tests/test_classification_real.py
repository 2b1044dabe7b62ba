"""Real data: the seed paper's classification sets, MSLD v1 and SARS-CoV-2 CT, as shipped in
``$NNUNETV2_MEDNEXT_SHARED/data/{msld,sars_cov2_ct}``. Skipped, saying why, when they are absent.

What is proven on the real files: the converters read the folders exactly as they are; the duplicate pairs and
MSLD's case prefixes land in one part of every fold of the leak-safe split (b); the near-duplicate grouping of the
CT slices does not chain the data into one group nor across classes; the image-level split (a) says it is leaky;
and MSLD goes convert -> fingerprint -> train -> predict -> evaluate through the CLI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from conftest import requires_shared_data, shared_data

from nnunetv2_mednext.classification.console import Console
from nnunetv2_mednext.classification.converters import convert
from nnunetv2_mednext.classification.prepare import prepare

MSLD = shared_data("msld")
SARS = shared_data("sars_cov2_ct")
pytestmark = pytest.mark.shared_data


def _parts(fold: dict) -> dict[str, str]:
    return {i: part for part, ids in fold.items() for i in ids}


def _name(sample_id: str) -> str:
    """``../x/original_images/Others/19_1.jpg`` -> ``Others/19_1.jpg``."""
    return "/".join(sample_id.split("/")[-2:])


def _prepared(layout: str, src: Path, tmp: Path, n: int, counts: dict[str, int]):
    """The real folder converted as shipped (``n`` images, ``counts``), fingerprinted and split kind (b)."""
    conv = convert(layout, src, tmp / "data")
    assert conv.n_images == n and conv.class_counts == counts
    con = Console(quiet=True)
    return conv, con, prepare(conv.csv_path, tmp / "b", split_mode="cv-test", console=con)


def _check_cv_test(prep, n_images: int) -> None:
    """Every image in exactly one test part; parts about 70:10:20; each leakage group in one part per fold."""
    folds = prep.splits["folds"]
    assert len(folds) == 5 and prep.splits["mode"] == "cv-test"
    tested = Counter(i for f in folds for i in f["test"])
    assert len(tested) == n_images and set(tested.values()) == {1}
    comps = prep.components
    for f in folds:
        assert set(f) == {"train", "val", "test"}
        share = {k: len(v) / n_images for k, v in f.items()}
        assert share["train"] == pytest.approx(0.7, abs=0.05) and share["val"] == pytest.approx(0.1, abs=0.03)
        assert share["test"] == pytest.approx(0.2, abs=0.03)
        part = _parts(f)
        owner: dict[int, set[str]] = defaultdict(set)
        for pos, s in enumerate(prep.index.samples):
            owner[int(comps[pos])].add(part[s.id])
        assert all(len(v) == 1 for v in owner.values())


@requires_shared_data("msld")
def test_msld_cases_and_duplicates_stay_in_one_part(tmp_path: Path):
    conv, con, prep = _prepared("msld", MSLD, tmp_path, 228, {"Monkeypox": 102, "Others": 126})
    fp = prep.fingerprint
    assert fp["color_mode"] == "rgb" and fp["image_size"]["most_common"] == {"size": [224, 224], "count": 228}
    exact = [sorted(_name(i) for i in g) for g in fp["duplicates"]["exact_groups"]]
    assert exact == [["Others/34_1.jpg", "Others/82_1.jpg"]]
    # the 64-bit hash linked j6_2 (Monkeypox) with Others/10 and Others/19_1: three different lesions (looked at);
    # the thumbnail test keeps them apart, so no group spans the classes and no warning is printed
    assert fp["duplicates"]["cross_class"] == [] and not con.warnings
    by_case: dict[str, set[str]] = defaultdict(set)
    for s in prep.index.samples:
        by_case[s.group].add(s.id)
    assert len(by_case) == 136 and all(s.group for s in prep.index.samples)
    names = {_name(i) for i in by_case["Others:19"]}
    assert names == {"Others/19.jpg", "Others/19_1.jpg", "Others/19_2.jpg"}
    assert {_name(i) for i in by_case["Monkeypox:P13"]} == {"Monkey_Pox/P13_1.jpg", "Monkey_Pox/P13_2.jpg"}
    _check_cv_test(prep, 228)
    for f in prep.splits["folds"]:  # the named groups directly, not only through the components
        part = _parts(f)
        for ids in by_case.values():
            assert len({part[i] for i in ids}) == 1
        assert len({part[i] for g in fp["duplicates"]["exact_groups"] for i in g}) == 1

    leaky = prepare(conv.csv_path, tmp_path / "a", split_mode="image-cv", console=(con := Console(quiet=True)))
    assert leaky.splits["leaky"] is True and "LEAKY" in leaky.splits["method"]
    assert any(w.startswith("leaky split by design") for w in con.warnings)
    crossing = sum(len({_parts(f)[i] for i in ids}) > 1 for f in leaky.splits["folds"] for ids in by_case.values())
    assert crossing > 0  # an image-level split does separate images of one case: that is what makes it leaky


@requires_shared_data("sars_cov2_ct")
def test_sarscov2_duplicates_grouped_without_chaining(tmp_path: Path):
    _, con, prep = _prepared("sarscov2", SARS, tmp_path, 2481, {"COVID": 1252, "non-COVID": 1229})
    fp = prep.fingerprint
    exact = sorted(sorted(_name(i) for i in g) for g in fp["duplicates"]["exact_groups"])
    assert exact == [["COVID/Covid (128).png", "COVID/Covid (129).png"],
                     ["COVID/Covid (134).png", "COVID/Covid (135).png"]]
    near = fp["duplicates"]["near_groups"]
    # the 64-bit hash chained 1,852 slices of both classes into one group; now: hundreds of small groups, none
    # across classes (a group across classes cannot be one patient)
    assert len(near) > 200 and max(len(g) for g in near) <= 25
    assert fp["duplicates"]["cross_class"] == []
    assert not [w for w in con.warnings if "group holds" in w]
    _check_cv_test(prep, 2481)
    assert not fp["patient_groups"]["column"] and "patient column" not in prep.splits["grouped_by"]


@requires_shared_data("msld")
def test_msld_through_the_cli(tmp_path: Path):
    """convert -> fingerprint -> split (b) -> train (one fold, tiny budget) -> predict -> evaluate, as a user would;
    predict on the fold's test images reproduces the fold's metrics."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg", "PYTHONWARNINGS": "ignore"}

    def cli(*args: str) -> str:
        proc = subprocess.run([sys.executable, "-m", "nnunetv2_mednext", "classify", *args], capture_output=True,
                              text=True, env=env, timeout=900)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return proc.stdout + proc.stderr

    data, run = tmp_path / "data", tmp_path / "run"
    cli("convert", "msld", str(MSLD), "-o", str(data))
    out = cli("fingerprint", str(data / "dataset.csv"), "-o", str(run))
    assert "228 images" in out and "0 groups span classes" in out
    cli("split", str(data / "dataset.csv"), "-o", str(run), "--split", "cv-test")
    split_text = (run / "splits.json").read_text()
    cli("train", str(data / "dataset.csv"), "-o", str(run), "--fold", "0", "--epochs", "2",
              "--warmup-epochs", "1", "--input-size", "48", "--batch-size", "16", "--color-jitter", "--quiet",
              "--model-kwargs", '{"dims": [16, 32, 48, 64], "depths": [1, 1, 1, 1]}')
    assert (run / "splits.json").read_text() == split_text  # train reused the split
    metrics = json.loads((run / "fold_0" / "metrics.json").read_text())
    split = json.loads((run / "splits.json").read_text())
    assert metrics["n"] == len(split["folds"][0]["test"])  # reported on the test part, chosen on val
    cli("predict", str(run / "fold_0" / "eval_set.csv"), "-m", str(run / "fold_0" / "checkpoint_best.pt"),
        "-o", str(tmp_path / "pred.csv"))
    cli("evaluate", str(tmp_path / "pred.csv"), "-o", str(tmp_path / "eval"))
    again = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert again["accuracy"] == pytest.approx(metrics["accuracy"], abs=1e-9)
    assert again["balanced_accuracy"] == pytest.approx(metrics["balanced_accuracy"], abs=1e-9)
