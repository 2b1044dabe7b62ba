"""Writers shared by the converters: dataset folders, cases, ``dataset.json`` and ``splits_final.json``.

Arrays are handled in numpy order ``(z, y, x)`` (or ``(y, x)``) and spacings are given in the same order;
SimpleITK wants ``(x, y, z)``, which the helpers take care of.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nnunetv2_mednext.errors import MedNeXtUserError
from nnunetv2_mednext.fsutil import StagedFolder, atomic_write_text, ensure_writable, exclusive_lock

FILE_ENDING = ".nii.gz"
SUBFOLDERS = ("imagesTr", "labelsTr", "imagesTs", "labelsTs")


def parse_spacing(text: str | None) -> tuple[float, float, float] | None:
    """``"10,1.5,1.5"`` (z, y, x in mm) -> tuple, or None."""
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in str(text).replace("x", ",").split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or min(values) <= 0:
        raise MedNeXtUserError(f"spacing {text!r} is not valid; fix: give three positive numbers z,y,x in mm, e.g. 10,1.5,1.5")
    return values  # type: ignore[return-value]


def raw_root(out: str | os.PathLike | None) -> Path:
    """The nnU-Net raw root: ``out`` if given, else ``$nnUNet_raw``."""
    if out:
        return Path(out)
    env = os.environ.get("nnUNet_raw")
    if not env:
        raise MedNeXtUserError("no output folder; fix: pass --out /path/to/nnUNet_raw or export nnUNet_raw")
    return Path(env)


def dataset_folder_name(dataset_id: int, name: str) -> str:
    if not 1 <= int(dataset_id) <= 999:
        raise MedNeXtUserError(f"dataset id must be in 1..999, got {dataset_id}; fix: pass --id with 1 to 999")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", name):
        raise MedNeXtUserError(f"dataset name {name!r} is not valid; fix: use letters, digits, '_' and '-' only")
    return f"Dataset{int(dataset_id):03d}_{name}"


@contextlib.contextmanager
def new_dataset(root: str | os.PathLike, dataset_id: int, name: str, overwrite: bool,
                sources: Sequence[str | os.PathLike] = ()) -> Iterator[StagedFolder]:
    """Write ``root/DatasetXXX_Name`` safely: locked, built in a staging folder, swapped in only when complete.

    Yields the :class:`~nnunetv2_mednext.fsutil.StagedFolder`: write into ``.path`` (with the four sub-folders),
    name things after ``.final``. An existing dataset is kept unless ``overwrite``, and is replaced only after the
    new copy is complete; a source that overlaps the target is refused before anything is touched.
    """
    folder_name = dataset_folder_name(dataset_id, name)
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise MedNeXtUserError(f"output root {root} is a file; fix: point --out at a folder")
    ensure_writable(root, "output root")
    clash = sorted(p.name for p in root.glob(f"Dataset{int(dataset_id):03d}_*") if p.name != folder_name)
    if clash:
        raise MedNeXtUserError(
            f"dataset id {dataset_id} is already used by {root / clash[0]}; fix: pass another --id or remove that folder"
        )
    stage = StagedFolder(root / folder_name, overwrite, tuple(sources), what="dataset folder")
    with exclusive_lock(stage.final, "dataset folder"), stage:
        for sub in SUBFOLDERS:
            (stage.path / sub).mkdir()
        yield stage


def _to_sitk(array: np.ndarray, spacing: Sequence[float] | None, reference: Any = None) -> Any:
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(array)
    if reference is not None:
        if tuple(reference.GetSize()) != tuple(img.GetSize()):
            raise MedNeXtUserError(
                f"label grid {img.GetSize()} differs from image grid {reference.GetSize()}; fix: check the source files"
            )
        img.CopyInformation(reference)
    elif spacing is not None:
        img.SetSpacing(tuple(float(s) for s in reversed(spacing)))
    return img


def write_image(path: Path, array: np.ndarray, spacing: Sequence[float] | None = None, reference: Any = None) -> None:
    import SimpleITK as sitk

    sitk.WriteImage(_to_sitk(np.asarray(array, dtype=np.float32), spacing, reference), str(path), True)


def write_label(path: Path, array: np.ndarray, spacing: Sequence[float] | None = None, reference: Any = None) -> None:
    import SimpleITK as sitk

    sitk.WriteImage(_to_sitk(np.asarray(array, dtype=np.uint8), spacing, reference), str(path), True)


def case_paths(folder: Path, case_id: str, test: bool) -> tuple[Path, Path]:
    tag = "Ts" if test else "Tr"
    return folder / f"images{tag}" / f"{case_id}_0000{FILE_ENDING}", folder / f"labels{tag}" / f"{case_id}{FILE_ENDING}"


def write_array_case(folder: Path, case_id: str, test: bool, image: np.ndarray, label: np.ndarray,
                     spacing: Sequence[float]) -> None:
    """Write one case from arrays (no geometry in the source: ``spacing`` is the nominal one)."""
    if image.shape != label.shape:
        raise MedNeXtUserError(f"{case_id}: image shape {image.shape} != label shape {label.shape}; fix: check the source")
    img_path, lab_path = case_paths(folder, case_id, test)
    write_image(img_path, image, spacing)
    write_label(lab_path, label, spacing)


def write_file_case(folder: Path, case_id: str, test: bool, image_file: Path, label: np.ndarray, reference: Any) -> None:
    """Copy a NIfTI image unchanged and write its (remapped) label on exactly the image's grid."""
    img_path, lab_path = case_paths(folder, case_id, test)
    if str(image_file).endswith(FILE_ENDING):
        shutil.copyfile(image_file, img_path)
    else:
        import SimpleITK as sitk

        sitk.WriteImage(reference, str(img_path), True)
    write_label(lab_path, label, reference=reference)


