"""Entries of an nnU-Net configuration that its default planner writes the same way for every dataset."""

from __future__ import annotations

from typing import Any


def default_resampling() -> dict[str, Any]:
    """The resampling entries of an nnU-Net configuration as its default planner writes them (cubic data, linear
    segmentations and probabilities, no separate z axis)."""
    data = {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None}
    return {
        "resampling_fn_data": "resample_data_or_seg_to_shape",
        "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": data,
        "resampling_fn_seg_kwargs": {**data, "is_seg": True, "order": 1},
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": {**data, "order": 1},
    }
