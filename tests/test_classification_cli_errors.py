"""User mistakes stop ``nnunetv2-mednext classify`` with exit code != 0 and one stderr line naming the problem."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from nnunetv2_mednext.classification.synthetic import make_shapes_dataset


def classify(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "nnunetv2_mednext", "classify", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=300)


def _assert_one_line_error(proc: subprocess.CompletedProcess, *words: str) -> None:
    assert proc.returncode != 0, proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert lines[0].startswith("nnunetv2-mednext classify: error:"), lines[0]
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert "fix:" in lines[0]


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return make_shapes_dataset(tmp_path / "data", n_per_class=3, size=16)


def test_corrupt_image(data: Path, tmp_path: Path):
    (data / "square" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    proc = classify("train", data, "-o", tmp_path / "run", "--epochs", "1")
    _assert_one_line_error(proc, "cannot read image", "broken.png")


def test_empty_class_folder(data: Path, tmp_path: Path):
    (data / "empty_class").mkdir()
    (data / "empty_class" / "readme.txt").write_text("no images here")
    proc = classify("train", data, "-o", tmp_path / "run")
    _assert_one_line_error(proc, "class folder 'empty_class'", "has no images")


def test_single_class_dataset(tmp_path: Path):
    data = make_shapes_dataset(tmp_path / "one", n_per_class=4, size=16, classes=("circle",))
    proc = classify("train", data, "-o", tmp_path / "run")
    _assert_one_line_error(proc, "only one class", "'circle'")


def test_csv_with_unknown_paths(data: Path, tmp_path: Path):
    csv = tmp_path / "labels.csv"
    csv.write_text("path,label\ndata/circle/circle_000.png,circle\ndata/square/missing.png,square\n"
                   "data/stripes/stripes_000.png,stripes\n")
    proc = classify("train", csv, "-o", tmp_path / "run")
    _assert_one_line_error(proc, "1 of 3 paths", "data/square/missing.png", "do not exist")


def test_other_mistakes(data: Path, tmp_path: Path):
    csv = tmp_path / "cols.csv"
    csv.write_text("file_name,diagnosis_code\na.png,1\n")
    _assert_one_line_error(classify("fingerprint", csv), "'path' and 'label'")
    _assert_one_line_error(classify("train", tmp_path / "nowhere", "-o", tmp_path / "r"), "does not exist")
    _assert_one_line_error(classify("predict", data, "-m", tmp_path / "none.pt", "-o", tmp_path / "p.csv"),
                           "checkpoint", "does not exist")
    not_ckpt = tmp_path / "fake.pt"
    not_ckpt.write_bytes(b"0123456789")
    _assert_one_line_error(classify("predict", data, "-m", not_ckpt, "-o", tmp_path / "p.csv"), "is corrupt or not a PyTorch file")
    _assert_one_line_error(classify("train", data, "-o", tmp_path / "r", "--model", "vgg99"), "unknown classifier")
    _assert_one_line_error(classify("convert", "msld", tmp_path, "-o", tmp_path / "c"), "Original Images")
    _assert_one_line_error(classify("split", data, "-o", tmp_path / "s"), "class 'circle' has only 3 images")
