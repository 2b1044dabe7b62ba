"""Torch datasets over an image index: decoded images are resized once and kept in memory as uint8."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from .index import Sample
from .io import load_for_model

CACHE_LIMIT_BYTES = 8 * 1024**3


class ImageCache:
    """``(C, size, size)`` uint8 views of ``samples``, decoded once (``cache``) or on every access."""

    def __init__(self, samples: Sequence[Sample], size: int, channels: int, cache: str = "auto",
                 progress: bool | None = None) -> None:
        self.samples, self.size, self.channels = list(samples), size, channels
        need = len(self.samples) * channels * size * size
        self.cached = cache == "on" or (cache == "auto" and need <= CACHE_LIMIT_BYTES)
        self.array: np.ndarray | None = None
        if self.cached:
            from tqdm import tqdm

            self.array = np.empty((len(self.samples), channels, size, size), dtype=np.uint8)
            disable = True if progress is False else None
            for i, s in enumerate(tqdm(self.samples, desc="load images", unit="img", disable=disable, leave=False)):
                self.array[i] = load_for_model(s.path, size, channels)

    def __len__(self) -> int:
        return len(self.samples)

    def get(self, i: int) -> np.ndarray:
        if self.array is not None:
            return self.array[i]
        return load_for_model(self.samples[i].path, self.size, self.channels)


class FoldDataset(Dataset):
    """Items ``(uint8 image tensor, label, position in the index)`` for a subset of the cache."""

    def __init__(self, cache: ImageCache, positions: Sequence[int], labels: np.ndarray,
                 augmentation: Callable | None = None) -> None:
        self.cache, self.positions = cache, list(positions)
        self.labels = np.asarray(labels)[self.positions] if len(self.positions) else np.zeros(0, dtype=np.int64)
        self.augmentation = augmentation

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, k: int) -> tuple[torch.Tensor, int, int]:
        pos = self.positions[k]
        x = torch.from_numpy(np.array(self.cache.get(pos), copy=True))
        if self.augmentation is not None:
            x = self.augmentation(x)
        return x, int(self.labels[k]), pos


class BalancedEpochSampler(Sampler[int]):
    """Class-balanced sampling with replacement, identical on every rank for a given (seed, epoch); each rank takes
    every ``world``-th draw. ``num_samples`` is the per-epoch total over all ranks."""

    def __init__(self, labels: np.ndarray, num_samples: int, seed: int, rank: int = 0, world: int = 1) -> None:
        counts = np.bincount(labels, minlength=int(labels.max()) + 1).astype(np.float64)
        w = 1.0 / counts[labels]
        self.weights = torch.as_tensor(w / w.sum(), dtype=torch.float64)
        self.total = int(np.ceil(num_samples / world)) * world
        self.seed, self.rank, self.world, self.epoch = seed, rank, world, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1000003 + self.epoch)
        draw = torch.multinomial(self.weights, self.total, replacement=True, generator=g)
        return iter(draw[self.rank :: self.world].tolist())

    def __len__(self) -> int:
        return self.total // self.world


def class_weights(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    """Inverse-frequency loss weights, scaled so a balanced dataset gets all ones (absent classes: 0)."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    w = np.where(counts > 0, counts.sum() / (num_classes * np.maximum(counts, 1)), 0.0)
    return torch.as_tensor(w, dtype=torch.float32)
