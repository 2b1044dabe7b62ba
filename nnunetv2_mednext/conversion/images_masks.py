"""Image + mask folders (the layout most 2D sets ship in: endoscopy, dermoscopy, fundus, histology, ultrasound) to
nnU-Net's raw format for 2D natural images.

``SRC/images/<stem>.<jpg|png|tif|bmp>`` and ``SRC/masks/<stem>.<png|tif|...>`` are paired by stem. Images are
written as PNG (nnU-Net's ``NaturalImage2DIO`` reads PNG, BMP and TIFF but not lossy JPEG): RGB as one 3-channel
file ``<case>_0000.png`` with nnU-Net's natural-image channel names ``R``, ``G``, ``B``; grey images as one channel.
Masks become ``labelsTr/<case>.png`` with consecutive integer labels:

* grey / palette masks with values {0, 255} become {0, 1}; values already 0..K are kept;
* colour-coded RGB masks need a ``label_map`` (``{"background": [0, 0, 0], "polyp": [255, 0, 0]}``); grey values
  can be mapped too (``{"background": 0, "tumour": 128}``);
* lossy JPEG masks are thresholded (binary: at ``jpeg_threshold``), and how many pixels lay between the two
  levels is reported.

Every problem stops before anything is written, with one line naming the file and the fix.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nnunetv2_mednext.errors import MedNeXtUserError

from . import common
from .synapse import ConversionResult

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
LOSSY = (".jpg", ".jpeg")
RGB_CHANNELS = {"0": "R", "1": "G", "2": "B"}
GREY_CHANNELS = {"0": "L"}
AMBIGUOUS = (30, 225)  # JPEG mask pixels inside this band are reported: the threshold decided them


@dataclass
class _Pair:
    case: str
    image: Path
    mask: Path


def _files(folder: Path, what: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise MedNeXtUserError(f"no {what} folder {folder}; fix: pass SRC with images/ and masks/ inside, or "
                               f"--images DIR --masks DIR")
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or not p.is_file() or p.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if p.stem in found:
            raise MedNeXtUserError(f"two {what} files share the name {p.stem!r} ({found[p.stem].name}, {p.name}); "
                                   "fix: keep one of them")
        found[p.stem] = p
    if not found:
        raise MedNeXtUserError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}; fix: point --{what} at the "
                               "folder of the files")
    return found


def pair_files(images: Path, masks: Path) -> list[_Pair]:
    """Image and mask files matched by stem; an unmatched file on either side is an error."""
    imgs, msks = _files(images, "images"), _files(masks, "masks")
    no_mask = sorted(set(imgs) - set(msks))
    no_image = sorted(set(msks) - set(imgs))
    if no_mask:
        raise MedNeXtUserError(f"{len(no_mask)} image(s) without a mask in {masks}, first {imgs[no_mask[0]].name}; "
                               "fix: add the masks (same file name, any image extension) or remove those images")
    if no_image:
        raise MedNeXtUserError(f"{len(no_image)} mask(s) without an image in {images}, first {msks[no_image[0]].name}; "
                               "fix: add the images or remove those masks")
    bad = [s for s in imgs if "/" in s or "\\" in s or s.endswith("_0000")]
    if bad:
        raise MedNeXtUserError(f"file name {bad[0]!r} cannot be an nnU-Net case id; fix: rename it")
    return [_Pair(s, imgs[s], msks[s]) for s in sorted(imgs)]


def _read(path: Path) -> tuple[np.ndarray, str]:
    """Pixels as ``(H, W)`` or ``(H, W, 3)`` uint8/uint16 and the source mode (alpha and palettes resolved)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if mode == "P":
                return np.asarray(im), "P"  # palette masks: the indices are the labels
            if mode in ("RGBA", "LA", "PA"):
                im = im.convert("RGB" if mode == "RGBA" else "L")
            elif mode in ("CMYK", "YCbCr", "HSV"):
                im = im.convert("RGB")
            elif mode == "1":
                im = im.convert("L")
            arr = np.asarray(im)
    except (OSError, UnidentifiedImageError, SyntaxError) as e:
        raise MedNeXtUserError(f"cannot read {path} ({e}); fix: replace or remove the file") from None
    if arr.ndim == 3 and arr.shape[2] not in (1, 3):
        raise MedNeXtUserError(f"{path} has {arr.shape[2]} channels; fix: save it as grey or RGB")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.dtype not in (np.uint8, np.uint16):
        if np.issubdtype(arr.dtype, np.integer) and arr.min() >= 0 and arr.max() < 65536:
            arr = arr.astype(np.uint16)
        else:
            raise MedNeXtUserError(f"{path} holds {arr.dtype} pixels; fix: save it as 8- or 16-bit PNG/TIFF")
    return arr, mode


