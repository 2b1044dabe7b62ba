"""The hook's file diagnoses are keyed to the failing operation (read vs write) and the command, with real
tracebacks from the file helpers nnU-Net calls (batchgenerators' ``load_json`` / ``save_json``)."""

from __future__ import annotations

import errno
import sys
from pathlib import Path

import pytest
from batchgenerators.utilities.file_and_folder_operations import load_json, save_json

from nnunetv2_mednext.nnunet.file_errors import failing_operation, file_not_found_message
from nnunetv2_mednext.nnunet.friendly_errors import friendly_message


def _caught(fn, *args):  # type: ignore[no-untyped-def]
    try:
        fn(*args)
    except OSError as e:
        return e, sys.exc_info()[2]
    raise AssertionError("no error")


@pytest.fixture
def folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    raw, pre = tmp_path / "raw", tmp_path / "pre"
    (raw / "Dataset002_B").mkdir(parents=True)
    (raw / "Dataset002_B" / "dataset.json").write_text("{}")
    pre.mkdir()
    monkeypatch.setenv("nnUNet_raw", str(raw))
    monkeypatch.setenv("nnUNet_preprocessed", str(pre))
    return raw, pre


def test_operation_is_read_from_the_traceback(tmp_path: Path) -> None:
    _, tb = _caught(load_json, tmp_path / "nope.json")
    assert failing_operation(tb) == "read"
    _, tb = _caught(save_json, {}, tmp_path / "no_dir" / "x.json")
    assert failing_operation(tb) == "write"
    _, tb = _caught(open, tmp_path / "nope.json")  # a bare open(): nothing known
    assert failing_operation(tb) is None


def test_move_plans_into_a_dataset_without_fingerprint_names_extract_fingerprint(folders: tuple[Path, Path]) -> None:
    _, pre = folders
    exc, tb = _caught(save_json, {}, pre / "Dataset002_B" / "nnUNetPlans.json")
    argv = ["/x/bin/nnUNetv2_move_plans_between_datasets", "-s", "1", "-t", "2", "-sp", "nnUNetPlans"]
    line = friendly_message(exc, tb, argv)
    assert line is not None and "nnUNetv2_extract_fingerprint -d 2" in line and "plan_and_preprocess" not in line
    assert str(pre / "Dataset002_B") in line
    # the same write failing in another command: no guess, nnU-Net's traceback stands
    assert file_not_found_message(exc, tb, ["nnUNetv2_train", "2", "2d", "0"]) is None


def test_missing_plans_when_reading_names_planning_and_the_commands_flag(folders: tuple[Path, Path]) -> None:
    _, pre = folders
    (pre / "Dataset002_B").mkdir()
    exc, tb = _caught(load_json, pre / "Dataset002_B" / "nnUNetPlans_from1.json")
    train = friendly_message(exc, tb, ["nnUNetv2_train", "2", "2d", "0", "-p", "nnUNetPlans_from1"])
    assert train is not None and "nnUNetv2_plan_and_preprocess" in train and train.endswith("the right -p")
    prep = friendly_message(exc, tb, ["nnUNetv2_preprocess", "-d", "2", "-plans_name", "nnUNetPlans_from1"])
    assert prep is not None and prep.endswith("the right -plans_name")


def test_preprocess_without_dataset_json_names_the_copy(folders: tuple[Path, Path]) -> None:
    raw, pre = folders
    (pre / "Dataset002_B").mkdir()
    exc, tb = _caught(load_json, pre / "Dataset002_B" / "dataset.json")
    argv = ["nnUNetv2_preprocess", "-d", "2", "-plans_name", "nnUNetPlans_from1"]
    line = friendly_message(exc, tb, argv)
    assert line is not None and f"cp {raw / 'Dataset002_B' / 'dataset.json'} {pre / 'Dataset002_B'}/" in line
    (raw / "Dataset002_B" / "dataset.json").unlink()  # nothing to copy: no guess
    assert file_not_found_message(exc, tb, argv) is None


def test_permission_error_names_what_was_refused(tmp_path: Path) -> None:
    read = PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "plans.json"))
    try:
        load_json(tmp_path / "missing.json")
    except OSError:
        tb = sys.exc_info()[2]
    line = friendly_message(read, tb, ["nnUNetv2_train"])
    assert line is not None and line.startswith("cannot read") and "readable" in line
    rofs = OSError(errno.EROFS, "Read-only file system", str(tmp_path / "x"))
    assert friendly_message(rofs, None, ["nnUNetv2_train"]).startswith("cannot write")
    assert friendly_message(PermissionError(errno.EACCES, "Permission denied", "f"), None, ["x"]).startswith(
        "cannot access")
