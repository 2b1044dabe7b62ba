"""Synapse / BTCV (multi-organ abdominal CT) to nnU-Net's raw format, with the TransUNet protocol split.

Two public source layouts are understood (see ``docs/protocols.md``):

* ``raw``: the BTCV release, ``.../img/img0001.nii.gz`` with ``.../label/label0001.nii.gz`` (13 organ labels,
  real geometry). Unlabelled images (the challenge test set) are ignored.
* ``transunet``: TransUNet's preprocessed copy, ``train_npz/case0005_slice000.npz`` (2D slices, keys ``image`` and
  ``label``) and ``test_vol_h5/case0001.npy.h5`` (volumes ``(Z, H, W)``). Images are already clipped to
  [-125, 275] HU and scaled to [0, 1]; labels use the 8-organ coding; no spacing is stored, so a nominal spacing is
  written (``NOMINAL_SPACING`` unless ``spacing`` is given).

Protocols: ``transunet`` (18 training cases to ``imagesTr``, 12 test cases to ``imagesTs``/``labelsTs``) and
``cv5`` (all 30 labelled cases in ``imagesTr``; use ``write_splits`` for a deterministic 5-fold split).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nnunetv2_mednext.errors import MedNeXtUserError
from nnunetv2_mednext.image_io import read_image

from . import common

TRAIN_CASES = ("0005", "0006", "0007", "0009", "0010", "0021", "0023", "0024", "0026", "0027", "0028", "0030",
               "0031", "0033", "0034", "0037", "0039", "0040")
TEST_CASES = ("0001", "0002", "0003", "0004", "0008", "0022", "0025", "0029", "0032", "0035", "0036", "0038")

#: BTCV label values of the original release (13 organs).
BTCV13_LABELS = {
    "background": 0, "spleen": 1, "kidney_right": 2, "kidney_left": 3, "gallbladder": 4, "esophagus": 5, "liver": 6,
    "stomach": 7, "aorta": 8, "inferior_vena_cava": 9, "portal_and_splenic_vein": 10, "pancreas": 11,
    "adrenal_gland_right": 12, "adrenal_gland_left": 13,
}
#: The 8-organ coding of the TransUNet protocol (the paper's column order).
TRANSUNET8_LABELS = {
    "background": 0, "aorta": 1, "gallbladder": 2, "kidney_left": 3, "kidney_right": 4, "liver": 5, "pancreas": 6,
    "spleen": 7, "stomach": 8,
}
#: BTCV value -> TransUNet value (the 5 other organs become background).
BTCV13_TO_TRANSUNET8 = {BTCV13_LABELS[n]: v for n, v in TRANSUNET8_LABELS.items() if n != "background"}
#: Written for the ``transunet`` layout, which stores no spacing: z, y, x in mm (about the BTCV medians).
NOMINAL_SPACING = (3.0, 0.76, 0.76)

_IMG_RE = re.compile(r"^img(\d+)\.nii(\.gz)?$")
_LAB_RE = re.compile(r"^label(\d+)\.nii(\.gz)?$")
_NPZ_RE = re.compile(r"^case(\d+)_slice(\d+)\.npz$")
_H5_RE = re.compile(r"^case(\d+)\.npy\.h5$")


@dataclass
class _Case:
    number: str
    kind: str  # "nifti" | "h5" | "npz"
    files: list[Path] = field(default_factory=list)


@dataclass
class ConversionResult:
    folder: Path
    train: list[str]
    test: list[str]
    missing: list[str]
    splits_file: Path | None
    layout: str


def _num(text: str) -> str:
    return f"{int(text):04d}"


def detect_layout(src: Path) -> str:
    if not src.is_dir():
        raise MedNeXtUserError(f"Synapse source {src} is not a folder; fix: pass the folder holding RawData or train_npz")
    if any(_IMG_RE.match(p.name) for p in src.rglob("img*.nii*")):
        return "raw"
    if any(True for _ in src.rglob("case*_slice*.npz")) or any(True for _ in src.rglob("case*.npy.h5")):
        return "transunet"
    raise MedNeXtUserError(
        f"no Synapse layout found under {src}; fix: point at BTCV RawData (img/img0001.nii.gz + label/label0001.nii.gz) "
        "or TransUNet's data (train_npz/case0005_slice000.npz, test_vol_h5/case0001.npy.h5)"
    )


def _find_raw(src: Path) -> dict[str, _Case]:
    images = {_num(m.group(1)): p for p in src.rglob("img*.nii*") if (m := _IMG_RE.match(p.name))}
    labels = {_num(m.group(1)): p for p in src.rglob("label*.nii*") if (m := _LAB_RE.match(p.name))}
    orphans = sorted(set(labels) - set(images))
    if orphans:
        raise MedNeXtUserError(f"labels without images for cases {', '.join(orphans)} under {src}; fix: restore the img files")
    return {n: _Case(n, "nifti", [images[n], labels[n]]) for n in sorted(set(images) & set(labels))}


def _find_transunet(src: Path) -> dict[str, _Case]:
    cases: dict[str, _Case] = {}
    slices: dict[str, dict[int, Path]] = {}
    for p in src.rglob("case*_slice*.npz"):
        if m := _NPZ_RE.match(p.name):
            slices.setdefault(_num(m.group(1)), {})[int(m.group(2))] = p
    for n, by_index in slices.items():
        idx = sorted(by_index)
        if idx != list(range(idx[0], idx[0] + len(idx))):
            gaps = sorted(set(range(idx[0], idx[-1] + 1)) - set(idx))[:5]
            raise MedNeXtUserError(f"case{n}: slice files have gaps (missing slice {gaps}); fix: restore train_npz")
        cases[n] = _Case(n, "npz", [by_index[i] for i in idx])
    for p in src.rglob("case*.npy.h5"):
        if m := _H5_RE.match(p.name):
            cases[_num(m.group(1))] = _Case(_num(m.group(1)), "h5", [p])  # a whole volume wins over slices
    return cases


def _load_arrays(case: _Case) -> tuple[np.ndarray, np.ndarray]:
    if case.kind == "h5":
        import h5py

        with h5py.File(case.files[0], "r") as f:
            if "image" not in f or "label" not in f:
                raise MedNeXtUserError(f"{case.files[0]} lacks the 'image'/'label' datasets; fix: use TransUNet's test_vol_h5")
            return np.asarray(f["image"][:], np.float32), np.asarray(f["label"][:])
    images, labels = [], []
    for p in case.files:
        with np.load(p) as d:
            if "image" not in d or "label" not in d:
                raise MedNeXtUserError(f"{p} lacks the 'image'/'label' keys; fix: use TransUNet's train_npz files")
            images.append(np.asarray(d["image"], np.float32))
            labels.append(np.asarray(d["label"]))
    if len({i.shape for i in images}) != 1:
        raise MedNeXtUserError(f"case{case.number}: slices differ in shape; fix: check train_npz")
    return np.stack(images), np.stack(labels)


def _label_mapper(source_labels: str, organs: int) -> tuple[Callable[[str, np.ndarray], np.ndarray], dict[str, int]]:
    if organs == 13:
        if source_labels != "btcv13":
            raise MedNeXtUserError("13 organs need the original BTCV labels; fix: convert the raw layout or pass --organs 8")

        def keep(case_id: str, lab: np.ndarray) -> np.ndarray:
            common.check_label_values(case_id, lab, range(14), "these are not BTCV labels")
            return lab.astype(np.uint8)

        return keep, dict(BTCV13_LABELS)
    if organs != 8:
        raise MedNeXtUserError(f"--organs must be 8 or 13, got {organs}")
    if source_labels == "btcv13":
        lut = np.zeros(14, np.uint8)
        for src_value, dst_value in BTCV13_TO_TRANSUNET8.items():
            lut[src_value] = dst_value

        def remap(case_id: str, lab: np.ndarray) -> np.ndarray:
            common.check_label_values(case_id, lab, range(14), "these are not BTCV labels")
            return lut[lab.astype(np.int64)]

        return remap, dict(TRANSUNET8_LABELS)

    def same(case_id: str, lab: np.ndarray) -> np.ndarray:
        common.check_label_values(case_id, lab, range(9),
                                  "the labels look like the 13-organ BTCV coding; pass --source-labels btcv13")
        return lab.astype(np.uint8)

    return same, dict(TRANSUNET8_LABELS)


def convert_synapse(
    src: str | Path, out_root: str | Path | None = None, *, dataset_id: int = 801, name: str = "Synapse",
    organs: int = 8, protocol: str = "transunet", source_labels: str = "auto",
    spacing: tuple[float, float, float] | None = None, write_splits: bool = False,
    preprocessed: str | Path | None = None, overwrite: bool = False, allow_missing: bool = False,
    log: Callable[[str], None] = print,
) -> ConversionResult:
    """Convert a Synapse/BTCV copy; returns what was written. See the module docstring for the options."""
    src = Path(src)
    layout = detect_layout(src)
    if write_splits:
        common.splits_root(preprocessed)
    if protocol not in ("transunet", "cv5"):
        raise MedNeXtUserError(f"unknown protocol {protocol!r}; fix: use transunet (18/12) or cv5 (5-fold on 30 cases)")
    if layout == "raw" and spacing is not None:
        raise MedNeXtUserError("--spacing is only for the TransUNet layout; the raw NIfTI files carry their own spacing")
    if source_labels == "auto":
        source_labels = "btcv13" if layout == "raw" else "transunet8"
    if source_labels not in ("btcv13", "transunet8"):
        raise MedNeXtUserError(f"unknown --source-labels {source_labels!r}; fix: use auto, btcv13 or transunet8")
    mapper, labels = _label_mapper(source_labels, organs)
    found = _find_raw(src) if layout == "raw" else _find_transunet(src)

    if protocol == "transunet":
        plan = [(n, False) for n in TRAIN_CASES] + [(n, True) for n in TEST_CASES]
    else:
        plan = [(n, False) for n in sorted(TRAIN_CASES + TEST_CASES)]
    missing = [f"case{n}" for n, _ in plan if n not in found]
    if missing and not allow_missing:
        raise MedNeXtUserError(
            f"{len(missing)} of {len(plan)} protocol cases not found under {src} ({', '.join(missing[:6])}"
            f"{' ...' if len(missing) > 6 else ''}); fix: point at the complete copy or pass --allow-missing"
        )
    plan = [(n, t) for n, t in plan if n in found]
    if not any(not t for _, t in plan):
        raise MedNeXtUserError(f"no training case of the protocol found under {src}; fix: check the source folder")

    with common.new_dataset(common.raw_root(out_root), dataset_id, name, overwrite, sources=(src,)) as stage:
        folder = stage.path
        geometry = "from the NIfTI headers" if layout == "raw" else f"nominal {list(spacing or NOMINAL_SPACING)} (z, y, x mm)"
        train, test = [], []
        for number, is_test in plan:
            case = found[number]
            case_id = f"case{number}"
            if case.kind == "nifti":
                import SimpleITK as sitk

                reference = read_image(str(case.files[0]))
                lab = sitk.GetArrayFromImage(read_image(str(case.files[1])))
                common.write_file_case(folder, case_id, is_test, case.files[0], mapper(case_id, lab), reference)
            else:
                image, lab = _load_arrays(case)
                common.write_array_case(folder, case_id, is_test, image, mapper(case_id, lab), spacing or NOMINAL_SPACING)
            (test if is_test else train).append(case_id)
            log(f"  {case_id} -> {'imagesTs' if is_test else 'imagesTr'}")

        channel = "CT" if layout == "raw" else "CT_clipped_scaled_0_1"  # "CT" selects nnU-Net's CT normalisation
        common.write_dataset_json(
            folder, channel_names={"0": channel}, labels=labels, num_training=len(train), numTest=len(test),
            name=stage.final.name, description=f"Synapse/BTCV multi-organ CT, {organs} organs, protocol {protocol}",
            reference="Landman et al., MICCAI 2015 Multi-Atlas Labeling Beyond the Cranial Vault (synapse.org syn3193805)",
            licence="BTCV data-use agreement; research use only, do not redistribute",
            conversion={
                "tool": "nnunetv2-mednext convert synapse", "source": str(src), "source_layout": layout,
                "source_labels": source_labels, "protocol": protocol, "spacing": geometry,
                "train": train, "test": test, "missing": missing,
            },
        )
    folder = stage.final
    splits_file = None
    if write_splits:
        splits_file = common.write_splits(common.five_fold_splits(train), folder.name, preprocessed, overwrite)
    log(f"wrote {folder} ({len(train)} training, {len(test)} test cases; layout {layout}, spacing {geometry})")
    return ConversionResult(folder, train, test, missing, splits_file, layout)
