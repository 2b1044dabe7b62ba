"""Folder-versus-folder evaluation: per case and per class Dice and HD95 in mm and/or under TransUNet's rules.

``evaluate_folders`` pairs files by name (``case.nii.gz`` in both folders), computes the metrics of
``nnunetv2_mednext.evaluation.metrics`` for each foreground label, and summarises them. ``write_reports`` writes

* ``summary.json``: nnU-Net-like keys (``metric_per_case``, ``mean`` per label, ``foreground_mean``) plus ``std``,
  ``count``, ``foreground_std`` and the conventions used;
* ``per_case.csv`` and ``summary.csv``;
* ``table.md``: the paper-style table (Method | Mean DSC | HD95 | one DSC column per structure, in the paper's column
  order for Synapse and ACDC) and a per-class mean ± std table.

Means: per class, the mean over cases (NaN skipped); the overall mean is the mean over classes of the class means
(TransUNet's rule). Std: per class, over cases; overall, over cases of the per-case mean over classes (ddof = 0).
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from nnunetv2_mednext.errors import MedNeXtUserError
from nnunetv2_mednext.image_io import read_image

from .metrics import dice, mm_metrics, transunet_metrics

SUPPORTED_ENDINGS = (".nii.gz", ".nii", ".png", ".mha", ".nrrd", ".bmp", ".tif", ".tiff")
MODES = ("mm", "transunet")
#: metric keys per mode: (Dice key, HD95 key)
MODE_KEYS = {"mm": ("Dice", "HD95_mm"), "transunet": ("DSC_transunet", "HD95_transunet_px")}
MODE_TITLES = {
    "mm": "nnU-Net style: DSC %, HD95 in mm from the image spacing (empty masks: Dice NaN if both empty, HD95 NaN)",
    "transunet": "TransUNet protocol: DSC %, HD95 in voxels, spacing ignored, calculate_metric_percase empty-mask rules",
}
#: label name (lower case) -> column title, in the column order of the published TransUNet-protocol tables
PAPER_COLUMNS = {
    "synapse": {"aorta": "Aorta", "gallbladder": "Gallbl.", "kidney_left": "Kid (L)", "kidney_right": "Kid (R)",
                "liver": "Liver", "pancreas": "Pancreas", "spleen": "Spleen", "stomach": "Stomach"},
    "acdc": {"rv": "RV", "myo": "Myo", "lv": "LV"},
}


# ---------------------------------------------------------------------------------------------------------- reading
def read_label_map(path: str | os.PathLike) -> tuple[np.ndarray, tuple[float, ...]]:
    """Integer label map and its spacing in numpy axis order (``(z, y, x)`` or ``(y, x)``)."""
    import SimpleITK as sitk

    img = read_image(path)
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise MedNeXtUserError(f"{path} has {img.GetNumberOfComponentsPerPixel()} channels; fix: save label maps as gray")
    array = sitk.GetArrayFromImage(img)
    if array.ndim == 3 and array.shape[0] == 1 and str(path).lower().endswith((".png", ".bmp", ".tif", ".tiff")):
        array = array[0]
    spacing = tuple(float(s) for s in reversed(img.GetSpacing()))[-array.ndim:]
    return np.rint(array).astype(np.int64) if array.dtype.kind == "f" else array.astype(np.int64), spacing


def _ending(name: str) -> str | None:
    low = name.lower()
    return next((e for e in SUPPORTED_ENDINGS if low.endswith(e)), None)


def find_pairs(gt_folder: Path, pred_folder: Path, file_ending: str | None = None, allow_missing: bool = False,
               only_predicted: bool = False) -> tuple[list[tuple[str, Path, Path | None]], str]:
    """``[(case, gt_file, pred_file or None)]`` and the file ending used. ``only_predicted``: keep only the references
    that have a prediction (a prediction without a reference is then an error)."""
    for folder, what in ((gt_folder, "reference"), (pred_folder, "prediction")):
        if not folder.is_dir():
            raise MedNeXtUserError(f"{what} folder {folder} does not exist; fix: check the path")
    gt_files = [p for p in gt_folder.iterdir() if p.is_file() and _ending(p.name)]
    if file_ending is None:
        counts: dict[str, int] = {}
        for p in gt_files:
            counts[_ending(p.name)] = counts.get(_ending(p.name), 0) + 1  # type: ignore[index]
        if not counts:
            raise MedNeXtUserError(f"no label files ({', '.join(SUPPORTED_ENDINGS)}) in {gt_folder}; fix: check the path")
        file_ending = max(counts, key=lambda e: counts[e])
    gt = {p.name[: -len(file_ending)]: p for p in gt_files if p.name.lower().endswith(file_ending.lower())}
    if not gt:
        raise MedNeXtUserError(f"no *{file_ending} files in {gt_folder}; fix: check the path or --file-ending")
    pred = {p.name[: -len(file_ending)]: p for p in pred_folder.iterdir()
            if p.is_file() and p.name.lower().endswith(file_ending.lower())}
    if only_predicted:
        orphans = sorted(set(pred) - set(gt))
        if orphans:
            raise MedNeXtUserError(f"{len(orphans)} prediction(s) without a reference in {gt_folder} "
                                   f"({', '.join(orphans[:5])}); fix: pass the right reference folder")
        if not pred:
            raise MedNeXtUserError(f"no *{file_ending} predictions in {pred_folder}; fix: check the path")
        gt = {c: p for c, p in gt.items() if c in pred}
    missing = sorted(set(gt) - set(pred))
    if missing and not allow_missing:
        raise MedNeXtUserError(
            f"{len(missing)} of {len(gt)} cases have no prediction in {pred_folder} ({', '.join(missing[:5])}"
            f"{' ...' if len(missing) > 5 else ''}); fix: predict them, or pass --allow-missing to score them as empty"
        )
    return [(c, gt[c], pred.get(c)) for c in sorted(gt)], file_ending


def resolve_labels(labels: Sequence[int] | dict[int, str] | None, dataset_json: str | os.PathLike | None,
                   gt_folder: Path, pred_folder: Path) -> dict[int, str] | None:
    """Foreground labels to score: explicit, else from a dataset.json (given, in the prediction folder, or beside the
    reference folder), else None (= every foreground value found in the references)."""
    if isinstance(labels, dict):
        return {int(k): str(v) for k, v in labels.items() if int(k) != 0}
    candidates = [Path(dataset_json)] if dataset_json else [pred_folder / "dataset.json", gt_folder.parent / "dataset.json"]
    names: dict[int, str] = {}
    for cand in candidates:
        if cand.is_file():
            try:
                for name, value in json.loads(cand.read_text()).get("labels", {}).items():
                    if isinstance(value, int) and value != 0 and name != "ignore":
                        names[value] = name
            except (json.JSONDecodeError, AttributeError) as e:
                raise MedNeXtUserError(f"{cand} is not a valid dataset.json ({e}); fix: pass --labels") from e
            break
        if dataset_json:
            raise MedNeXtUserError(f"dataset.json {cand} not found; fix: check --dataset-json")
    if labels:
        return {int(v): names.get(int(v), str(int(v))) for v in labels if int(v) != 0}
    return names or None


# ---------------------------------------------------------------------------------------------------------- scoring
def evaluate_case(case: str, gt_file: Path, pred_file: Path | None, labels: Sequence[int], modes: Sequence[str],
                  with_hd95: bool = True) -> dict[str, Any]:
    ref, spacing = read_label_map(gt_file)
    if pred_file is None:
        pred = np.zeros_like(ref)
    else:
        pred, pred_spacing = read_label_map(pred_file)
        if pred.shape != ref.shape:
            raise MedNeXtUserError(f"{case}: prediction shape {pred.shape} != reference shape {ref.shape}; "
                                   "fix: predict on the reference grid")
        if not np.allclose(pred_spacing, spacing, rtol=1e-3):
            print(f"warning: {case}: prediction spacing {pred_spacing} differs from reference {spacing}; using the reference's")
    metrics: dict[str, dict[str, float]] = {}
    for label in labels:
        r, p = ref == label, pred == label
        entry: dict[str, float] = {"n_ref": int(r.sum()), "n_pred": int(p.sum())}
        if "mm" in modes:
            if with_hd95:
                entry["Dice"], entry["HD95_mm"] = mm_metrics(p, r, spacing)
            else:
                entry["Dice"] = dice(p, r)
        if "transunet" in modes:
            if with_hd95:
                entry["DSC_transunet"], entry["HD95_transunet_px"] = transunet_metrics(p, r)
            else:
                entry["DSC_transunet"] = 0.0 if not p.any() else (1.0 if not r.any() else dice(p, r))
        metrics[str(label)] = entry
    return {"case": case, "reference_file": str(gt_file), "prediction_file": str(pred_file) if pred_file else None,
            "spacing": list(spacing), "metrics": metrics,
            "values_reference": [int(v) for v in np.unique(ref)], "values_prediction": [int(v) for v in np.unique(pred)]}


def _evaluate_star(args: tuple) -> dict[str, Any]:
    return evaluate_case(*args)


def _stats(values: Iterable[float]) -> tuple[float, float, int]:
    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], float)
    if v.size == 0:
        return float("nan"), float("nan"), 0
    return float(v.mean()), float(v.std()), int(v.size)


def metric_keys(modes: Sequence[str], with_hd95: bool = True) -> list[str]:
    keys = []
    for m in modes:
        keys += list(MODE_KEYS[m][: 2 if with_hd95 else 1])
    return keys


def summarize(per_case: list[dict[str, Any]], labels: Sequence[int], keys: Sequence[str]) -> dict[str, Any]:
    mean: dict[str, dict[str, float]] = {}
    std: dict[str, dict[str, float]] = {}
    count: dict[str, dict[str, int]] = {}
    for label in labels:
        k = str(label)
        mean[k], std[k], count[k] = {}, {}, {}
        for key in keys:
            mean[k][key], std[k][key], count[k][key] = _stats(c["metrics"][k][key] for c in per_case)
    fg_mean, fg_std = {}, {}
    for key in keys:
        class_means = [mean[str(label)][key] for label in labels]
        fg_mean[key] = _stats(class_means)[0]
        case_means = []
        for c in per_case:
            vals = [c["metrics"][str(label)][key] for label in labels]
            vals = [v for v in vals if not math.isnan(v)]
            case_means.append(float(np.mean(vals)) if vals else float("nan"))
        fg_std[key] = _stats(case_means)[1]
    return {"mean": mean, "std": std, "count": count, "foreground_mean": fg_mean, "foreground_std": fg_std}


def evaluate_folders(gt_folder: str | os.PathLike, pred_folder: str | os.PathLike, *,
                     labels: Sequence[int] | dict[int, str] | None = None, dataset_json: str | None = None,
                     mode: str = "both", with_hd95: bool = True, file_ending: str | None = None,
                     num_processes: int = 1, allow_missing: bool = False,
                     only_predicted: bool = False) -> dict[str, Any]:
    """Score every reference case against the same-named prediction; returns the summary dict (see module doc)."""
    gt_folder, pred_folder = Path(gt_folder), Path(pred_folder)
    modes = list(MODES) if mode == "both" else [mode]
    if any(m not in MODES for m in modes):
        raise MedNeXtUserError(f"unknown mode {mode!r}; fix: use mm, transunet or both")
    pairs, file_ending = find_pairs(gt_folder, pred_folder, file_ending, allow_missing, only_predicted)
    names = resolve_labels(labels, dataset_json, gt_folder, pred_folder)
    if names is None:
        found: set[int] = set()
        for _, gt_file, _ in pairs:
            found |= {int(v) for v in np.unique(read_label_map(gt_file)[0])}
        names = {v: str(v) for v in sorted(found - {0})}
        if not names:
            raise MedNeXtUserError(f"the references in {gt_folder} contain no foreground label; fix: pass --labels")
    label_list = sorted(names)
    known = set(label_list) | _dataset_label_values(dataset_json, gt_folder, pred_folder)
    jobs = [(case, g, p, label_list, modes, with_hd95) for case, g, p in pairs]
    if num_processes > 1 and len(jobs) > 1:
        import multiprocessing

        with ProcessPoolExecutor(num_processes, mp_context=multiprocessing.get_context("spawn")) as ex:
            per_case = list(ex.map(_evaluate_star, jobs))
    else:
        per_case = [_evaluate_star(j) for j in jobs]
    known |= {v for c in per_case for v in c["values_reference"]}
    _check_label_values(per_case, label_list, known, explicit=labels is not None and not isinstance(labels, dict))
    keys = metric_keys(modes, with_hd95)
    result = {
        "gt_folder": str(gt_folder), "pred_folder": str(pred_folder), "file_ending": file_ending,
        "modes": modes, "metrics": keys, "labels": {str(k): names[k] for k in label_list},
        "missing_predictions": [c for c, _, p in pairs if p is None],
        "conventions": {m: MODE_TITLES[m] for m in modes},
        **summarize(per_case, label_list, keys),
        "metric_per_case": per_case,
    }
    return result


def _dataset_label_values(dataset_json: str | os.PathLike | None, gt_folder: Path, pred_folder: Path) -> set[int]:
    """Every label value a dataset.json declares (background and ignore included), or an empty set."""
    candidates = [Path(dataset_json)] if dataset_json else [pred_folder / "dataset.json", gt_folder.parent / "dataset.json"]
    for cand in candidates:
        if cand.is_file():
            try:
                values = json.loads(cand.read_text()).get("labels", {}).values()
                return {int(v) for v in values if isinstance(v, int)}
            except (ValueError, AttributeError):
                return set()
    return set()


def _check_label_values(per_case: list[dict[str, Any]], labels: Sequence[int], known: set[int], explicit: bool) -> None:
    """Refuse scores that would silently ignore something: predicted values outside the label set, or requested
    labels that occur nowhere."""
    for c in per_case:
        stray = sorted(set(c["values_prediction"]) - known - {0})
        if stray:
            raise MedNeXtUserError(
                f"prediction {c['prediction_file']} contains label value(s) {stray}, which are not labels of this "
                f"dataset (scored: {list(labels)}); fix: check that the predictions belong to this dataset, or pass "
                "--labels / --dataset-json with the right label set"
            )
    if explicit:
        seen = set().union(*(set(c["values_reference"]) | set(c["values_prediction"]) for c in per_case))
        declared = known - set(labels)  # dataset.json labels and reference values that were not requested
        absent = sorted(set(labels) - seen - declared)
        if absent:
            raise MedNeXtUserError(
                f"--labels {absent} occur in no reference and no prediction (values present: {sorted(seen)}); fix: "
                "pass labels that exist in this dataset"
            )


# ---------------------------------------------------------------------------------------------------------- reports
def ordered_labels(labels: dict[str, str]) -> list[tuple[str, str]]:
    """``[(label value, column title)]`` in the paper's column order for Synapse/ACDC, else in label order."""
    lower = {v.lower(): k for k, v in labels.items()}
    for columns in PAPER_COLUMNS.values():
        if set(columns) == set(lower):
            return [(lower[name], title) for name, title in columns.items()]
    return [(k, labels[k]) for k in sorted(labels, key=int)]


