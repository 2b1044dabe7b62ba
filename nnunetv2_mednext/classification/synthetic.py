"""A synthetic 2D classification set (ImageFolder layout) for tests and demos: noisy discs, squares and stripes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

CLASSES = ("circle", "square", "stripes")


def shape_image(kind: str, size: int, rng: np.random.Generator, noise: float = 0.1) -> np.ndarray:
    """One ``(size, size)`` uint8 image of ``kind`` at a random position/scale, with Gaussian noise."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    bg = rng.uniform(0.1, 0.3)
    fg = rng.uniform(0.7, 0.9)
    img = np.full((size, size), bg, dtype=np.float32)
    r = rng.uniform(0.25, 0.35) * size
    cy, cx = rng.uniform(r + 1, size - r - 1, size=2)
    if kind == "circle":
        img[(yy - cy) ** 2 + (xx - cx) ** 2 <= r**2] = fg
    elif kind == "square":
        img[(np.abs(yy - cy) <= r * 0.85) & (np.abs(xx - cx) <= r * 0.85)] = fg
    elif kind == "stripes":
        period = rng.uniform(0.18, 0.3) * size
        angle = rng.uniform(0, np.pi)
        phase = rng.uniform(0, 2 * np.pi)
        wave = np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period + phase)
        img = np.where(wave > 0, fg, bg).astype(np.float32)
    else:
        raise ValueError(f"unknown shape {kind!r}")
    img += rng.normal(0, noise, size=img.shape).astype(np.float32)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def make_shapes_dataset(root: str | os.PathLike, n_per_class: int = 30, size: int = 32, seed: int = 0,
                        classes: tuple[str, ...] = CLASSES, suffix: str = ".png") -> Path:
    """Write ``root/<class>/<class>_<i><suffix>`` and return ``root``."""
    from PIL import Image

    root = Path(root)
    rng = np.random.default_rng(seed)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            Image.fromarray(shape_image(c, size, rng)).save(root / c / f"{c}_{i:03d}{suffix}")
    return root
