"""Medical Segmentation Decathlon style folders (``imagesTr/<case>.nii.gz`` + ``labelsTr/<case>.nii.gz``) to nnU-Net.

Single-channel 3D NIfTI only (e.g. Task04 Hippocampus, Task02 Heart): nnU-Net's own ``nnUNetv2_convert_MSD_dataset``
needs MSD's ``dataset.json`` and handles 4D multi-channel files; this converter also accepts copies without a
``dataset.json`` (class names are then given with ``labels=`` or default to ``class_K``) and can keep a
deterministic subset of the cases (``max_cases``) for quick CPU runs.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from nnunetv2_mednext.errors import MedNeXtUserError
from nnunetv2_mednext.image_io import read_image

from . import common
from .synapse import ConversionResult

KNOWN_LABELS = {"hippocampus": ["Anterior", "Posterior"], "heart": ["left atrium"], "spleen": ["spleen"]}


def _cases(src: Path) -> list[str]:
    images, labels = src / "imagesTr", src / "labelsTr"
    if not images.is_dir() or not labels.is_dir():
        raise MedNeXtUserError(f"{src} has no imagesTr/ and labelsTr/ folders; fix: point at the MSD task folder")
    ids = sorted(p.name[: -len(common.FILE_ENDING)] for p in images.glob(f"*{common.FILE_ENDING}")
                 if not p.name.startswith("."))
    if not ids:
        raise MedNeXtUserError(f"no *{common.FILE_ENDING} images in {images}; fix: point at the MSD task folder")
    no_label = [c for c in ids if not (labels / f"{c}{common.FILE_ENDING}").exists()]
    if no_label:
        raise MedNeXtUserError(f"{len(no_label)} image(s) without a label in {labels} (first: {no_label[0]}); "
                               "fix: remove them or add their labels")
    return ids


def _names_from_source(src: Path, n_fg: int, labels: Sequence[str] | None) -> tuple[list[str], str]:
    meta = src / "dataset.json"
    channel = "MRI" if "hippocampus" in src.name.lower() else "0"
    if meta.exists():
        info = json.loads(meta.read_text())
        msd_labels = info.get("labels", {})
        names = [msd_labels[str(k)] for k in range(1, n_fg + 1) if str(k) in msd_labels]
        channel = (info.get("modality") or info.get("channel_names") or {}).get("0", channel)
        if labels is None and len(names) == n_fg:
            labels = names
    if labels is None:
        known = next((v for k, v in KNOWN_LABELS.items() if k in src.name.lower()), None)
        labels = known if known is not None and len(known) == n_fg else [f"class_{k}" for k in range(1, n_fg + 1)]
    if len(labels) != n_fg:
        raise MedNeXtUserError(f"{len(labels)} label name(s) given but the labels hold {n_fg} foreground value(s); "
                               f"fix: pass exactly {n_fg} names")
    return list(labels), channel


def convert_msd(
    src: str | Path, out_root: str | Path | None = None, *, dataset_id: int = 4, name: str = "Hippocampus",
    labels: Sequence[str] | None = None, max_cases: int | None = None, write_splits: bool = False,
    preprocessed: str | Path | None = None, overwrite: bool = False, log: Callable[[str], None] = print,
    test_cases: int = 0,
) -> ConversionResult:
    """Copy an MSD-style task folder into ``DatasetXXX_Name``: the last ``test_cases`` cases (by name) go to
    ``imagesTs``/``labelsTs`` as a held-out test set, the others to ``imagesTr``."""
    import SimpleITK as sitk

    src = Path(src)
    if write_splits:
        common.splits_root(preprocessed)
    ids = _cases(src)
    if max_cases is not None:
        if max_cases < 2:
            raise MedNeXtUserError(f"max_cases must be at least 2, got {max_cases}")
        ids = ids[:max_cases]
    if not 0 <= test_cases <= len(ids) - 2:
        raise MedNeXtUserError(f"--test-cases {test_cases} leaves fewer than 2 of {len(ids)} cases for training; fix: "
                               "hold out fewer cases")
    train_ids, test_ids = ids[: len(ids) - test_cases], ids[len(ids) - test_cases :]
    values: set[int] = set()
    for case in ids:
        arr = sitk.GetArrayFromImage(read_image(str(src / "labelsTr" / f"{case}{common.FILE_ENDING}")))
        if not np.all(np.equal(np.mod(arr, 1), 0)) or arr.min() < 0:
            raise MedNeXtUserError(f"{case}: label map holds non-integer or negative values; fix: check the label file")
        values |= {int(v) for v in np.unique(arr)}
    n_fg = max(values)
    if sorted(values - {0}) != list(range(1, n_fg + 1)):
        raise MedNeXtUserError(f"label values {sorted(values)} are not consecutive from 0; fix: relabel the masks")
    names, channel = _names_from_source(src, n_fg, labels)

    with common.new_dataset(common.raw_root(out_root), dataset_id, name, overwrite, sources=(src,)) as stage:
        folder = stage.path
        for case in ids:
            img_path, lab_path = common.case_paths(folder, case, test=case in test_ids)
            shutil.copyfile(src / "imagesTr" / f"{case}{common.FILE_ENDING}", img_path)
            # labels are re-written as uint8 (a few MSD files store them as float32)
            ref = read_image(str(src / "labelsTr" / f"{case}{common.FILE_ENDING}"))
            common.write_label(lab_path, sitk.GetArrayFromImage(ref).astype(np.uint8), reference=ref)
        common.write_dataset_json(
            folder, channel_names={"0": channel}, labels={"background": 0, **{n: k for k, n in enumerate(names, 1)}},
            num_training=len(train_ids), name=stage.final.name,
            conversion={"tool": "nnunetv2-mednext convert msd", "source": str(src), "cases": len(ids),
                        "test": test_ids},
        )
    folder = stage.final
    splits_file = None
    if write_splits:
        splits_file = common.write_splits(common.five_fold_splits(train_ids), folder.name, preprocessed, overwrite)
    log(f"wrote {folder} ({len(train_ids)} training, {len(test_ids)} test cases, labels {names})")
    return ConversionResult(folder, train_ids, test_ids, [], splits_file, "msd")
