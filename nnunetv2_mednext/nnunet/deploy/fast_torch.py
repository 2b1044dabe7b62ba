"""Mirrored copies of a tile as one batch inside nnU-Net's predictor, numerically equal to its own loop (opt-in).

nnU-Net runs a tile and then each mirrored copy of it one by one (``_internal_maybe_mirror_and_predict``: 4 network
calls per 2D tile, 8 per 3D tile). :func:`mirrored_predict` runs them in batches of ``NNUNETV2_MEDNEXT_MIRROR_BATCH``
and adds the un-mirrored outputs in nnU-Net's order, so the sum is the same to float rounding. The default is 1,
nnU-Net's own loop: on the 2-core CPU measured (``docs/deploy.md``) a batch of 8 3D tiles took 1.2-1.6x the time of
8 calls, since one tile already fills the cores. GPUs or CPUs with many cores may gain; the benchmark's
``torch-batched`` rows measure it.
"""

from __future__ import annotations

import itertools
import os
import types

import torch

MIRROR_BATCH_ENV = "NNUNETV2_MEDNEXT_MIRROR_BATCH"


def mirror_batch() -> int:
    text = os.environ.get(MIRROR_BATCH_ENV, "1")
    try:
        value = int(text)
    except ValueError:
        from nnunetv2_mednext.errors import MedNeXtUserError

        raise MedNeXtUserError(f"{MIRROR_BATCH_ENV}={text!r} is not a number; set it to a batch size such as 8, "
                               "or 1 for nnU-Net's tile-by-tile loop") from None
    return max(1, value)


def mirror_combinations(axes, ndim: int) -> list[tuple[int, ...]]:
    """nnU-Net's mirroring combinations (tensor axes) for allowed ``axes`` of a ``ndim``-D (B, C, *S) tile."""
    if axes is None:
        return []
    assert max(axes) <= ndim - 3, "mirror_axes does not match the dimension of the input!"
    shifted = [m + 2 for m in axes]
    return [c for i in range(len(shifted)) for c in itertools.combinations(shifted, i + 1)]


@torch.inference_mode()
def mirrored_predict(self, x: torch.Tensor, batch: int | None = None) -> torch.Tensor:
    """nnU-Net's ``_internal_maybe_mirror_and_predict`` with the mirrored copies run ``batch`` at a time
    (default ``NNUNETV2_MEDNEXT_MIRROR_BATCH``; 1 is nnU-Net's own method)."""
    step = batch or mirror_batch()
    combos = mirror_combinations(self.allowed_mirroring_axes if self.use_mirroring else None, x.ndim)
    if not combos or x.shape[0] != 1 or step == 1:
        return type(self)._internal_maybe_mirror_and_predict(self, x)
    inputs = [x, *(torch.flip(x, axes) for axes in combos)]
    outputs: list[torch.Tensor] = []
    for start in range(0, len(inputs), step):
        out = self.network(torch.cat(inputs[start:start + step], 0))
        outputs.extend(out[i:i + 1] for i in range(out.shape[0]))
    prediction = outputs[0].clone()
    for out, axes in zip(outputs[1:], combos):
        prediction += torch.flip(out, axes)
    prediction /= len(combos) + 1
    return prediction


def install_batched_mirroring(predictor) -> None:
    """Make ``predictor`` (an nnU-Net predictor instance) run mirrored copies of a tile in batches, when
    ``NNUNETV2_MEDNEXT_MIRROR_BATCH`` asks for more than 1."""
    if mirror_batch() > 1:
        predictor._internal_maybe_mirror_and_predict = types.MethodType(mirrored_predict, predictor)
