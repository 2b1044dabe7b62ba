"""Small synthetic datasets in nnU-Net's raw format (for the demo and the tests); nothing is downloaded."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nnunetv2_mednext.conversion.common import new_dataset, write_dataset_json, write_image, write_label


def _shapes_2d(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A noisy image with a bright disc (label 1) and a darker square (label 2) at random places."""
    yy, xx = np.mgrid[:size, :size]
    label = np.zeros((size, size), np.uint8)
    r = rng.integers(size // 10, size // 5)
    cy, cx = rng.integers(r + 1, size - r - 1, 2)
    label[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 1
    h = rng.integers(size // 8, size // 4)
    y0, x0 = rng.integers(1, size - h - 1, 2)
    square = (yy >= y0) & (yy < y0 + h) & (xx >= x0) & (xx < x0 + h) & (label == 0)
    label[square] = 2
    image = 60 + 120 * (label == 1) + 60 * (label == 2) + rng.normal(0, 18, (size, size))
    return np.clip(image, 0, 255).astype(np.uint8), label


def make_synthetic_2d(
    raw_root: str | Path, dataset_id: int = 990, n_train: int = 16, n_test: int = 4, size: int = 64,
    seed: int = 0, overwrite: bool = False, name: str = "MedNeXtSynth2D",
) -> Path:
    """Write a 2D PNG dataset (disc = 1, square = 2) with ``imagesTs``/``labelsTs``; returns its folder."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    with new_dataset(Path(raw_root), dataset_id, name, overwrite) as stage:
        for i in range(n_train + n_test):
            image, label = _shapes_2d(rng, size)
            split = "Tr" if i < n_train else "Ts"
            case = f"synth_{i:03d}"
            Image.fromarray(image).save(stage.path / f"images{split}" / f"{case}_0000.png")
            Image.fromarray(label).save(stage.path / f"labels{split}" / f"{case}.png")
        write_dataset_json(stage.path, channel_names={"0": "gray"}, labels={"background": 0, "disc": 1, "square": 2},
                           num_training=n_train, file_ending=".png", name=name,
                           description="synthetic discs and squares written by nnunetv2-mednext")
    return stage.final


def make_synthetic_3d(
    raw_root: str | Path, dataset_id: int = 991, n_train: int = 6, n_test: int = 2, shape: tuple[int, int, int] = (24, 40, 40),
    spacing: tuple[float, float, float] = (2.0, 1.0, 1.0), seed: int = 0, overwrite: bool = False, name: str = "MedNeXtSynth3D",
) -> Path:
    """Write a 3D NIfTI dataset (ball = 1, box = 2; anisotropic spacing given z, y, x); returns its folder."""
    rng = np.random.default_rng(seed)
    with new_dataset(Path(raw_root), dataset_id, name, overwrite) as stage:
        _write_3d_cases(stage.path, rng, n_train, n_test, shape, spacing)
        write_dataset_json(stage.path, channel_names={"0": "MRI"}, labels={"background": 0, "ball": 1, "box": 2},
                           num_training=n_train, name=name)
    return stage.final


def _write_3d_cases(folder: Path, rng: np.random.Generator, n_train: int, n_test: int, shape: tuple[int, int, int],
                    spacing: tuple[float, float, float]) -> None:
    zz, yy, xx = np.mgrid[: shape[0], : shape[1], : shape[2]]
    for i in range(n_train + n_test):
        label = np.zeros(shape, np.uint8)
        r = rng.uniform(3, 6)
        c = [rng.uniform(r / s + 1, n - r / s - 1) for n, s in zip(shape, (spacing[0] / spacing[2], 1, 1))]
        dist = ((zz - c[0]) * spacing[0] / spacing[2]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2
        label[dist <= r * r] = 1
        z0, y0, x0 = rng.integers(1, shape[0] - 5), rng.integers(1, shape[1] - 9), rng.integers(1, shape[2] - 9)
        box = np.zeros(shape, bool)
        box[z0 : z0 + 4, y0 : y0 + 8, x0 : x0 + 8] = True
        label[box & (label == 0)] = 2
        image = (100 + 200 * (label == 1) + 100 * (label == 2) + rng.normal(0, 30, shape)).astype(np.float32)
        split = "Tr" if i < n_train else "Ts"
        case = f"synth_{i:03d}"
        write_image(folder / f"images{split}" / f"{case}_0000.nii.gz", image, spacing)
        write_label(folder / f"labels{split}" / f"{case}.nii.gz", label, spacing)