def _fmt(value: float, scale: float = 1.0) -> str:
    return "—" if value is None or math.isnan(value) else f"{value * scale:.2f}"


def _pm(mean: float, std: float, scale: float = 1.0) -> str:
    if mean is None or math.isnan(mean):
        return "—"
    return f"{mean * scale:.2f} ± {std * scale:.2f}" if std is not None and not math.isnan(std) else f"{mean * scale:.2f}"


def organ_table(result: dict[str, Any], method: str, mode: str) -> list[str]:
    """Markdown lines: the paper-style row (Mean DSC | HD95 | DSC per structure) and a per-class mean ± std table."""
    dsc_key, hd_key = MODE_KEYS[mode]
    has_hd = hd_key in result["metrics"]
    cols = ordered_labels(result["labels"])
    unit = "mm" if mode == "mm" else "vox"
    lines = [f"### {MODE_TITLES[mode]}", ""]
    lines.append("| Method | Mean DSC | HD95 | " + " | ".join(t for _, t in cols) + " |")
    lines.append("|---" * (3 + len(cols)) + "|")
    fg = result["foreground_mean"]
    row = [method, _fmt(fg[dsc_key], 100), _fmt(fg[hd_key]) if has_hd else "—"]
    row += [_fmt(result["mean"][k][dsc_key], 100) for k, _ in cols]
    lines += ["| " + " | ".join(row) + " |", ""]
    lines.append(f"Per class, mean ± std over {len(result['metric_per_case'])} cases (n = values used):")
    lines.append("")
    lines.append("| Class | DSC % | n | " + (f"HD95 ({unit}) | n |" if has_hd else ""))
    lines.append("|---|---|---|" + ("---|---|" if has_hd else ""))
    for k, title in cols:
        m, s, c = result["mean"][k], result["std"][k], result["count"][k]
        cells = [title, _pm(m[dsc_key], s[dsc_key], 100), str(c[dsc_key])]
        if has_hd:
            cells += [_pm(m[hd_key], s[hd_key]), str(c[hd_key])]
        lines.append("| " + " | ".join(cells) + " |")
    fs = result["foreground_std"]
    cells = ["**Mean**", _pm(fg[dsc_key], fs[dsc_key], 100), ""]
    if has_hd:
        cells += [_pm(fg[hd_key], fs[hd_key]), ""]
    lines += ["| " + " | ".join(cells) + " |", ""]
    return lines


