"""Image hashes for duplicate detection (own code).

* exact: SHA-1 of the *decoded* pixels (dtype, shape and bytes), so a PNG and a lossless TIFF of the same pixels match
  but a re-encoded JPEG does not;
* near: a 64-bit difference hash (dHash): the grey image is box-downsampled to 9x8 and each bit says whether a pixel
  is brighter than its left neighbour. Small edits (re-compression, resizing, a caliper mark) flip few bits.
"""

from __future__ import annotations

import hashlib

import numpy as np

from .io import to_unit

NEAR_HASH_BITS = 64


def exact_hash(arr: np.ndarray) -> str:
    h = hashlib.sha1()
    h.update(f"{arr.dtype.str}|{arr.shape}|".encode())
    h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def difference_hash(arr: np.ndarray, size: int = 8) -> int:
    """dHash of a ``(H, W, C)`` image as an integer of ``size * size`` bits."""
    from PIL import Image

    grey = to_unit(arr).mean(axis=2).astype(np.float32)
    small = np.asarray(Image.fromarray(grey).resize((size + 1, size), Image.Resampling.BOX), dtype=np.float32)
    bits = (small[:, 1:] > small[:, :-1]).ravel()
    return int("".join("1" if b else "0" for b in bits), 2)


def _popcount64(x: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x).astype(np.int64)
    table = np.array([bin(i).count("1") for i in range(256)], dtype=np.int64)
    return table[x.view(np.uint8).reshape(*x.shape, 8)].sum(-1)


def near_pairs(hashes: list[int], threshold: int, block: int = 1024) -> list[tuple[int, int]]:
    """Index pairs ``(i, j), i < j`` whose hashes differ in at most ``threshold`` bits."""
    if threshold < 0 or len(hashes) < 2:
        return []
    h = np.array(hashes, dtype=np.uint64)
    pairs: list[tuple[int, int]] = []
    for start in range(0, len(h), block):
        rows = h[start : start + block]
        dist = _popcount64(rows[:, None] ^ h[None, :])
        ii, jj = np.nonzero(dist <= threshold)
        ii = ii + start
        keep = jj > ii
        pairs += list(zip(ii[keep].tolist(), jj[keep].tolist()))
    return pairs
