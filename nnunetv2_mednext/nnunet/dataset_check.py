"""Checks of nnU-Net raw data and predict inputs that name the file and the fix, asking nnU-Net how it reads them.

Channels are counted the way nnU-Net counts them: the reader/writer nnU-Net picks for the dataset
(``overwrite_image_reader_writer``, else by ``file_ending`` and a first file it can open; for prediction the one the
plans name) reads a case and its first axis is the channel count. An RGB PNG is one file with three channels, a 4D
NIfTI one file with several, a multi-modal NIfTI case several files with one each. Only the first case is read unless
``full`` (then every case, as nnU-Net's own ``--verify_dataset_integrity`` does); the other cases must carry the same
channel files as the first.

Every check refuses only what stock nnU-Net refuses or mis-handles too (``docs/nnunet.md``, "Guards"):

* :func:`check_raw_dataset` -- ``dataset.json``, ``CASE_XXXX`` names, one label per case, channels per case; with
  ``full=True`` also complete NIfTI files, declared label values, ``numTraining`` and some foreground. Run by
  ``nnunetv2-mednext plan_and_preprocess`` (``full`` with ``--verify_dataset_integrity``) and, after a stock command
  failed, by the exception hook (``friendly_errors``), which prints a finding only when it explains that failure.
* :func:`check_prediction_inputs` -- an ``nnUNetv2_predict -i`` folder against the model (hook only).

Problems are raised as :class:`DataProblemError`, which carries what the hook needs to tell whether the problem explains
an exception: the files it is about, the case ids nnU-Net derives from misnamed files, the channel counts.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from nnunetv2_mednext.errors import MedNeXtUserError

_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")
_T = TypeVar("_T")


class DataProblemError(MedNeXtUserError):
    """A data problem (one line with the fix) and what identifies it in an nnU-Net failure.

    ``paths``: files or folders it is about; ``derived``: names that exist only because of the problem (the case id
    and label path nnU-Net makes up for a misnamed file); ``channels``: ``(expected, read)`` for a channel mismatch;
    ``signature``: ``(nnunetv2 module suffix, message regex)`` of the stock failure it causes where that failure names
    nothing (e.g. statistics over zero foreground voxels).
    """

    def __init__(self, message: str, paths: Iterable[str | os.PathLike] = (), derived: Iterable[str] = (),
                 channels: tuple[int, int] | None = None, signature: tuple[str, str] | None = None) -> None:
        super().__init__(message)
        self.paths = frozenset(os.path.abspath(p) for p in paths)
        self.derived = frozenset(derived)
        self.channels = channels
        self.signature = signature


def _quiet(fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
    """Call ``fn`` with its prints (nnU-Net's readers print warnings and tracebacks of fallbacks) swallowed."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return fn(*args, **kwargs)


# ------------------------------------------------------------------------------------------------ nnU-Net's readers
def reader_for_dataset(dataset_json: dict, example_file: str | os.PathLike) -> type:
    """The reader/writer class nnU-Net's planning picks for ``dataset_json`` with ``example_file`` as first image."""
    from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json

    try:
        return _quiet(determine_reader_writer_from_dataset_json, dataset_json, str(example_file), verbose=False)
    except RuntimeError as e:
        raise DataProblemError(
            f"nnU-Net has no reader that opens {example_file} (file_ending {dataset_json.get('file_ending')!r}: "
            f"{' '.join(str(e).split())[:160]}); fix: use a format nnU-Net reads (.nii.gz, .nrrd, .mha, .png, .bmp, "
            ".tif) and check the file", paths=[example_file]) from None


def reader_from_plans(plans: dict, dataset_json: dict, example_file: str | os.PathLike) -> type:
    """The reader/writer class nnU-Net's predictor uses: the one the plans name (planning's choice)."""
    name = plans.get("image_reader_writer")
    if name:
        from nnunetv2.imageio.reader_writer_registry import recursive_find_reader_writer_by_name

        with contextlib.suppress(RuntimeError):
            return _quiet(recursive_find_reader_writer_by_name, name)
    return reader_for_dataset(dataset_json, example_file)


def read_channels(reader: type, files: Sequence[str | os.PathLike]) -> int:
    """Channels nnU-Net's ``reader`` reads from the image files of one case (the first axis of its array)."""
    try:
        data, _ = _quiet(reader().read_images, [str(f) for f in files])
    except Exception as e:  # any reader failure: nnU-Net fails on the same file
        reason = " ".join(str(e).split())[:160] or type(e).__name__
        raise DataProblemError(f"nnU-Net's {reader.__name__} cannot read {', '.join(map(str, files))} ({reason}); "
                               "fix: check or re-export the file(s)", paths=files) from None
    return int(data.shape[0])


# --------------------------------------------------------------------------------------------- names and channels
def group_channels(folder: Path, file_ending: str) -> tuple[dict[str, list[int]], list[str]]:
    """``{case: [channel indices]}`` of the ``CASE_XXXX<ending>`` files in ``folder``, plus files without a suffix.

    Lists files as nnU-Net does (every file whose name ends with ``file_ending``, case-sensitive).
    """
    cases: dict[str, list[int]] = defaultdict(list)
    unsuffixed = []
    for p in sorted(folder.iterdir()):
        if not p.is_file() or not p.name.endswith(file_ending):
            continue
        m = _CHANNEL.match(p.name[: -len(file_ending)])
        if m is None:
            unsuffixed.append(p.name)
        else:
            cases[m["case"]].append(int(m["channel"]))
    return {c: sorted(v) for c, v in cases.items()}, unsuffixed


def _suffixes(channels: Iterable[int]) -> str:
    return ", ".join(f"_{c:04d}" for c in channels)


def case_files(folder: Path, case: str, channels: Iterable[int], file_ending: str) -> list[Path]:
    return [folder / f"{case}_{c:04d}{file_ending}" for c in channels]


def check_case_names(folder: Path, file_ending: str, where: str, labels: Path | None = None) -> dict[str, list[int]]:
    """Every image file has a ``_XXXX`` channel suffix; returns ``{case: [channel indices]}``.

    nnU-Net cuts the last 5 characters before the ending off every file name to get case ids, so a file without a
    suffix becomes a made-up case with no image files (an ``IndexError`` or assertion deep inside).
    """
    cases, unsuffixed = group_channels(folder, file_ending)
    if unsuffixed:
        name = unsuffixed[0]
        stem = name[: -len(file_ending)]
        made_up = name[: -(len(file_ending) + 5)]
        derived = {made_up} | ({str((labels / f"{made_up}{file_ending}").absolute())} if labels else set())
        raise DataProblemError(
            f"{folder / name} has no channel suffix ({len(unsuffixed)} such file(s) in {where}); fix: name image files "
            f"CASE_XXXX{file_ending} (_0000 for the first channel file of a case), e.g. {stem}_0000{file_ending}",
            paths=[folder / name, folder], derived=derived)
    return cases


def check_same_channel_files(folder: Path, cases: dict[str, list[int]], file_ending: str, reference: str) -> None:
    """Every case has the channel files of ``reference`` (a case whose channels were read and found right).

    nnU-Net stacks whatever ``CASE_XXXX`` files a case has in suffix order: a case with fewer files gets fewer
    channels (a crash later on), one with other suffixes gets its channels silently mixed up.
    """
    want = cases[reference]
    for case, channels in sorted(cases.items()):
        if channels != want:
            raise DataProblemError(
                f"case {case} in {folder} has channel file(s) {_suffixes(channels)} but case {reference} has "
                f"{_suffixes(want)}; fix: give every case the same channel files (nnU-Net stacks them in suffix order)",
                paths=case_files(folder, case, channels, file_ending))


def _channel_fix(reader: type, files: Sequence[Path], expected: int, got: int) -> str:
    """How the files of a case must look for ``expected`` channels with this reader."""
    per_file = read_channels(reader, files[:1]) if len(files) > 1 else got
    if per_file and expected % per_file == 0:
        n = expected // per_file
        names = f"_0000 .. _{n - 1:04d}" if n > 1 else "_0000 only"
        return (f"give every case {n} file(s) ({names}) of {per_file} channel(s) each, as nnU-Net's "
                f"{reader.__name__} reads them")
    return f"give every case files that add up to {expected} channel(s) as nnU-Net's {reader.__name__} reads them"


def check_channels(reader: type, files_of: dict[str, list[Path]], expected: int, what: str,
                   every_case: bool = False, dataset_fix: bool = False) -> None:
    """The first case (every case if ``every_case``) reads as ``expected`` channels with nnU-Net's ``reader``."""
    for case in sorted(files_of)[: None if every_case else 1]:
        files = files_of[case]
        got = read_channels(reader, files)
        if got != expected:
            fix = _channel_fix(reader, files, expected, got)
            if dataset_fix:
                fix = f"list {got} channel(s) in channel_names of dataset.json, or {fix}"
            raise DataProblemError(
                f"case {case} in {files[0].parent} reads as {got} channel(s) with nnU-Net's {reader.__name__} "
                f"({', '.join(f.name for f in files)}) but {what} has {expected}; fix: {fix}",
                paths=files, channels=(expected, got))


# ------------------------------------------------------------------------------------------------------ raw data
def load_dataset_json(folder: Path) -> dict:
    path = folder / "dataset.json"
    if not path.is_file():
        raise DataProblemError(f"{path} is missing; fix: write one (channel_names, labels, numTraining, file_ending)",
                               paths=[path])
    try:
        info = json.loads(path.read_text())
    except ValueError as e:
        raise DataProblemError(f"{path} is not valid JSON ({e}); fix: repair the file", paths=[path]) from None
    missing = [k for k in ("channel_names", "labels", "numTraining", "file_ending") if k not in info]
    if missing:
        raise DataProblemError(f"{path} lacks {', '.join(missing)}; fix: add them (see nnU-Net's dataset_format.md)",
                               paths=[path])
    return info


def _label_values(labels: dict) -> set[int]:
    values: set[int] = set()
    for v in labels.values():
        values.update([v] if isinstance(v, int) else [int(x) for x in v])
    return values


def _explicit_cases(folder: Path, info: dict) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Cases of a ``dataset.json`` that lists its files (``"dataset"`` key), resolved by nnU-Net itself."""
    from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets

    listed = get_filenames_of_train_images_and_targets(str(folder), json.loads(json.dumps(info)))
    for case, entry in listed.items():
        for f in [*entry["images"], entry["label"]]:
            if not os.path.isfile(f):
                raise DataProblemError(f"case {case} of {folder / 'dataset.json'} names {f}, which does not exist; "
                                       "fix: correct the path in dataset.json or add the file", paths=[f])
    return {c: e["images"] for c, e in listed.items()}, {c: e["label"] for c, e in listed.items()}


def check_raw_dataset(folder: str | Path, full: bool = False) -> None:
    """Raise :class:`DataProblemError` on the first problem of the raw dataset ``folder`` (see module doc)."""
    folder = Path(folder)
    info = load_dataset_json(folder)
    ending = str(info["file_ending"])
    n_channels = len(info["channel_names"])
    if "dataset" in info:
        images_of, label_of = _explicit_cases(folder, info)
    else:
        images, labels = folder / "imagesTr", folder / "labelsTr"
        for sub in (images, labels):
            if not sub.is_dir():
                raise DataProblemError(f"{sub} does not exist; fix: put the training images and labels there",
                                       paths=[sub])
        cases = check_case_names(images, ending, "imagesTr", labels)
        images_of = {c: [str(f) for f in case_files(images, c, ch, ending)] for c, ch in cases.items()}
        label_of = {c: str(labels / f"{c}{ending}") for c in cases}
        no_label = sorted(c for c, f in label_of.items() if not os.path.isfile(f))
        if no_label:
            raise DataProblemError(f"case {no_label[0]} in imagesTr has no label {label_of[no_label[0]]} "
                                   f"({len(no_label)} case(s) without a label); fix: add the labels or remove the "
                                   "images", paths=[label_of[no_label[0]], *images_of[no_label[0]]])
    if not images_of:
        raise DataProblemError(f"no training images *_0000{ending} in {folder / 'imagesTr'}; fix: put the cases there "
                               "(or check file_ending in dataset.json)", paths=[folder / "imagesTr"])
    first = sorted(images_of)[0]
    reader = reader_for_dataset(info, images_of[first][0])
    files_of = {c: [Path(f) for f in v] for c, v in images_of.items()}
    check_channels(reader, files_of, n_channels, "dataset.json (channel_names)", dataset_fix=True)
    if "dataset" not in info:
        check_same_channel_files(folder / "imagesTr", cases, ending, first)
    if not full:
        return
    check_channels(reader, files_of, n_channels, "dataset.json (channel_names)", every_case=True, dataset_fix=True)
    if int(info["numTraining"]) != len(images_of):
        raise DataProblemError(f"{folder / 'dataset.json'} says numTraining {info['numTraining']} but there are "
                               f"{len(images_of)} training cases; fix: set numTraining to {len(images_of)}",
                               paths=[folder / "dataset.json"])
    from nnunetv2_mednext.image_io import check_complete

    declared = _label_values(info["labels"])
    any_foreground = False
    for case in sorted(images_of):
        for f in images_of[case]:
            _as_problem(check_complete, f)
        values = _read_label_values(reader, label_of[case])
        undeclared = sorted(values - declared)
        if undeclared:
            raise DataProblemError(f"{label_of[case]} holds label value(s) {undeclared} that dataset.json does not "
                                   f"declare (declared: {sorted(declared)}); fix: relabel the file or add the labels",
                                   paths=[label_of[case]])
        any_foreground = any_foreground or bool(values - {0, info["labels"].get("ignore", -1)})
    if not any_foreground:
        raise DataProblemError(f"every label map in {Path(label_of[first]).parent} is empty (background only): there "
                               "is nothing to learn; fix: check the label files (values must be the ones dataset.json "
                               "declares)", signature=("fingerprint_extractor", r"size 0|empty"))


def _as_problem(check: Callable[[str], None], path: str) -> None:
    """Run an ``image_io`` check; its one-line error becomes a :class:`DataProblemError` about ``path``."""
    try:
        check(path)
    except DataProblemError:
        raise
    except MedNeXtUserError as e:
        raise DataProblemError(str(e), paths=[path]) from None


def _read_label_values(reader: type, path: str) -> set[int]:
    """Label values of ``path`` as nnU-Net's ``reader`` reads the segmentation."""
    import numpy as np

    from nnunetv2_mednext.image_io import check_complete

    _as_problem(check_complete, path)
    try:
        seg, _ = _quiet(reader().read_seg, path)
    except Exception as e:  # nnU-Net fails on the same file
        reason = " ".join(str(e).split())[:160] or type(e).__name__
        raise DataProblemError(f"nnU-Net's {reader.__name__} cannot read label {path} ({reason}); fix: re-export the "
                               "file", paths=[path]) from None
    return {int(v) for v in np.unique(seg)}


# ---------------------------------------------------------------------------------------------- predict inputs
def check_prediction_inputs(folder: str | Path, dataset_json: dict, plans: dict | None = None) -> None:
    """``nnUNetv2_predict -i`` folder against the model's ``dataset.json`` (and ``plans``: nnU-Net's reader)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataProblemError(f"input folder {folder} does not exist; fix: pass the folder with the images (-i)",
                               paths=[folder])
    ending = str(dataset_json["file_ending"])
    cases = check_case_names(folder, ending, "the input folder")
    if not cases:
        return  # nnU-Net predicts nothing and says so
    first = sorted(cases)[0]
    reader = reader_from_plans(plans or {}, dataset_json, case_files(folder, first, cases[first], ending)[0])
    n = len(dataset_json["channel_names"])
    names = ", ".join(str(v) for v in dataset_json["channel_names"].values())
    check_channels(reader, {c: case_files(folder, c, ch, ending) for c, ch in cases.items()}, n,
                   f"the model ({names})")
    check_same_channel_files(folder, cases, ending, first)
