"""Dataset fingerprint (in the spirit of nnU-Net's): class counts, image sizes, channels, intensities and duplicates.

Every image is decoded once, so unreadable files are found here, before any training. The result is a JSON-able
dict, saved as ``fingerprint.json`` and reused while the files are unchanged (same ids, sizes and mtimes).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from pathlib import Path

import numpy as np

from nnunetv2_mednext.errors import MedNeXtUserError

from .duplicates import cross_class_groups, duplicate_groups
from .hashing import NEAR_HASH_BITS, NEAR_MIN_CORR, difference_hash, exact_hash, hash_hex, thumbnail
from .index import DatasetIndex
from .io import image_suffix, is_gray, read_image, to_unit

FORMAT = "nnunetv2_mednext.classification.fingerprint/2"  # /2: 256-bit near hash + thumbnail
# bits of 256. SARS-CoV-2 CT: adjacent slices of one scan differ by 30-48 bits; with the thumbnail test no pair within
# 44 bits crosses the two classes (at 56 bits 21 do). MSLD: only the exact pair is linked (docs/classification.md).
DEFAULT_NEAR_THRESHOLD = 44


def signature(index: DatasetIndex, near_threshold: int) -> str:
    """Changes when any file is added, removed, relabelled or modified."""
    h = hashlib.sha1(f"{FORMAT}|{near_threshold}".encode())
    for s in index.samples:
        st = os.stat(s.path)
        h.update(f"{s.id}|{s.label}|{s.group}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _stats(values: list[int]) -> dict:
    a = np.asarray(values)
    return {"min": int(a.min()), "median": float(np.median(a)), "max": int(a.max())}


def compute_fingerprint(
    index: DatasetIndex, near_threshold: int = DEFAULT_NEAR_THRESHOLD, progress: bool | None = None
) -> dict:
    """Decode every image of ``index`` and summarise it (see module docstring)."""
    from tqdm import tqdm

    per_image: dict[str, dict] = {}
    failures: list[tuple[str, str]] = []
    raw_min, raw_max = np.inf, -np.inf
    grey_sum = grey_sq = 0.0
    rgb_sum, rgb_sq = np.zeros(3), np.zeros(3)
    class_mean: dict[str, list[float]] = {c: [] for c in index.class_names}
    disable = True if progress is False else None
    for s in tqdm(index.samples, desc="fingerprint", unit="img", disable=disable, leave=False):
        try:
            arr = read_image(s.path)
        except MedNeXtUserError as e:
            failures.append((s.id, str(e)))
            continue
        unit = to_unit(arr)
        grey = unit.mean(axis=2)
        rgb = unit if unit.shape[2] == 3 else np.repeat(unit, 3, axis=2)
        g_mean, g_sq = float(grey.mean()), float((grey.astype(np.float64) ** 2).mean())
        grey_sum += g_mean
        grey_sq += g_sq
        rgb_sum += rgb.reshape(-1, 3).mean(0)
        rgb_sq += (rgb.reshape(-1, 3).astype(np.float64) ** 2).mean(0)
        class_mean[s.label].append(g_mean)
        raw_min, raw_max = min(raw_min, float(np.nanmin(arr))), max(raw_max, float(np.nanmax(arr)))
        per_image[s.id] = {
            "height": int(arr.shape[0]),
            "width": int(arr.shape[1]),
            "channels": int(arr.shape[2]),
            "grey": is_gray(arr),
            "dtype": str(arr.dtype),
            "exact": exact_hash(arr),
            "near": hash_hex(difference_hash(arr)),
            "thumb": thumbnail(arr),
            "mean": round(g_mean, 6),
        }
    if failures:
        _, msg = failures[0]
        more = f" ({len(failures)} unreadable images in all)" if len(failures) > 1 else ""
        raise MedNeXtUserError(msg + more)

    n = len(index)
    recs = [per_image[s.id] for s in index.samples]
    grey_images = sum(r["grey"] for r in recs)
    color_mode = "grey" if grey_images == n else "rgb"
    grey_mean = grey_sum / n
    rgb_mean = rgb_sum / n
    norm = {
        "grey": {"mean": [round(grey_mean, 6)], "std": [round(float(np.sqrt(max(grey_sq / n - grey_mean**2, 1e-12))), 6)]},
        "rgb": {
            "mean": [round(float(m), 6) for m in rgb_mean],
            "std": [round(float(np.sqrt(max(v, 1e-12))), 6) for v in (rgb_sq / n - rgb_mean**2)],
        },
    }
    exact_g, near_g = duplicate_groups([r["exact"] for r in recs], [int(r["near"], 16) for r in recs], near_threshold,
                                       [r["thumb"] for r in recs])
    ids = index.ids

    def named(groups: list[list[int]]) -> list[list[str]]:
        return [[ids[i] for i in g] for g in groups]

    cross = [
        {"kind": kind, "ids": [ids[i] for i in g], "labels": [index.samples[i].label for i in g]}
        for kind, groups in (("exact", exact_g), ("near", near_g))
        for g in cross_class_groups(index, groups)
    ]
    sizes = Counter((r["height"], r["width"]) for r in recs)
    (common, common_n) = sizes.most_common(1)[0]
    groups = [s.group for s in index.samples if s.group is not None]
    return {
        "format": FORMAT,
        "source": index.source,
        "kind": index.kind,
        "signature": signature(index, near_threshold),
        "n_images": n,
        "classes": list(index.class_names),
        "class_counts": index.class_counts(),
        "patient_groups": {"column": index.has_groups, "n_groups": len(set(groups)), "n_images_with_group": len(groups)},
        "image_size": {
            "height": _stats([r["height"] for r in recs]),
            "width": _stats([r["width"] for r in recs]),
            "distinct_sizes": len(sizes),
            "most_common": {"size": list(common), "count": common_n},
        },
        "channels": {
            "grey": sum(r["grey"] and r["channels"] == 1 for r in recs),
            "grey_stored_as_rgb": sum(r["grey"] and r["channels"] == 3 for r in recs),
            "colour": n - grey_images,
        },
        "color_mode": color_mode,
        "dtypes": dict(Counter(r["dtype"] for r in recs)),
        "formats": dict(Counter(image_suffix(s.path) for s in index.samples)),
        "intensity": {
            "raw_min": raw_min,
            "raw_max": raw_max,
            "unit_mean_per_class": {c: round(float(np.mean(v)), 4) if v else None for c, v in class_mean.items()},
        },
        "normalization": norm,
        "duplicates": {
            "near_threshold": near_threshold,
            "near_hash_bits": NEAR_HASH_BITS,
            "near_min_corr": NEAR_MIN_CORR,
            "exact_groups": named(exact_g),
            "near_groups": named(near_g),
            "n_images_in_exact_groups": sum(len(g) for g in exact_g),
            "n_images_in_near_groups": sum(len(g) for g in near_g),
            "cross_class": cross,
        },
        "per_image": per_image,
    }


def load_or_compute(
    index: DatasetIndex,
    path: str | os.PathLike | None,
    near_threshold: int = DEFAULT_NEAR_THRESHOLD,
    progress: bool | None = None,
    write: bool = True,
) -> tuple[dict, bool]:
    """The fingerprint of ``index``: read from ``path`` when its signature still matches, else computed (and
    written to ``path`` when ``write``). Returns ``(fingerprint, reused)``."""
    if path is not None and Path(path).is_file():
        try:
            fp = json.loads(Path(path).read_text())
            if fp.get("format") == FORMAT and fp.get("signature") == signature(index, near_threshold):
                return fp, True
        except (OSError, ValueError):
            pass
    fp = compute_fingerprint(index, near_threshold, progress)
    if path is not None and write:
        save_json(fp, path)
    return fp, False


def save_json(obj: dict, path: str | os.PathLike) -> None:
    """Write JSON atomically (temporary file, then rename)."""
    from nnunetv2_mednext.fsutil import atomic_write_text, ensure_writable

    path = Path(path)
    ensure_writable(path.parent)
    atomic_write_text(path, json.dumps(obj, indent=1, allow_nan=False))


def describe(fp: dict) -> list[str]:
    """Human-readable summary lines (no warnings; see :func:`warnings_for`)."""
    counts = ", ".join(f"{c} {k}" for c, k in fp["class_counts"].items())
    size = fp["image_size"]
    ch = fp["channels"]
    dup = fp["duplicates"]
    lines = [
        f"dataset   {fp['source']} ({fp['kind']}): {fp['n_images']} images, {len(fp['classes'])} classes: {counts}",
        f"sizes     height {size['height']['min']}-{size['height']['max']} (median {size['height']['median']:g}), "
        f"width {size['width']['min']}-{size['width']['max']} (median {size['width']['median']:g}); "
        f"{size['distinct_sizes']} distinct, most common {size['most_common']['size'][0]}x{size['most_common']['size'][1]} "
        f"({size['most_common']['count']})",
        f"channels  {ch['grey']} grey, {ch['grey_stored_as_rgb']} grey stored as RGB, {ch['colour']} colour "
        f"-> model input {fp['color_mode']}; dtypes {fp['dtypes']}; formats {fp['formats']}",
        f"intensity raw {fp['intensity']['raw_min']:g}..{fp['intensity']['raw_max']:g}; mean (0-1) per class "
        + ", ".join(f"{c} {v}" for c, v in fp["intensity"]["unit_mean_per_class"].items()),
    ]
    if fp["patient_groups"]["column"]:
        pg = fp["patient_groups"]
        lines.append(f"patients  {pg['n_groups']} groups ({pg['n_images_with_group']} images with a group id)")
    near = (
        f"{len(dup['near_groups'])} near-duplicate groups (dHash <= {dup['near_threshold']} of "
        f"{dup.get('near_hash_bits', NEAR_HASH_BITS)} bits and thumbnail r >= {dup.get('near_min_corr', NEAR_MIN_CORR)}, "
        f"{dup['n_images_in_near_groups']} images)"
        if dup["near_threshold"] >= 0
        else "near-duplicate check off"
    )
    lines.append(
        f"duplicates {len(dup['exact_groups'])} exact groups ({dup['n_images_in_exact_groups']} images), {near}; "
        f"{len(dup['cross_class'])} groups span classes"
    )
    return lines


def warnings_for(fp: dict, limit: int = 10, members: int = 4) -> list[str]:
    """One warning per duplicate group that spans classes (at most ``limit``), naming at most ``members`` files."""
    out = []
    for g in fp["duplicates"]["cross_class"][:limit]:
        pairs = list(zip(g["ids"], g["labels"]))
        files = " == ".join(f"{i} [{lab}]" for i, lab in pairs[:members])
        if len(pairs) > members:
            counts = Counter(g["labels"])
            files += f" == ... ({len(pairs)} images in all: " + ", ".join(f"{c} {k}" for c, k in sorted(counts.items())) + ")"
        out.append(f"{g['kind']} duplicate images with different labels: {files}")
    extra = len(fp["duplicates"]["cross_class"]) - limit
    if extra > 0:
        out.append(f"... and {extra} more duplicate groups with different labels (see fingerprint.json)")
    return out


def read_fingerprint(path: str | os.PathLike) -> dict:
    try:
        fp = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise MedNeXtUserError(f"cannot read fingerprint {str(path)!r} ({e}); fix: recompute it") from None
    return fp


