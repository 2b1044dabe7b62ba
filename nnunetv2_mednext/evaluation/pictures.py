"""What a Dice means, as pictures: for each compared model its best, median and worst case, the image with the
reference and predicted outlines (3D cases: the slice with the most reference foreground).

Inputs are what ``compare`` already collects per fold (``cases``: case id, mean foreground DSC, prediction and
reference files) plus the raw images (``$nnUNet_raw/DatasetXXX_Name/images{Tr,Ts}/<case>_0000<ending>``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

GT_COLOUR, PRED_COLOUR = "#00e000", "#ff00ff"


def read_array(path: Path) -> np.ndarray:
    """PNG/BMP/TIFF as ``(H, W)`` or ``(H, W, 3)``; NIfTI/MHA/NRRD as numpy ``(z, y, x)``."""
    name = path.name.lower()
    if name.endswith((".png", ".bmp", ".tif", ".tiff", ".jpg", ".jpeg")):
        from PIL import Image

        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB") if im.mode in ("RGBA", "P") else im)
        return arr[..., :3] if arr.ndim == 3 else arr
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def pick(cases: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """``[("best", c), ("median", c), ("worst", c)]`` by mean foreground DSC (ties: case id)."""
    ranked = sorted(cases, key=lambda c: (-c["dsc"], c["case"]))
    if not ranked:
        return []
    return [("best", ranked[0]), ("median", ranked[(len(ranked) - 1) // 2]), ("worst", ranked[-1])]


def find_image(raw_dataset: Path, case: str, ending: str) -> Path | None:
    for sub in ("imagesTr", "imagesTs"):
        p = raw_dataset / sub / f"{case}_0000{ending}"
        if p.is_file():
            return p
    return None


def _slice(image: np.ndarray, gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """2D views: natural images as they are; volumes at the axial slice with the most reference (else predicted)
    foreground."""
    if gt.ndim == 2:
        return image, gt, pred, ""
    area = (gt > 0).reshape(gt.shape[0], -1).sum(1)
    if not area.any():
        area = (pred > 0).reshape(pred.shape[0], -1).sum(1)
    z = int(area.argmax()) if area.any() else gt.shape[0] // 2
    return image[z], gt[z], pred[z], f", slice {z}"


def _display(image: np.ndarray) -> np.ndarray:
    img = image.astype(np.float32)
    lo, hi = np.percentile(img, (0.5, 99.5))
    return np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1)


def write_case_pictures(comp: dict[str, Any], path: Path, raw_dataset: Path) -> list[dict[str, Any]]:
    """``path`` (PNG): one row per model, columns best / median / worst. Returns the cases drawn (for the report);
    models whose images or files cannot be found are left out, with the reason in ``missing``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ending = _file_ending(comp, raw_dataset)
    rows = []
    for e in comp["models"]:
        cases = [c for f in e["folds"].values() for c in f.get("cases", [])]
        chosen = pick(cases)
        if not chosen:
            continue
        views = []
        for which, c in chosen:
            img_path = find_image(raw_dataset, c["case"], ending)
            ref, pred = Path(c["reference"]) if c.get("reference") else None, Path(c["prediction"])
            if img_path is None or ref is None or not ref.is_file() or not pred.is_file():
                views = []
                break
            image, gt, pr, where = _slice(read_array(img_path), read_array(ref), read_array(pred))
            views.append((which, c, image, gt, pr, where))
        if views:
            rows.append((e["name"], views))
    if not rows:
        return []
    fig, axes = plt.subplots(len(rows), 3, figsize=(9.6, 3.3 * len(rows)), squeeze=False)
    drawn = []
    for r, (name, views) in enumerate(rows):
        for col, (which, c, image, gt, pr, where) in enumerate(views):
            ax = axes[r][col]
            ax.imshow(_display(image), cmap=None if image.ndim == 3 else "gray", interpolation="nearest")
            for mask, colour, style in ((gt, GT_COLOUR, "solid"), (pr, PRED_COLOUR, "dashed")):
                for k in np.unique(mask[mask > 0]):
                    ax.contour(mask == k, levels=[0.5], colors=[colour], linewidths=1.0, linestyles=style)
            ax.set_title(f"{name}\n{which}: {c['case']}{where}, DSC {100 * c['dsc']:.1f} %", fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
            drawn.append({"model": name, "which": which, "case": c["case"], "dsc": c["dsc"]})
    fig.suptitle("reference: solid green, prediction: dashed magenta", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return drawn


def _file_ending(comp: dict[str, Any], raw_dataset: Path) -> str:
    for p in [raw_dataset / "dataset.json", *(Path(e["folder"]) / "dataset.json" for e in comp["models"])]:
        if p.is_file():
            return json.loads(p.read_text()).get("file_ending", ".nii.gz")
    return ".nii.gz"


def raw_dataset_folder(dataset: str, raw: str | os.PathLike | None) -> Path | None:
    root = raw or os.environ.get("nnUNet_raw")
    if not root:
        return None
    folder = Path(root) / dataset
    return folder if folder.is_dir() else None
