"""Per-structure segmentation metrics: Dice and the 95th-percentile Hausdorff distance (HD95).

Two conventions are provided (``docs/protocols.md`` has the full tables):

* **mm mode** (``mm_metrics``, the project's default reporting): HD95 in mm using the voxel spacing. Empty cases:
  Dice is NaN when both masks are empty (nnU-Net's convention) and 0 when exactly one is empty; HD95 is NaN whenever
  either mask is empty (a distance to nothing is undefined). Means skip NaN and report how many values they use.
* **TransUNet mode** (``transunet_metrics``): the rules of TransUNet's ``calculate_metric_percase`` -- spacing ignored
  (HD95 in voxels of the stored grid), and
  prediction non-empty & reference non-empty: normal Dice and HD95;
  prediction non-empty & reference empty: Dice 1, HD95 0;
  prediction empty (reference empty or not): Dice 0, HD95 0.

Surfaces are the mask voxels with at least one face neighbour outside the mask (voxels on the array border count as
surface); distances between surfaces come from ``scipy.ndimage.distance_transform_edt`` with ``sampling=spacing``.
HD95 is the 95th percentile (linear interpolation) of the pooled directed surface distances in both directions.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

__all__ = ["dice", "hd95", "mm_metrics", "surface_distances", "transunet_metrics"]


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """2|P∩R| / (|P| + |R|); NaN when both masks are empty."""
    pred, ref = np.asarray(pred, bool), np.asarray(ref, bool)
    total = int(pred.sum()) + int(ref.sum())
    if total == 0:
        return float("nan")
    return 2.0 * int(np.logical_and(pred, ref).sum()) / total


def _surface(mask: np.ndarray) -> np.ndarray:
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def _crop_to_union(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Crop both masks to the bounding box of their union, padded by one background voxel on every side.

    The padding keeps the border semantics (outside the array counts as background) and every surface voxel inside,
    so surface detection and nearest-surface distances are unchanged.
    """
    coords = np.nonzero(a | b)
    box = tuple(slice(int(c.min()), int(c.max()) + 1) for c in coords)
    return np.pad(a[box], 1), np.pad(b[box], 1)


def surface_distances(a: np.ndarray, b: np.ndarray, spacing: Sequence[float] | None = None) -> np.ndarray:
    """Distances from every surface voxel of ``a`` to the nearest surface voxel of ``b`` (both must be non-empty)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    if not a.any() or not b.any():
        raise ValueError("surface distances need two non-empty masks")
    a, b = _crop_to_union(a, b)
    sampling = None if spacing is None else [float(s) for s in spacing]
    to_b = ndimage.distance_transform_edt(~_surface(b), sampling=sampling)
    return to_b[_surface(a)]


def hd95(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float] | None = None) -> float:
    """95th percentile of the symmetric surface distances (spacing units; voxels when ``spacing`` is None)."""
    pred, ref = np.asarray(pred, bool), np.asarray(ref, bool)
    if pred.shape != ref.shape:
        raise ValueError(f"shape mismatch {pred.shape} vs {ref.shape}")
    if spacing is not None and len(spacing) != pred.ndim:
        raise ValueError(f"spacing {tuple(spacing)} does not match a {pred.ndim}D mask")
    pooled = np.concatenate([surface_distances(pred, ref, spacing), surface_distances(ref, pred, spacing)])
    return float(np.percentile(pooled, 95))


def mm_metrics(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float] | None) -> tuple[float, float]:
    """(Dice, HD95 in spacing units) with the mm-mode empty-mask rules of the module docstring."""
    pred, ref = np.asarray(pred, bool), np.asarray(ref, bool)
    d = dice(pred, ref)
    if not pred.any() or not ref.any():
        return d, float("nan")
    return d, hd95(pred, ref, spacing)


def transunet_metrics(pred: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """(Dice, HD95 in voxels) with TransUNet's empty-mask rules (see the module docstring)."""
    pred, ref = np.asarray(pred, bool), np.asarray(ref, bool)
    if not pred.any():
        return 0.0, 0.0
    if not ref.any():
        return 1.0, 0.0
    return dice(pred, ref), hd95(pred, ref, None)