def _is_grey(arr: np.ndarray) -> bool:
    return arr.ndim == 2 or bool((arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all())


def parse_label_map(text: str | None) -> dict[str, int | tuple[int, ...]] | None:
    """``'{"background": [0,0,0], "polyp": [255,0,0]}'`` (or a JSON file's path) -> name -> grey value or RGB."""
    if text is None:
        return None
    raw = text
    if not text.lstrip().startswith("{") and Path(text).is_file():
        raw = Path(text).read_text()
    try:
        obj = json.loads(raw)
        if not isinstance(obj, dict) or not obj:
            raise ValueError("not a JSON object of name: value")
        out: dict[str, int | tuple[int, ...]] = {}
        for name, v in obj.items():
            if isinstance(v, int) and not isinstance(v, bool):
                out[str(name)] = v
            elif isinstance(v, list) and len(v) == 3 and all(isinstance(c, int) for c in v):
                out[str(name)] = tuple(v)
            else:
                raise ValueError(f"{name!r}: {v!r} is neither a grey value nor [R, G, B]")
    except ValueError as e:
        raise MedNeXtUserError(f"--label-map is not valid ({e}); fix: e.g. '{{\"background\": [0, 0, 0], "
                               "\"polyp\": [255, 0, 0]}' (the first entry is label 0)") from None
    if len(set(out.values())) != len(out):
        raise MedNeXtUserError("--label-map gives two labels the same value; fix: one value per label")
    return out


def _map_mask(pair: _Pair, arr: np.ndarray, label_map: dict) -> np.ndarray:
    colour = arr.ndim == 3
    out = np.full(arr.shape[:2], 255, dtype=np.uint8)
    for k, value in enumerate(label_map.values()):
        if isinstance(value, tuple):
            if not colour:
                if len(set(value)) != 1:
                    continue
                value = value[0]
                hit = arr == value
            else:
                hit = (arr == np.asarray(value, dtype=arr.dtype)).all(-1)
        else:
            hit = (arr == value).all(-1) if colour else arr == value
        out[hit] = k
    if (out == 255).any():
        left = arr[out == 255]
        values = Counter(map(tuple, left.reshape(-1, 3).tolist()) if colour else left.tolist()).most_common(3)
        raise MedNeXtUserError(
            f"{pair.mask.name}: {int((out == 255).sum())} pixels have values outside --label-map (most common "
            f"{', '.join(str(list(v) if colour else v) for v, _ in values)}); fix: add them to --label-map"
        )
    return out


@dataclass
class _MaskStats:
    thresholded: int = 0
    ambiguous_pixels: int = 0
    pixels: int = 0


def convert_mask(pair: _Pair, arr: np.ndarray, mode: str, label_map: dict | None, threshold: int,
                 stats: _MaskStats) -> np.ndarray:
    """One mask as consecutive integer labels (see the module docstring)."""
    if label_map is not None:
        return _map_mask(pair, arr, label_map)
    if arr.ndim == 3:
        if not _is_grey(arr):
            colours = Counter(map(tuple, arr.reshape(-1, 3)[:: max(1, arr.size // 30000)].tolist())).most_common(4)
            raise MedNeXtUserError(
                f"{pair.mask.name} is a colour-coded mask (colours such as {', '.join(str(list(c)) for c, _ in colours)}"
                "); fix: pass --label-map '{\"background\": [0, 0, 0], \"NAME\": [R, G, B], ...}'"
            )
        arr = arr[..., 0]
    values = np.unique(arr)
    if pair.mask.suffix.lower() in LOSSY and mode != "P":
        stats.thresholded += 1
        stats.pixels += arr.size
        stats.ambiguous_pixels += int(((arr > AMBIGUOUS[0]) & (arr < AMBIGUOUS[1])).sum())
        return (arr > threshold).astype(np.uint8)
    if set(values.tolist()) <= {0, 255}:
        return (arr == 255).astype(np.uint8)
    if values.max() < 255 and values.min() >= 0:
        return arr.astype(np.uint8)
    raise MedNeXtUserError(
        f"{pair.mask.name} holds unexpected values {values[:6].tolist()}{'...' if len(values) > 6 else ''} (expected "
        "0/255, 0/1 or labels 0..K); fix: pass --label-map to say which value is which label"
    )


def _test_ids(cases: list[str], test_cases: int, test_list: str | Path | None, seed: int) -> list[str]:
    if test_list is not None:
        try:
            wanted = [ln.strip() for ln in Path(test_list).read_text().splitlines() if ln.strip()]
        except OSError as e:
            raise MedNeXtUserError(f"cannot read --test-list {test_list} ({e}); fix: pass a text file, one name a "
                                   "line") from None
        stems = [Path(w).stem if Path(w).suffix.lower() in IMAGE_SUFFIXES else w for w in wanted]
        unknown = [s for s in stems if s not in set(cases)]
        if unknown:
            raise MedNeXtUserError(f"--test-list names {len(unknown)} case(s) that are not in the images, first "
                                   f"{unknown[0]!r}; fix: list file names (or stems) of the images folder")
        test = sorted(set(stems))
    else:
        test = sorted(random.Random(seed).sample(cases, test_cases)) if test_cases else []
    if len(cases) - len(test) < 2:
        raise MedNeXtUserError(f"holding out {len(test)} of {len(cases)} cases leaves fewer than 2 for training; "
                               "fix: hold out fewer cases")
    return test


def convert_images_masks(
    src: str | Path | None = None, out_root: str | Path | None = None, *, images: str | Path | None = None,
    masks: str | Path | None = None, dataset_id: int = 500, name: str = "ImagesMasks",
    labels: Sequence[str] | None = None, label_map: dict | None = None, channel_names: Sequence[str] | None = None,
    test_cases: int = 0, test_list: str | Path | None = None, seed: int = 0, jpeg_threshold: int = 127,
    write_splits: bool = False, preprocessed: str | Path | None = None, overwrite: bool = False,
    log: Callable[[str], None] = print,
) -> ConversionResult:
    """``SRC/images`` + ``SRC/masks`` (or ``images``/``masks``) -> ``DatasetXXX_Name`` for nnU-Net's 2D natural-image
    reader; ``test_cases`` drawn with ``seed`` (or ``test_list``) go to ``imagesTs``/``labelsTs``."""
    from PIL import Image

    if src is None and (images is None or masks is None):
        raise MedNeXtUserError("no source; fix: pass SRC (with images/ and masks/) or both --images and --masks")
    img_dir = Path(images) if images is not None else Path(src) / "images"
    msk_dir = Path(masks) if masks is not None else Path(src) / "masks"
    if test_cases < 0:
        raise MedNeXtUserError(f"--test-cases must be >= 0, got {test_cases}; fix: pass 0 or more")
    if test_cases and test_list is not None:
        raise MedNeXtUserError("--test-cases and --test-list both given; fix: pass one of them")
    if not 0 <= jpeg_threshold < 255:
        raise MedNeXtUserError(f"--jpeg-threshold must be in 0..254, got {jpeg_threshold}; fix: e.g. 127")
    if write_splits:
        common.splits_root(preprocessed)
    pairs = pair_files(img_dir, msk_dir)
    test_ids = _test_ids([p.case for p in pairs], test_cases, test_list, seed)
    root = common.raw_root(out_root)

    # first pass: read and check everything, nothing written
    grey_flags: list[bool] = []
    stats = _MaskStats()
    first_seen: dict[int, str] = {}
    for pair in pairs:
        img, _ = _read(pair.image)
        msk, mode = _read(pair.mask)
        if img.shape[:2] != msk.shape[:2]:
            raise MedNeXtUserError(f"{pair.case}: image {pair.image.name} is {img.shape[1]}x{img.shape[0]} px but its "
                                   f"mask {pair.mask.name} is {msk.shape[1]}x{msk.shape[0]}; fix: resize or re-export "
                                   "the mask to the image's size")
        grey_flags.append(_is_grey(img))
        for v in np.unique(convert_mask(pair, msk, mode, label_map, jpeg_threshold, stats)).tolist():
            first_seen.setdefault(int(v), pair.mask.name)
    present = set(first_seen)
    if label_map is None and sorted(present | {0}) != list(range(max(present) + 1)):
        gap = min(set(range(max(present) + 1)) - present - {0}, default=0)
        odd = min(v for v in present if v > gap)
        raise MedNeXtUserError(f"the masks hold labels {sorted(present)}, not consecutive from 0 (label {odd} first in "
                               f"{first_seen[odd]}); fix: pass --label-map to say which value is which label")
    n_labels = len(label_map) - 1 if label_map is not None else max(max(present), 1)
    if labels is not None and len(labels) != n_labels:
        raise MedNeXtUserError(f"{len(labels)} label name(s) given but the masks hold {n_labels} foreground "
                               f"label(s); fix: pass exactly {n_labels} names")
    names = list(label_map)[1:] if label_map is not None else list(labels or (
        ["foreground"] if n_labels == 1 else [f"class_{k}" for k in range(1, n_labels + 1)]))
    rgb = not all(grey_flags)
    n_channels = 3 if rgb else 1
    if channel_names is not None and len(channel_names) != n_channels:
        raise MedNeXtUserError(f"--channel-names gives {len(channel_names)} name(s) for {n_channels}-channel images; "
                               f"fix: pass {n_channels} comma-separated names")
    channels = ({str(i): n for i, n in enumerate(channel_names)} if channel_names is not None
                else (RGB_CHANNELS if rgb else GREY_CHANNELS))
    notes = []
    if rgb and any(grey_flags):
        notes.append(f"{sum(grey_flags)} of {len(pairs)} images are grey and {len(pairs) - sum(grey_flags)} colour: "
                     "all are written as RGB (grey replicated to 3 channels)")
    if stats.thresholded:
        share = stats.ambiguous_pixels / max(stats.pixels, 1)
        notes.append(f"{stats.thresholded} lossy JPEG mask(s) thresholded at > {jpeg_threshold}; "
                     f"{stats.ambiguous_pixels} pixels ({100 * share:.3f} %) lay between {AMBIGUOUS[0]} and "
                     f"{AMBIGUOUS[1]} (decided by the threshold)")

    with common.new_dataset(root, dataset_id, name, overwrite, sources=(img_dir, msk_dir)) as stage:
        folder = stage.path
        for pair in pairs:
            tag = "Ts" if pair.case in test_ids else "Tr"
            img, _ = _read(pair.image)
            if img.dtype != np.uint8 and rgb:
                img = (img // 257).astype(np.uint8)  # 16-bit colour is rare; PNG RGB is written as 8-bit
            if rgb and img.ndim == 2:
                img = np.repeat(img[..., None], 3, axis=2)
            elif not rgb and img.ndim == 3:
                img = img[..., 0]
            Image.fromarray(img).save(folder / f"images{tag}" / f"{pair.case}_0000.png")
            msk, mode = _read(pair.mask)
            lab = convert_mask(pair, msk, mode, label_map, jpeg_threshold, _MaskStats())
            Image.fromarray(lab).save(folder / f"labels{tag}" / f"{pair.case}.png")
        common.write_dataset_json(
            folder, channel_names=channels, labels={"background": 0, **{n: k for k, n in enumerate(names, 1)}},
            num_training=len(pairs) - len(test_ids), file_ending=".png", name=stage.final.name,
            conversion={"tool": "nnunetv2-mednext convert images-masks", "images": img_dir.name,
                        "masks": msk_dir.name, "cases": len(pairs), "test": test_ids, "seed": seed,
                        "notes": notes},
        )
    final = stage.final
    train_ids = [p.case for p in pairs if p.case not in test_ids]
    splits_file = None
    if write_splits:
        splits_file = common.write_splits(common.five_fold_splits(train_ids), final.name, preprocessed, overwrite)
    for n in notes:
        log(f"note: {n}")
    log(f"wrote {final} ({len(train_ids)} training, {len(test_ids)} test cases, {n_channels} channel(s) "
        f"{'/'.join(channels.values())}, labels {names})")
    return ConversionResult(final, train_ids, test_ids, [], splits_file, "images-masks")