def markdown_report(result: dict[str, Any], method: str) -> str:
    lines = [f"## Evaluation of `{method}`", "",
             f"References: `{result['gt_folder']}`; predictions: `{result['pred_folder']}`; "
             f"{len(result['metric_per_case'])} cases.", ""]
    if result["missing_predictions"]:
        lines += [f"Missing predictions scored as empty: {', '.join(result['missing_predictions'])}.", ""]
    for mode in result["modes"]:
        lines += organ_table(result, method, mode)
    return "\n".join(lines)


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float):
        return None if math.isnan(obj) else obj
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        return _json_safe(obj.item())
    return obj


def write_reports(result: dict[str, Any], out_dir: str | os.PathLike, method: str) -> dict[str, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / name for name in ("summary.json", "per_case.csv", "summary.csv", "table.md")}
    paths["summary.json"].write_text(json.dumps(_json_safe({"method": method, **result}), indent=2, sort_keys=True))
    keys, labels = result["metrics"], result["labels"]
    with open(paths["per_case.csv"], "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["case", "label", "name", "n_ref", "n_pred", *keys])
        for c in result["metric_per_case"]:
            for k, name in labels.items():
                m = c["metrics"][k]
                w.writerow([c["case"], k, name, m["n_ref"], m["n_pred"], *[_csv(m[key]) for key in keys]])
    with open(paths["summary.csv"], "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["label", "name", *[f"{k}_{s}" for k in keys for s in ("mean", "std", "n")]])
        for k, name in labels.items():
            w.writerow([k, name, *[_csv(v) for key in keys for v in
                                   (result["mean"][k][key], result["std"][k][key], result["count"][k][key])]])
        w.writerow(["mean", "mean over classes",
                    *[_csv(v) for key in keys for v in (result["foreground_mean"][key], result["foreground_std"][key],
                                                         len(result["metric_per_case"]))]])
    paths["table.md"].write_text(markdown_report(result, method) + "\n")
    return paths


def _csv(v: Any) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
    return str(v)
