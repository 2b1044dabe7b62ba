"""ACDC (cine-MRI, RV / myocardium / LV) to nnU-Net's raw format, with the TransUNet 70/10/20 patient split.

Two public source layouts are understood (see ``docs/protocols.md``):

* ``raw``: the challenge release, ``.../patient001/`` with ``Info.cfg`` (``ED:`` / ``ES:`` frame numbers),
  ``patient001_frame01.nii.gz`` and ``patient001_frame01_gt.nii.gz``. Geometry comes from the NIfTI headers.
* ``ssl4mis``: the SSL4MIS HDF5 copy, ``data/patient001_frame01.h5`` (whole volume, ``image``/``label`` of shape
  ``(Z, H, W)``) or ``data/patient001_frame01_slice_K.h5`` (2D slices, K = 1..N, stacked back into the volume).
  ``frame01`` is ED and ``frame02`` is ES. No spacing is stored: ``NOMINAL_SPACING`` is written unless ``spacing``
  is given, so HD95 "in mm" on this layout is only nominal.

Cases are named ``patientNNN_ED`` / ``patientNNN_ES`` in both layouts. The 20 test patients go to
``imagesTs``/``labelsTs``; the 70 training and 10 validation patients to ``imagesTr``. ``write_splits`` writes a
``splits_final.json`` with a single fold: train = the 70 training patients, val = the 10 validation patients.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np

from nnunetv2_mednext.errors import MedNeXtUserError
from nnunetv2_mednext.image_io import read_image

from . import common
from .synapse import ConversionResult

TEST_PATIENTS = (2, 3, 8, 9, 12, 14, 17, 24, 42, 48, 49, 53, 55, 64, 67, 79, 81, 88, 92, 95)
VAL_PATIENTS = (19, 21, 29, 33, 41, 50, 61, 71, 76, 80)
TRAIN_PATIENTS = tuple(p for p in range(1, 101) if p not in TEST_PATIENTS and p not in VAL_PATIENTS)
LABELS = {"background": 0, "RV": 1, "MYO": 2, "LV": 3}
#: Written for the ``ssl4mis`` layout, which stores no spacing: z, y, x in mm (raw ACDC is about 5-10 mm between
#: slices and 1.37-1.68 mm in-plane).
NOMINAL_SPACING = (10.0, 1.5, 1.5)
PHASES = ("ED", "ES")

_PATIENT_RE = re.compile(r"^patient(\d{3})$")
_VOL_RE = re.compile(r"^patient(\d{3})_frame(\d{2})\.h5$")
_SLICE_RE = re.compile(r"^patient(\d{3})_frame(\d{2})_slice_(\d+)\.h5$")


def split_of(patient: int) -> str:
    if patient in TEST_PATIENTS:
        return "test"
    if patient in VAL_PATIENTS:
        return "val"
    return "train"


def detect_layout(src: Path) -> str:
    if not src.is_dir():
        raise MedNeXtUserError(f"ACDC source {src} is not a folder; fix: pass the folder with patientXXX/ or data/*.h5")
    if any(_PATIENT_RE.match(p.parent.name) for p in src.rglob("Info.cfg")):
        return "raw"
    if any(True for _ in src.rglob("patient*_frame*.h5")):
        return "ssl4mis"
    raise MedNeXtUserError(
        f"no ACDC layout found under {src}; fix: point at the challenge's training folder (patient001/Info.cfg, "
        "patient001_frame01.nii.gz, ..._gt.nii.gz) or at the SSL4MIS copy (data/patient001_frame01.h5)"
    )


def _parse_info(cfg: Path) -> dict[str, int]:
    values = {}
    for line in cfg.read_text().splitlines():
        key, _, value = line.partition(":")
        if key.strip() in PHASES:
            try:
                values[key.strip()] = int(value.strip())
            except ValueError:
                pass
    if set(values) != set(PHASES):
        raise MedNeXtUserError(f"{cfg} lacks integer 'ED:' and 'ES:' lines; fix: restore the original Info.cfg")
    return values


def _raw_sources(src: Path) -> dict[tuple[int, str], tuple[Path, Path]]:
    out = {}
    for cfg in sorted(src.rglob("Info.cfg")):
        m = _PATIENT_RE.match(cfg.parent.name)
        if not m:
            continue
        patient = int(m.group(1))
        for phase, frame in _parse_info(cfg).items():
            stem = f"patient{patient:03d}_frame{frame:02d}"
            img, gt = cfg.parent / f"{stem}.nii.gz", cfg.parent / f"{stem}_gt.nii.gz"
            if not img.is_file() or not gt.is_file():
                if patient > 100:
                    continue  # challenge test patients may come without ground truth
                raise MedNeXtUserError(f"{cfg.parent} lacks {img.name} or {gt.name} ({phase}); fix: restore the patient folder")
            out[(patient, phase)] = (img, gt)
    return out


def _h5_sources(src: Path) -> dict[tuple[int, str], list[Path]]:
    volumes: dict[tuple[int, str], list[Path]] = {}
    slices: dict[tuple[int, str], dict[int, Path]] = {}
    for p in src.rglob("patient*_frame*.h5"):
        if m := _VOL_RE.match(p.name):
            volumes[(int(m.group(1)), _phase(m.group(2), p))] = [p]
        elif m := _SLICE_RE.match(p.name):
            slices.setdefault((int(m.group(1)), _phase(m.group(2), p)), {})[int(m.group(3))] = p
    for key, by_k in slices.items():
        if key in volumes:
            continue  # the whole volume wins
        ks = sorted(by_k)
        if ks != list(range(1, len(ks) + 1)):
            gaps = sorted(set(range(1, ks[-1] + 1)) - set(ks))[:5]
            raise MedNeXtUserError(
                f"patient{key[0]:03d} {key[1]}: slice files have gaps (missing slice_{gaps}); fix: restore the h5 slices"
            )
        volumes[key] = [by_k[k] for k in ks]
    return volumes


def _phase(frame: str, path: Path) -> str:
    if frame not in ("01", "02"):
        raise MedNeXtUserError(f"{path.name}: SSL4MIS files use frame01 (ED) and frame02 (ES) only; fix: check the source")
    return "ED" if frame == "01" else "ES"


def _read_h5(files: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    import h5py

    images, labels = [], []
    for p in files:
        with h5py.File(p, "r") as f:
            if "image" not in f or "label" not in f:
                raise MedNeXtUserError(f"{p} lacks the 'image'/'label' datasets; fix: use the SSL4MIS ACDC files")
            images.append(np.asarray(f["image"][:], np.float32))
            labels.append(np.asarray(f["label"][:]))
    if len(files) == 1 and images[0].ndim == 3:
        return images[0], labels[0]
    if any(i.ndim != 2 for i in images) or len({i.shape for i in images}) != 1:
        raise MedNeXtUserError(f"{files[0].name}...: slices are not equal-shaped 2D arrays; fix: check the source")
    return np.stack(images), np.stack(labels)


def convert_acdc(
    src: str | Path, out_root: str | Path | None = None, *, dataset_id: int = 802, name: str = "ACDC",
    spacing: tuple[float, float, float] | None = None, write_splits: bool = False,
    preprocessed: str | Path | None = None, overwrite: bool = False, allow_missing: bool = False,
    max_per_split: int | None = None, log: Callable[[str], None] = print,
) -> ConversionResult:
    """Convert an ACDC copy (see the module docstring); ``max_per_split`` keeps the first N patients of each split."""
    src = Path(src)
    layout = detect_layout(src)
    if write_splits:
        common.splits_root(preprocessed)
    if layout == "raw" and spacing is not None:
        raise MedNeXtUserError("--spacing is only for the SSL4MIS layout; the raw NIfTI files carry their own spacing")
    sources: dict = _raw_sources(src) if layout == "raw" else _h5_sources(src)

    patients = {"train": list(TRAIN_PATIENTS), "val": list(VAL_PATIENTS), "test": list(TEST_PATIENTS)}
    if max_per_split is not None:
        if max_per_split < 1:
            raise MedNeXtUserError("--max-per-split must be >= 1")
        patients = {k: v[:max_per_split] for k, v in patients.items()}
    wanted = [(p, ph) for split in ("train", "val", "test") for p in patients[split] for ph in PHASES]
    missing = [f"patient{p:03d}_{ph}" for p, ph in wanted if (p, ph) not in sources]
    if missing and not allow_missing:
        raise MedNeXtUserError(
            f"{len(missing)} of {len(wanted)} protocol volumes not found under {src} ({', '.join(missing[:6])}"
            f"{' ...' if len(missing) > 6 else ''}); fix: point at the complete copy or pass --allow-missing"
        )
    wanted = [w for w in wanted if w in sources]
    if not any(split_of(p) != "test" for p, _ in wanted):
        raise MedNeXtUserError(f"no training volume of the protocol found under {src}; fix: check the source folder")

    with common.new_dataset(common.raw_root(out_root), dataset_id, name, overwrite, sources=(src,)) as stage:
        folder = stage.path
        geometry = "from the NIfTI headers" if layout == "raw" else f"nominal {list(spacing or NOMINAL_SPACING)} (z, y, x mm)"
        train, test, fold_train, fold_val = [], [], [], []
        for patient, phase in wanted:
            case_id = f"patient{patient:03d}_{phase}"
            is_test = split_of(patient) == "test"
            if layout == "raw":
                import SimpleITK as sitk

                img_file, gt_file = sources[(patient, phase)]
                reference = read_image(str(img_file))
                label = sitk.GetArrayFromImage(read_image(str(gt_file)))
                common.check_label_values(case_id, label, range(4), "ACDC labels are 0 background, 1 RV, 2 MYO, 3 LV")
                common.write_file_case(folder, case_id, is_test, img_file, label, reference)
            else:
                image, label = _read_h5(sources[(patient, phase)])
                common.check_label_values(case_id, label, range(4), "ACDC labels are 0 background, 1 RV, 2 MYO, 3 LV")
                common.write_array_case(folder, case_id, is_test, image, label, spacing or NOMINAL_SPACING)
            if is_test:
                test.append(case_id)
            else:
                train.append(case_id)
                (fold_val if split_of(patient) == "val" else fold_train).append(case_id)
            log(f"  {case_id} ({split_of(patient)}) -> {'imagesTs' if is_test else 'imagesTr'}")

        common.write_dataset_json(
            folder, channel_names={"0": "cineMRI"}, labels=dict(LABELS), num_training=len(train), numTest=len(test),
            name=stage.final.name, description="ACDC cine-MRI, ED and ES frames; TransUNet 70/10/20 patient split",
            reference="Bernard et al., IEEE TMI 37(11):2514-2525, 2018, doi:10.1109/TMI.2018.2837502",
            licence="research and non-commercial use (mirrors: CC BY-NC-SA 4.0); do not redistribute",
            conversion={
                "tool": "nnunetv2-mednext convert acdc", "source": str(src), "source_layout": layout,
                "protocol": "transunet_70_10_20", "spacing": geometry,
                "train": fold_train, "val": fold_val, "test": test, "missing": missing,
            },
        )
    folder = stage.final
    splits_file = None
    if write_splits:
        if not fold_val:
            raise MedNeXtUserError("no validation patient was converted, so no split can be written; fix: convert them")
        splits = [{"train": sorted(fold_train), "val": sorted(fold_val)}]
        splits_file = common.write_splits(splits, folder.name, preprocessed, overwrite)
    log(f"wrote {folder} ({len(train)} training incl. {len(fold_val)} validation, {len(test)} test volumes; "
        f"layout {layout}, spacing {geometry})")
    return ConversionResult(folder, train, test, missing, splits_file, layout)
