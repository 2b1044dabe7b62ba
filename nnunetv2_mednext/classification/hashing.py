"""Image hashes for duplicate detection (own code).

* exact: SHA-1 of the *decoded* pixels (dtype, shape and bytes), so a PNG and a lossless TIFF of the same pixels match
  but a re-encoded JPEG does not;
* near: a 256-bit difference hash (dHash): the grey image is box-downsampled to 17x16 and each bit says whether a
  pixel is brighter than its left neighbour. Small edits (re-compression, resizing, a caliper mark) flip few bits;
* thumbnail: the grey image box-downsampled to 16x16 (uint8). Two images whose hashes are close are near duplicates
  only when their thumbnails also correlate (Pearson r >= ``NEAR_MIN_CORR``): a smooth, low-texture image (skin,
  a blank background) has a hash dominated by its illumination gradient, so different smooth images can share
  most hash bits but not their thumbnails.

Why 256 bits and not 64: on the SARS-CoV-2 CT slices (2,481 lung CTs that all look alike at 9x8 pixels) a 64-bit
hash within 6 bits links 77,630 pairs, 46 % of them across the two classes (random pairs: 50 %), which chains 1,852
slices into one group. The 256-bit hash within 44 bits plus the thumbnail test links 548 pairs, none across classes
(docs/classification.md, "Near duplicates").
"""

from __future__ import annotations

import base64
import hashlib

import numpy as np

from .io import to_unit

HASH_SIZE = 16  # dHash grid: HASH_SIZE x HASH_SIZE bits
NEAR_HASH_BITS = HASH_SIZE * HASH_SIZE
THUMB_SIZE = 16
NEAR_MIN_CORR = 0.9


def exact_hash(arr: np.ndarray) -> str:
    h = hashlib.sha1()
    h.update(f"{arr.dtype.str}|{arr.shape}|".encode())
    h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def _grey(arr: np.ndarray):
    from PIL import Image

    return Image.fromarray(to_unit(arr).mean(axis=2).astype(np.float32))


def difference_hash(arr: np.ndarray, size: int = HASH_SIZE) -> int:
    """dHash of a ``(H, W, C)`` image as an integer of ``size * size`` bits."""
    from PIL import Image

    small = np.asarray(_grey(arr).resize((size + 1, size), Image.Resampling.BOX), dtype=np.float32)
    bits = (small[:, 1:] > small[:, :-1]).ravel()
    return int("".join("1" if b else "0" for b in bits), 2)


def thumbnail(arr: np.ndarray, size: int = THUMB_SIZE) -> str:
    """The grey ``size x size`` box thumbnail as base64 of its uint8 bytes."""
    from PIL import Image

    small = np.asarray(_grey(arr).resize((size, size), Image.Resampling.BOX), dtype=np.float32)
    return base64.b64encode(np.clip(np.round(small * 255), 0, 255).astype(np.uint8).tobytes()).decode("ascii")


def hash_hex(h: int, bits: int = NEAR_HASH_BITS) -> str:
    return f"{h:0{bits // 4}x}"


def _packed(hashes: list[int], bits: int) -> np.ndarray:
    """``(n, bits / 64)`` uint64 words of each hash."""
    n_words = max(1, -(-bits // 64))
    out = np.zeros((len(hashes), n_words), dtype=np.uint64)
    mask = (1 << 64) - 1
    for i, h in enumerate(hashes):
        for w in range(n_words):
            out[i, w] = (h >> (64 * w)) & mask
    return out


def _popcount64(x: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x).astype(np.int64)
    table = np.array([bin(i).count("1") for i in range(256)], dtype=np.int64)
    return table[x.view(np.uint8).reshape(*x.shape, 8)].sum(-1)


def _standardised(thumbs: list[str]) -> np.ndarray:
    t = np.stack([np.frombuffer(base64.b64decode(s), dtype=np.uint8) for s in thumbs]).astype(np.float64)
    t -= t.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(t, axis=1, keepdims=True)
    return np.divide(t, norm, out=np.zeros_like(t), where=norm > 0)


def near_pairs(hashes: list[int], threshold: int, thumbs: list[str] | None = None, min_corr: float = NEAR_MIN_CORR,
               bits: int = NEAR_HASH_BITS) -> list[tuple[int, int]]:
    """Index pairs ``(i, j), i < j`` whose hashes differ in at most ``threshold`` bits and, when ``thumbs`` are
    given, whose thumbnails correlate with Pearson r >= ``min_corr`` (two flat thumbnails count as r = 1)."""
    if threshold < 0 or len(hashes) < 2:
        return []
    h = _packed(hashes, bits)
    n, n_words = h.shape
    block = max(1, (1 << 22) // (n * n_words))  # about 32 MB of XOR words per block
    ii_all, jj_all = [], []
    for start in range(0, n, block):
        rows = h[start : start + block]
        dist = _popcount64(rows[:, None, :] ^ h[None, :, :]).sum(-1)
        ii, jj = np.nonzero(dist <= threshold)
        ii = ii + start
        keep = jj > ii
        ii_all.append(ii[keep])
        jj_all.append(jj[keep])
    ii = np.concatenate(ii_all)
    jj = np.concatenate(jj_all)
    if thumbs is not None and len(ii):
        z = _standardised(thumbs)
        flat = ~z.any(axis=1)
        r = np.einsum("ij,ij->i", z[ii], z[jj])
        keep = (r >= min_corr) | (flat[ii] & flat[jj])
        ii, jj = ii[keep], jj[keep]
    return list(zip(ii.tolist(), jj.tolist()))
