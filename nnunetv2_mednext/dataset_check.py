"""Checks of nnU-Net raw data that name the file and the fix, before nnU-Net fails deep inside (or reads on).

* :func:`check_raw_dataset` -- ``dataset.json``, file naming (``CASE_XXXX`` channel suffixes), one label per case,
  and with ``full=True`` complete files (truncated NIfTI), label values declared in ``dataset.json`` and at least one
  foreground voxel in the whole set. Run by ``nnunetv2-mednext plan_and_preprocess`` (``full`` with
  ``--verify_dataset_integrity``) and after a failed ``nnUNetv2_plan_and_preprocess`` to explain the failure.
* :func:`check_prediction_inputs` -- an ``nnUNetv2_predict -i`` folder against the model's channel count.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from nnunetv2_mednext.errors import MedNeXtUserError

_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")
IMAGE_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".mha", ".png", ".bmp", ".tif", ".tiff", ".jpg", ".jpeg")


def _ending(name: str, endings: Iterable[str] = IMAGE_ENDINGS) -> str | None:
    low = name.lower()
    return next((e for e in sorted(endings, key=len, reverse=True) if low.endswith(e)), None)


def group_channels(folder: Path, file_ending: str) -> tuple[dict[str, list[int]], list[str]]:
    """``{case: [channel indices]}`` of the ``CASE_XXXX<ending>`` files in ``folder``, plus files without a suffix."""
    cases: dict[str, list[int]] = defaultdict(list)
    unsuffixed = []
    for p in sorted(folder.iterdir()):
        if not p.is_file() or p.name.startswith(".") or not p.name.lower().endswith(file_ending.lower()):
            continue
        m = _CHANNEL.match(p.name[: -len(file_ending)])
        if m is None:
            unsuffixed.append(p.name)
        else:
            cases[m["case"]].append(int(m["channel"]))
    return dict(cases), unsuffixed


def _check_channels(folder: Path, file_ending: str, n_channels: int, where: str) -> dict[str, list[int]]:
    cases, unsuffixed = group_channels(folder, file_ending)
    if unsuffixed:
        name = unsuffixed[0]
        stem = name[: -len(file_ending)]
        raise MedNeXtUserError(
            f"{folder / name} has no channel suffix ({len(unsuffixed)} such file(s) in {where}); fix: name image files "
            f"CASE_XXXX{file_ending}, one per channel, e.g. {stem}_0000{file_ending}"
        )
    wanted = list(range(n_channels))
    for case, channels in cases.items():
        if sorted(channels) != wanted:
            have = ", ".join(f"_{c:04d}" for c in sorted(channels))
            raise MedNeXtUserError(
                f"case {case} in {folder} has channel file(s) {have} but the model/dataset has {n_channels} channel(s) "
                f"(_0000{f' .. _{n_channels - 1:04d}' if n_channels > 1 else ''}); fix: give every case exactly "
                "those files"
            )
    return cases


def load_dataset_json(folder: Path) -> dict:
    path = folder / "dataset.json"
    if not path.is_file():
        raise MedNeXtUserError(f"{path} is missing; fix: write one (channel_names, labels, numTraining, file_ending)")
    try:
        info = json.loads(path.read_text())
    except ValueError as e:
        raise MedNeXtUserError(f"{path} is not valid JSON ({e}); fix: repair the file") from None
    missing = [k for k in ("channel_names", "labels", "numTraining", "file_ending") if k not in info]
    if missing:
        raise MedNeXtUserError(f"{path} lacks {', '.join(missing)}; fix: add them (see nnU-Net's dataset_format.md)")
    return info


def _label_values(labels: dict) -> set[int]:
    values: set[int] = set()
    for v in labels.values():
        values.update([v] if isinstance(v, int) else [int(x) for x in v])
    return values


def check_raw_dataset(folder: str | Path, full: bool = False) -> None:
    """Raise :class:`MedNeXtUserError` on the first problem of the raw dataset ``folder`` (see module doc)."""
    folder = Path(folder)
    info = load_dataset_json(folder)
    ending = str(info["file_ending"])
    n_channels = len(info["channel_names"])
    images, labels = folder / "imagesTr", folder / "labelsTr"
    for sub in (images, labels):
        if not sub.is_dir():
            raise MedNeXtUserError(f"{sub} does not exist; fix: put the training images and labels there")
    cases = _check_channels(images, ending, n_channels, "imagesTr")
    label_files = {p.name[: -len(ending)]: p for p in labels.iterdir()
                   if p.is_file() and not p.name.startswith(".") and p.name.lower().endswith(ending.lower())}
    no_label = sorted(set(cases) - set(label_files))
    if no_label:
        raise MedNeXtUserError(f"case {no_label[0]} in imagesTr has no label {labels / (no_label[0] + ending)} "
                               f"({len(no_label)} case(s) without a label); fix: add the labels or remove the images")
    no_image = sorted(set(label_files) - set(cases))
    if no_image:
        raise MedNeXtUserError(f"label {label_files[no_image[0]]} has no image {images / (no_image[0] + '_0000' + ending)}"
                               f" ({len(no_image)} label(s) without an image); fix: add the images or remove the labels")
    if "dataset" not in info and int(info["numTraining"]) != len(cases):
        raise MedNeXtUserError(f"{folder / 'dataset.json'} says numTraining {info['numTraining']} but imagesTr holds "
                               f"{len(cases)} cases; fix: set numTraining to {len(cases)}")
    if not full:
        return
    from nnunetv2_mednext.image_io import check_complete

    declared = _label_values(info["labels"])
    any_foreground = False
    for case in sorted(cases):
        for c in sorted(cases[case]):
            check_complete(images / f"{case}_{c:04d}{ending}")
        values = _read_label_values(label_files[case])
        undeclared = sorted(values - declared)
        if undeclared:
            raise MedNeXtUserError(f"{label_files[case]} holds label value(s) {undeclared} that dataset.json does not "
                                   f"declare (declared: {sorted(declared)}); fix: relabel the file or add the labels")
        any_foreground = any_foreground or bool(values - {0, info["labels"].get("ignore", -1)})
    if not any_foreground:
        raise MedNeXtUserError(f"every label map in {labels} is empty (background only): there is nothing to learn; "
                               "fix: check the label files (values must be the ones dataset.json declares)")


def _read_label_values(path: Path) -> set[int]:
    from nnunetv2_mednext.image_io import check_complete

    check_complete(path)
    if path.name.lower().endswith((".png", ".bmp", ".tif", ".tiff", ".jpg", ".jpeg")):
        from PIL import Image

        try:
            with Image.open(path) as im:
                array = np.asarray(im)
        except OSError as e:
            raise MedNeXtUserError(f"cannot read label {path} ({e}); fix: re-export the file") from None
    else:
        import SimpleITK as sitk

        from nnunetv2_mednext.image_io import read_image

        array = sitk.GetArrayFromImage(read_image(path))
    return {int(v) for v in np.unique(array)}


def check_prediction_inputs(folder: str | Path, n_channels: int, file_ending: str | None = None) -> None:
    """``nnUNetv2_predict -i`` folder: every case has exactly the model's channel files ``_0000`` ..."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MedNeXtUserError(f"input folder {folder} does not exist; fix: pass the folder with the images (-i)")
    if file_ending is None:
        counts: dict[str, int] = defaultdict(int)
        for p in folder.iterdir():
            if p.is_file() and (e := _ending(p.name)):
                counts[e] += 1
        if not counts:
            raise MedNeXtUserError(f"no image files in {folder}; fix: pass the folder with the images (-i)")
        file_ending = max(counts, key=lambda e: counts[e])
    cases = _check_channels(folder, file_ending, n_channels, "the input folder")
    if not cases:
        raise MedNeXtUserError(f"no *_0000{file_ending} images in {folder}; fix: pass the folder with the images (-i)")
