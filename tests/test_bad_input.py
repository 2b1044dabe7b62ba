"""Hostile but realistic input to our own commands: one actionable line, exit code != 0, nothing lost or overwritten.

Each case comes from a user trial (issue #10); the nnU-Net command cases are in ``test_bad_input_nnunet.py``.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunetv2_mednext.classification.synthetic import make_shapes_dataset
from nnunetv2_mednext.errors import MedNeXtUserError
from nnunetv2_mednext.fsutil import exclusive_lock
from nnunetv2_mednext.image_io import check_complete, read_image

TINY = json.dumps({"dims": [8, 16, 24, 32], "depths": [1, 1, 1, 1]})


def cli(*args: object, cwd: Path | None = None, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nnunetv2_mednext", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, **(env or {})}, timeout=timeout)


def one_line_error(proc: subprocess.CompletedProcess, *words: str) -> str:
    """The single stderr line of a refused command; checks exit code, no traceback, the words and a fix."""
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr[-3000:]
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert "fix" in lines[0], lines[0]
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def write_nii(path: Path, array: np.ndarray, spacing=(1.0, 1.0, 1.0)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = sitk.GetImageFromArray(array)
    img.SetSpacing(spacing)
    sitk.WriteImage(img, str(path), True)
    return path


def truncate(path: Path, fraction: float = 0.8) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


# ---------------------------------------------------------------------------------------------------- image files
def test_truncated_nifti_is_detected_gz_and_plain(tmp_path: Path) -> None:
    vol = np.random.default_rng(0).normal(size=(8, 24, 24)).astype(np.float32)
    good = write_nii(tmp_path / "good.nii.gz", vol)
    check_complete(good)
    assert np.allclose(sitk.GetArrayFromImage(read_image(good)), vol)
    cut = write_nii(tmp_path / "cut.nii.gz", vol)
    truncate(cut)
    # ITK alone reads on and fills the missing part with zeros: that is what the check exists for
    with pytest.raises(MedNeXtUserError, match=r"cut\.nii\.gz is truncated .*fix"):
        read_image(cut)
    plain = tmp_path / "plain.nii"
    plain.write_bytes(gzip.decompress(good.read_bytes()))
    check_complete(plain)
    truncate(plain, 0.9)
    with pytest.raises(MedNeXtUserError, match=r"plain\.nii is truncated: its header announces (\d+) bytes"):
        check_complete(plain)
    (tmp_path / "junk.nii.gz").write_bytes(b"not gzip at all")
    with pytest.raises(MedNeXtUserError, match="not a readable NIfTI"):
        check_complete(tmp_path / "junk.nii.gz")


def test_evaluate_refuses_a_truncated_prediction(tmp_path: Path) -> None:
    label = np.zeros((8, 24, 24), np.uint8)
    label[2:6, 4:20, 4:20] = 1
    write_nii(tmp_path / "gt" / "case.nii.gz", label)
    pred = write_nii(tmp_path / "pred" / "case.nii.gz", label)
    truncate(pred)
    line = one_line_error(cli("evaluate", tmp_path / "gt", tmp_path / "pred", "--no-hd95"), "case.nii.gz", "truncated")
    assert "pred" in line


# ---------------------------------------------------------------------------------------------------- evaluation
def _label_pair(tmp_path: Path, pred_values: tuple[int, ...]) -> None:
    gt = np.zeros((4, 16, 16), np.uint8)
    gt[1:3, 2:8, 2:8], gt[1:3, 9:14, 9:14] = 1, 2
    pred = gt.copy()
    for v in pred_values:
        pred[0, :2, :2] = v
    write_nii(tmp_path / "gt" / "a.nii.gz", gt)
    write_nii(tmp_path / "pred" / "a.nii.gz", pred)


def test_evaluate_refuses_labels_it_would_silently_ignore(tmp_path: Path) -> None:
    _label_pair(tmp_path, (5,))
    one_line_error(cli("evaluate", tmp_path / "gt", tmp_path / "pred", "--no-hd95"), "contains label value(s) [5]")
    _label_pair(tmp_path, ())
    one_line_error(cli("evaluate", tmp_path / "gt", tmp_path / "pred", "--no-hd95", "--labels", "1", "7"),
                   "--labels [7] occur in no reference")
    ok = cli("evaluate", tmp_path / "gt", tmp_path / "pred", "--no-hd95", "--labels", "1", "2")
    assert ok.returncode == 0, ok.stderr


def test_evaluate_unwritable_report_folder_is_one_line(tmp_path: Path, confined) -> None:
    _label_pair(tmp_path, ())
    out = tmp_path / "report"
    cmd = [sys.executable, "-m", "nnunetv2_mednext", "evaluate", tmp_path / "gt", tmp_path / "pred", "--no-hd95",
           "-o", out]
    proc = confined(cmd, out, mode="ro")
    one_line_error(proc, "cannot write", "Read-only file system")


# ---------------------------------------------------------------------------------------------------- conversion
def _msd_task(root: Path, n: int = 3) -> Path:
    rng = np.random.default_rng(0)
    for i in range(n):
        lab = np.zeros((6, 12, 12), np.uint8)
        lab[2:4, 3:8, 3:8] = 1
        write_nii(root / "imagesTr" / f"hippo_{i:03d}.nii.gz", rng.normal(size=lab.shape).astype(np.float32))
        write_nii(root / "labelsTr" / f"hippo_{i:03d}.nii.gz", lab)
    return root


def test_convert_refuses_a_source_inside_the_target_and_keeps_it(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    target = raw / "Dataset007_Hippo"
    src = _msd_task(target)  # the user points SRC at the dataset folder the conversion would replace
    before = snapshot(target)
    one_line_error(cli("convert", "msd", src, "--out", raw, "--id", 7, "--name", "Hippo", "--overwrite"),
                   "overlap", "would delete the source")
    assert snapshot(target) == before
    nested = _msd_task(target / "source_copy")
    before = snapshot(target)
    one_line_error(cli("convert", "msd", nested, "--out", raw, "--id", 7, "--name", "Hippo", "--overwrite"), "overlap")
    assert snapshot(target) == before


def test_convert_overwrite_keeps_the_old_dataset_when_the_new_copy_fails(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    src = _msd_task(tmp_path / "Task04_Hippocampus")
    assert cli("convert", "msd", src, "--out", raw, "--id", 4, "-q").returncode == 0
    before = snapshot(raw)
    truncate(src / "labelsTr" / "hippo_002.nii.gz")
    one_line_error(cli("convert", "msd", src, "--out", raw, "--id", 4, "--overwrite"), "hippo_002.nii.gz", "truncated")
    assert snapshot(raw) == before  # nothing deleted, no half-written copy left beside it
    assert sorted(p.name for p in raw.iterdir()) == sorted({Path(k).parts[0] for k in before})


def test_concurrent_convert_is_refused(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    src = _msd_task(tmp_path / "Task04_Hippocampus")
    with exclusive_lock(raw / "Dataset004_Hippocampus", "dataset folder"):
        one_line_error(cli("convert", "msd", src, "--out", raw, "--id", 4), "another process", "is writing")
    assert cli("convert", "msd", src, "--out", raw, "--id", 4, "-q").returncode == 0  # released on exit


# ---------------------------------------------------------------------------------------------------- classification
@pytest.fixture
def shapes(tmp_path: Path) -> Path:
    return make_shapes_dataset(tmp_path / "data", n_per_class=4, size=16, seed=3)


def _train(data: Path, out: Path, *extra: object, **kw) -> subprocess.CompletedProcess:
    return cli("classify", "train", data, "-o", out, "--epochs", 1, "--input-size", 16, "--batch-size", 4,
               "--warmup-epochs", 0, "--model-kwargs", TINY, "--quiet", *extra, **kw)


def test_concurrent_classify_train_is_refused(shapes: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    with exclusive_lock(out, "classification run"):
        one_line_error(_train(shapes, out, "--folds", 2), "another process", "is writing the classification run")
    assert not (out / "fingerprint.json").exists()


def test_classify_two_real_processes_one_wins(shapes: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    base = [sys.executable, "-m", "nnunetv2_mednext", "classify", "train", str(shapes), "-o", str(out), "--folds", "2",
            "--epochs", "100", "--input-size", "32", "--batch-size", "4", "--warmup-epochs", "0", "--model-kwargs", TINY,
            "--quiet"]
    first = subprocess.Popen(base, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / "fingerprint.json").exists() and first.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    second = subprocess.run(base, capture_output=True, text=True)
    _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    one_line_error(second, "is writing the classification run")


def test_stale_splits_are_never_reused_silently(shapes: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert _train(shapes, out, "--folds", 2).returncode == 0
    fingerprint = (out / "fingerprint.json").read_bytes()
    one_line_error(_train(shapes, out, "--folds", 3, "--resume"), "made with --folds 2", "asks for --folds 3")
    # the old advice (delete splits.json) plus --resume would have averaged folds of two splits
    (out / "splits.json").unlink()
    one_line_error(_train(shapes, out, "--folds", 3, "--resume"), "another split")
    other = make_shapes_dataset(tmp_path / "other", n_per_class=4, size=16, seed=99)
    one_line_error(_train(other, out, "--folds", 2, "--resume"), "holds a run on other data")
    assert (out / "fingerprint.json").read_bytes() == fingerprint  # refused runs rewrite nothing
    assert _train(shapes, out, "--resume").returncode != 0 or (out / "summary.json").exists()


@pytest.mark.parametrize(("args", "words"), [
    (["--model-kwargs", '{"dims": [8, 16, 24, 32], "depths": [1, 1, 1]}'], ["bad --model-kwargs", "same length"]),
    (["--model-kwargs", '{"dimz": [8]}'], ["bad --model-kwargs", "dimz"]),
    (["--folds", "1"], ["--folds must be >= 2", "--split holdout"]),
])
def test_classify_train_option_mistakes(shapes: Path, tmp_path: Path, args: list[str], words: list[str]) -> None:
    proc = cli("classify", "train", shapes, "-o", tmp_path / "run", "--epochs", 1, *args)
    one_line_error(proc, *words)
    assert not (tmp_path / "run" / "fingerprint.json").exists()


def test_fix_hints_are_not_circular(tmp_path: Path) -> None:
    data = make_shapes_dataset(tmp_path / "data", n_per_class=4, size=16)
    make_shapes_dataset(tmp_path / "rare_src", n_per_class=1, size=16, seed=11, classes=("stripes",))
    shutil.copytree(tmp_path / "rare_src" / "stripes", data / "rare")
    line = one_line_error(cli("classify", "split", data, "-o", tmp_path / "s"), "class 'rare' has only 1 image")
    assert "--folds" not in line and "add images of 'rare'" in line
    small = make_shapes_dataset(tmp_path / "small", n_per_class=4, size=16)
    line = one_line_error(cli("classify", "split", small, "-o", tmp_path / "h", "--split", "holdout"), "hold-out")
    assert "--split cv --folds 4" in line  # the way out, not back to --folds 1


def test_corrupt_and_empty_checkpoints_say_what_to_do(shapes: Path, tmp_path: Path) -> None:
    empty = tmp_path / "checkpoint_final.pt"
    empty.write_bytes(b"")
    line = one_line_error(cli("classify", "predict", shapes, "-m", empty, "-o", tmp_path / "p.csv"), "is empty (0 bytes)")
    assert "()" not in line and "re-copy" in line
    bad = tmp_path / "checkpoint_best.pt"
    bad.write_bytes(b"PK\x03\x04 broken zip")
    line = one_line_error(cli("classify", "predict", shapes, "-m", bad, "-o", tmp_path / "p.csv"), "corrupt")
    assert "pass a checkpoint" not in line


def test_classify_read_only_output_is_one_line(shapes: Path, tmp_path: Path, confined) -> None:
    out = tmp_path / "ro_run"
    cmd = [sys.executable, "-m", "nnunetv2_mednext", "classify", "train", shapes, "-o", out, "--epochs", "1",
           "--input-size", "16", "--model-kwargs", TINY, "--folds", "2", "--quiet"]
    one_line_error(confined(cmd, out, mode="ro"), "cannot write", "Read-only file system")


def test_classify_full_disk_is_one_line_and_leaves_no_partial_file(shapes: Path, tmp_path: Path, confined) -> None:
    out = tmp_path / "full_run"
    cmd = [sys.executable, "-m", "nnunetv2_mednext", "classify", "train", shapes, "-o", out, "--epochs", "1",
           "--input-size", "16", "--batch-size", "4", "--warmup-epochs", "0", "--model-kwargs", TINY, "--folds", "2",
           "--quiet"]
    proc = confined(cmd, out, mode="full", size=48 * 1024)
    one_line_error(proc, "disk is full")
    listing = proc.stdout.strip().splitlines()[-1]
    assert listing.startswith("LS:") and ".tmp" not in listing, listing


# ---------------------------------------------------------------------------------------------------- demo
def test_demo_refuses_existing_results_and_unknown_trainers_before_any_work(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "demo_results.md").write_text("earlier results")
    one_line_error(cli("demo", "--workdir", "d", cwd=tmp_path), "already holds demo results", "demo_results.md")
    start = time.perf_counter()
    line = one_line_error(cli("demo", "--workdir", "d2", "--trainers", "nnUNetTrainerMedNext_budget", cwd=tmp_path),
                          "unknown trainer", "did you mean nnUNetTrainerMedNeXt_budget")
    assert time.perf_counter() - start < 60 and "nnUNetTrainerMedNext_budget" in line
    assert not (tmp_path / "d2" / "nnUNet_raw").exists()
    # a demo already running in the folder holds its lock: a second one is refused at once and touches nothing
    (tmp_path / "d3").mkdir()
    with exclusive_lock(tmp_path / "d3", "demo folder"):
        one_line_error(cli("demo", "--workdir", "d3", cwd=tmp_path), "another process", "is writing")
    assert sorted(p.name for p in (tmp_path / "d3").iterdir() if not p.name.startswith(".")) == []