def check_label_values(case_id: str, label: np.ndarray, allowed: Sequence[int], hint: str) -> None:
    found = np.unique(label)
    bad = sorted(set(found.tolist()) - set(int(a) for a in allowed))
    if bad:
        raise MedNeXtUserError(f"{case_id}: unexpected label values {bad} (allowed {list(allowed)}); fix: {hint}")


def write_dataset_json(folder: Path, *, channel_names: dict[str, str], labels: dict[str, int], num_training: int,
                       **extra: Any) -> dict:
    data: dict[str, Any] = {
        "channel_names": channel_names,
        "labels": labels,
        "numTraining": int(num_training),
        "file_ending": FILE_ENDING,
        **extra,
    }
    (folder / "dataset.json").write_text(json.dumps(data, indent=2))
    return data


def five_fold_splits(case_ids: Sequence[str], n_folds: int = 5) -> list[dict[str, list[str]]]:
    """Deterministic k-fold: sort the ids, fold ``k`` validates on ``ids[k::n_folds]``."""
    ids = sorted(case_ids)
    if len(ids) < n_folds:
        raise MedNeXtUserError(f"{len(ids)} training cases cannot make {n_folds} folds; fix: convert more cases")
    folds = []
    for k in range(n_folds):
        val = ids[k::n_folds]
        folds.append({"train": [c for c in ids if c not in val], "val": val})
    return folds


def splits_root(preprocessed: str | os.PathLike | None) -> Path:
    """Where ``--write-splits`` writes: ``preprocessed`` or ``$nnUNet_preprocessed`` (checked before converting)."""
    root = preprocessed or os.environ.get("nnUNet_preprocessed")
    if not root:
        raise MedNeXtUserError(
            "--write-splits needs nnU-Net's preprocessed folder; fix: pass --preprocessed DIR or export nnUNet_preprocessed"
        )
    return Path(root)


def write_splits(splits: list[dict[str, list[str]]], dataset_name: str, preprocessed: str | os.PathLike | None,
                 overwrite: bool) -> Path:
    """Write ``<preprocessed>/DatasetXXX_Name/splits_final.json`` (``preprocessed`` or ``$nnUNet_preprocessed``)."""
    target = splits_root(preprocessed) / dataset_name / "splits_final.json"
    text = json.dumps(splits, indent=2)
    if target.exists() and target.read_text() != text and not overwrite:
        raise MedNeXtUserError(f"{target} exists with other splits; fix: pass --overwrite to replace it")
    ensure_writable(target.parent, "preprocessed folder")
    atomic_write_text(target, text)
    return target
