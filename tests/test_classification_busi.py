"""Real data: BUSI (``$NNUNETV2_MEDNEXT_SHARED/data/busi_256``). Skipped when it is absent."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import requires_shared_data, shared_data

from nnunetv2_mednext.classification.console import Console
from nnunetv2_mednext.classification.prepare import prepare

BUSI = shared_data("busi_256")
pytestmark = [pytest.mark.shared_data, requires_shared_data("busi_256")]


def test_busi_fingerprint_duplicates_and_grouped_folds(tmp_path: Path):
    con = Console(quiet=True)
    prep = prepare(BUSI, tmp_path, n_folds=5, console=con)
    fp = prep.fingerprint
    assert fp["n_images"] == 780
    assert fp["class_counts"] == {"benign": 437, "malignant": 210, "normal": 133}
    assert fp["image_size"]["most_common"] == {"size": [256, 256], "count": 780}
    pair = ["benign/benign (433).png", "malignant/malignant (145).png"]
    assert pair in fp["duplicates"]["exact_groups"]
    assert any(g["ids"] == pair and g["kind"] == "exact" for g in fp["duplicates"]["cross_class"])
    assert any("benign/benign (433).png [benign] == malignant/malignant (145).png [malignant]" in w
               for w in con.warnings)
    near = [set(g) for g in fp["duplicates"]["near_groups"]]
    assert len(near) > 50  # BUSI is known to hold many near-duplicates (docs/datasets.md)
    for f in prep.splits["folds"]:
        part = {i: k for k, ids in f.items() for i in ids}
        assert part[pair[0]] == part[pair[1]]
        for g in near:
            assert len({part[i] for i in g}) == 1
    (tmp_path / "drop").mkdir()
    shutil.copy(tmp_path / "fingerprint.json", tmp_path / "drop" / "fingerprint.json")  # reused: same files
    dropped = prepare(BUSI, tmp_path / "drop", duplicates="drop", console=Console(quiet=True))
    assert len(dropped.index) == 778 and {d["id"] for d in dropped.dropped} == set(pair)
