"""Tiny synthetic datasets in every raw format nnU-Net reads, and a stock test trainer (conformance tests).

Each format writes ``Dataset<ID>_Conf<format>`` under ``$nnUNet_raw``: five training and two test cases of a bright
blob (label 1) on noise, with the file layout nnU-Net's ``documentation/dataset_format.md`` prescribes for it
(natural images: one file per case holding all colour channels; TIFF: a ``CASE.json`` with the spacing beside each
image and label). ``STOCK_TRAINER_SOURCE`` is nnU-Net's own ``nnUNetTrainer`` with only the run shortened.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

N_TRAIN, N_TEST = 5, 2


@dataclass(frozen=True)
class Format:
    """One raw-data format of the matrix: file ending, dimensionality, channels per case and files per case."""

    key: str
    ending: str
    ndim: int  # spatial dimensions nnU-Net sees
    channels: int  # what channel_names declares (= what nnU-Net's reader returns per case)
    files_per_case: int  # CASE_0000 ... files per case
    configuration: str

    @property
    def size(self) -> tuple[int, ...]:
        return (32, 32) if self.ndim == 2 else (16, 16, 16)


FORMATS: dict[str, Format] = {f.key: f for f in (
    Format("nifti3d", ".nii.gz", 3, 1, 1, "3d_fullres"),
    Format("nifti3d_2ch", ".nii.gz", 3, 2, 2, "3d_fullres"),
    Format("nifti2d", ".nii.gz", 2, 1, 1, "2d"),
    Format("mha3d", ".mha", 3, 1, 1, "3d_fullres"),
    Format("png_grey", ".png", 2, 1, 1, "2d"),
    Format("png_rgb", ".png", 2, 3, 1, "2d"),
    Format("tiff3d", ".tif", 3, 1, 1, "3d_fullres"),
)}


def _case(rng: np.random.Generator, size: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """A blob (label 1) at a random place and its noisy image (float, roughly 0..255)."""
    grids = np.meshgrid(*[np.arange(s) for s in size], indexing="ij")
    centre = [rng.uniform(s * 0.3, s * 0.7) for s in size]
    radius = min(size) * rng.uniform(0.15, 0.25)
    label = (sum((g - c) ** 2 for g, c in zip(grids, centre)) <= radius**2).astype(np.uint8)
    image = 60 + 140 * label + rng.normal(0, 15, size)
    return np.clip(image, 0, 255), label


def _write_sitk(path: Path, array: np.ndarray, label: bool) -> None:
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(array.astype(np.uint8 if label else np.float32))
    sitk.WriteImage(img, str(path), True)


def make_format_dataset(raw: Path, dataset_id: int, fmt: Format, seed: int = 0) -> Path:
    """Write the dataset of ``fmt`` (see module doc); returns its folder."""
    from PIL import Image

    folder = raw / f"Dataset{dataset_id:03d}_Conf{fmt.key}"
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(N_TRAIN + N_TEST):
        split = "Tr" if i < N_TRAIN else "Ts"
        case = f"case_{i:03d}"
        image, label = _case(rng, fmt.size)
        images, labels = folder / f"images{split}", folder / f"labels{split}"
        if fmt.key == "png_rgb":  # one file, three colour channels (channel-last, as PNG stores them)
            rgb = np.stack([image, 255 - image, np.full_like(image, 128) + rng.normal(0, 5, fmt.size)], axis=-1)
            Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), mode="RGB").save(images / f"{case}_0000.png")
            Image.fromarray(label).save(labels / f"{case}.png")
        elif fmt.ending == ".png":
            Image.fromarray(image.astype(np.uint8)).save(images / f"{case}_0000.png")
            Image.fromarray(label).save(labels / f"{case}.png")
        elif fmt.ending == ".tif":
            import tifffile

            tifffile.imwrite(images / f"{case}_0000.tif", image.astype(np.float32))
            tifffile.imwrite(labels / f"{case}.tif", label)
            for sub in (images, labels):  # nnU-Net's Tiff3DIO reads the spacing from CASE.json beside the file
                (sub / f"{case}.json").write_text(json.dumps({"spacing": [1.0, 1.0, 1.0]}))
        else:
            for c in range(fmt.files_per_case):
                _write_sitk(images / f"{case}_{c:04d}{fmt.ending}", image if c == 0 else 255 - image, label=False)
            _write_sitk(labels / f"{case}{fmt.ending}", label, label=True)
    names = {"png_rgb": {"0": "R", "1": "G", "2": "B"}, "nifti3d_2ch": {"0": "T1", "1": "T2"}}
    info = {"channel_names": names.get(fmt.key, {"0": "image"}), "labels": {"background": 0, "blob": 1},
            "numTraining": N_TRAIN, "file_ending": fmt.ending, "name": f"Conf{fmt.key}"}
    (folder / "dataset.json").write_text(json.dumps(info, indent=2))
    return folder


#: nnU-Net's own trainer with only the run shortened, exactly as the package's ``_tiny`` length: 2 epochs x 4
#: iterations, 2 validation iterations, and the end-of-training validation skipped when
#: ``NNUNETV2_MEDNEXT_FINAL_VALIDATION=0`` (read from the environment: the package is not imported). On CPU it keeps
#: OMP_NUM_THREADS (stock ``-device cpu`` takes every core, which stalls a shared 2-core machine).
STOCK_TRAINER = "nnUNetTrainerConformanceTiny"
STOCK_TRAINER_SOURCE = '''\
import os

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class nnUNetTrainerConformanceTiny(nnUNetTrainer):
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")) -> None:
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs, self.num_iterations_per_epoch, self.num_val_iterations_per_epoch = 2, 4, 2
        if self.device.type == "cpu" and os.environ.get("OMP_NUM_THREADS"):
            torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

    def perform_actual_validation(self, save_probabilities: bool = False) -> None:
        if os.environ.get("NNUNETV2_MEDNEXT_FINAL_VALIDATION") != "0":
            super().perform_actual_validation(save_probabilities)
'''


def write_stock_trainer(folder: Path) -> Path:
    """Write the stock test trainer's module into ``folder`` (point ``nnUNet_extTrainer`` at it)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "conformance_stock_trainer.py").write_text(STOCK_TRAINER_SOURCE)
    return folder
