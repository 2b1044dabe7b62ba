"""Compare trained nnU-Net models (``Trainer__Plans__configuration``) of one dataset across folds.

For each model and fold it reads ``$nnUNet_results/DatasetXXX_Name/<model>/fold_N/``:

* ``<subdir>/summary.json`` (nnU-Net's validation summary, or ours) for per-class Dice, or -- when HD95 is asked for,
  or no summary exists -- evaluates the predictions in ``<subdir>`` against the reference folder with
  ``nnunetv2_mednext.evaluation.evaluate`` (for ``validation``, only the cases predicted there, i.e. the fold's
  validation cases; for any other subdir every reference case needs a prediction);
* ``training_log*.txt``: the ``Epoch time: X s`` lines nnU-Net writes every epoch;
* ``checkpoint_final.pth`` (else ``checkpoint_best.pth`` / ``checkpoint_latest.pth``): parameter count (the sum of
  ``numel`` over ``network_weights``, each shared tensor once);
* ``<subdir>/inference_time.json`` (``{"seconds_per_case": ...}``, written by ``benchmarks/acdc_budget.py``), if any.

Models are named by their results folder, so any trainer and plans work alike: nnU-Net's ResEnc presets
(``nnUNetTrainer__nnUNetResEncUNetMPlans__2d``), our planner's ``nnUNetMedNeXtPlans``, custom plans identifiers.

It writes ``comparison.md`` (DSC and HD95 per class and mean, mean ± std over folds, a cost table naming each model's
trainer, plans and configuration, missing folds),
``comparison.json`` and ``comparison.png`` (bars per class with the std over folds, and boxes of per-case mean DSC).
Partial results work: folds without a summary or predictions are listed as missing.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from nnunetv2_mednext.errors import MedNeXtUserError

from .evaluate import MODE_KEYS, evaluate_folders, ordered_labels

EPOCH_TIME_RE = re.compile(r"Epoch time:\s*([0-9.]+)\s*s")
CHECKPOINTS = ("checkpoint_final.pth", "checkpoint_best.pth", "checkpoint_latest.pth")


def _root(path: str | os.PathLike | None, var: str, flag: str) -> Path:
    if path:
        return Path(path)
    if not os.environ.get(var):
        raise MedNeXtUserError(f"no {var}; fix: export {var} or pass {flag}")
    return Path(os.environ[var])


def resolve_dataset(dataset: str | int, root: Path) -> str:
    if not root.is_dir():
        raise MedNeXtUserError(f"results folder {root} does not exist; fix: pass --results or export nnUNet_results")
    text = str(dataset)
    if (root / text).is_dir():
        return text
    if text.isdigit():
        hits = sorted(p.name for p in root.glob(f"Dataset{int(text):03d}_*") if p.is_dir())
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise MedNeXtUserError(f"dataset id {text} is ambiguous in {root}: {', '.join(hits)}; fix: pass the full name")
    available = sorted(p.name for p in root.glob("Dataset*") if p.is_dir())
    raise MedNeXtUserError(f"dataset {text} not found in {root} (available: {', '.join(available) or 'none'}); "
                           "fix: check -d and --results")


def _nan(v: Any) -> float:
    return float("nan") if v is None else float(v)


def case_records(metric_per_case: list[dict[str, Any]], dsc_key: str, pred_dir: Path,
                 ref_dirs: list[Path], ending: str) -> list[dict[str, Any]]:
    """Per case: id, mean foreground DSC and the files, found where they are on this machine (a summary written on
    another machine names its paths there: only the file names are used)."""
    out = []
    for c in metric_per_case:
        name = Path(str(c.get("reference_file") or c.get("prediction_file") or "")).name
        if not name:
            continue
        vals = [_nan(m.get(dsc_key)) for m in c.get("metrics", {}).values() if isinstance(m, dict)]
        vals = [v for v in vals if not math.isnan(v)]
        if not vals:
            continue
        refs = [Path(str(c["reference_file"]))] if c.get("reference_file") else []
        refs += [d / name for d in ref_dirs]
        ref = next((r for r in refs if r.is_file()), None)
        case = name[: -len(ending)] if ending and name.endswith(ending) else name.split(".")[0]
        out.append({"case": case, "dsc": float(np.mean(vals)), "prediction": str(pred_dir / name),
                    "reference": str(ref) if ref else None})
    return out


def _reference_dirs(ds: str, gt: Path | None) -> list[Path]:
    dirs = [gt] if gt else []
    if os.environ.get("nnUNet_preprocessed"):
        dirs.append(Path(os.environ["nnUNet_preprocessed"]) / ds / "gt_segmentations")
    if os.environ.get("nnUNet_raw"):
        dirs += [Path(os.environ["nnUNet_raw"]) / ds / "labelsTr", Path(os.environ["nnUNet_raw"]) / ds / "labelsTs"]
    return dirs


def load_summary(path: Path) -> dict[str, Any]:
    """Normalise nnU-Net's (or our) summary.json: ``{"classes": {label: {metric: v}}, "fg": {metric: v},
    "per_case_fg": {metric: [per-case mean over classes]}}``."""
    try:
        data = json.loads(path.read_text())
        classes = {str(k): {m: _nan(v) for m, v in d.items() if isinstance(v, int | float) or v is None}
                   for k, d in data["mean"].items()}
        fg = {m: _nan(v) for m, v in data["foreground_mean"].items() if isinstance(v, int | float) or v is None}
    except (OSError, ValueError, KeyError, AttributeError, TypeError) as e:
        raise MedNeXtUserError(f"{path} is not an nnU-Net summary.json ({type(e).__name__}: {e}); fix: re-run the "
                               "validation or delete it") from e
    per_case: dict[str, list[float]] = {}
    for m in fg:
        values = []
        for case in data.get("metric_per_case", []):
            vals = [_nan(case["metrics"][k].get(m)) for k in classes if k in case.get("metrics", {})]
            vals = [v for v in vals if not math.isnan(v)]
            if vals:
                values.append(float(np.mean(vals)))
        per_case[m] = values
    return {"classes": classes, "fg": fg, "per_case_fg": per_case}


_NORM_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def count_parameters(fold_dir: Path) -> tuple[int | None, str | None]:
    """Trainable parameters of the checkpointed network (norm statistics excluded) and the checkpoint's file name."""
    for name in CHECKPOINTS:
        ckpt = fold_dir / name
        if ckpt.is_file():
            import torch

            state = torch.load(ckpt, map_location="cpu", weights_only=False)
            weights = state.get("network_weights", {}) if isinstance(state, dict) else {}
            # dynamic-network-architectures decoders keep a reference to the encoder, so its tensors appear twice
            # in the state dict (``encoder.*`` and ``decoder.encoder.*``): count every storage view once
            seen, total = set(), 0
            for k, v in weights.items():
                if not hasattr(v, "numel") or str(k).endswith(_NORM_BUFFERS):  # statistics, not parameters
                    continue
                key = (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape))
                if key not in seen:
                    seen.add(key)
                    total += v.numel()
            return int(total), name
    return None, None


def epoch_times(fold_dir: Path) -> list[float]:
    times = []
    for log in sorted(fold_dir.glob("training_log*.txt")):
        times += [float(m.group(1)) for m in EPOCH_TIME_RE.finditer(log.read_text(errors="replace"))]
    return times


def inference_time(pred_dir: Path) -> float | None:
    f = pred_dir / "inference_time.json"
    if f.is_file():
        try:
            return float(json.loads(f.read_text())["seconds_per_case"])
        except (ValueError, KeyError, TypeError):
            return None
    return None


def _has_predictions(folder: Path) -> bool:
    return folder.is_dir() and any(p.name.endswith((".nii.gz", ".png", ".nii", ".mha", ".nrrd")) for p in folder.iterdir())


def _mean_std(values: list[float]) -> tuple[float, float, int]:
    v = np.asarray([x for x in values if not math.isnan(x)], float)
    if v.size == 0:
        return float("nan"), float("nan"), 0
    return float(v.mean()), float(v.std()), int(v.size)


def compare_models(dataset: str | int, models: list[str], *, folds: list[int] | None = None,
                   results: str | os.PathLike | None = None, subdir: str = "validation",
                   gt: str | os.PathLike | None = None, hd95: str = "none", names: list[str] | None = None,
                   num_processes: int = 1) -> dict[str, Any]:
    """Collect metrics and costs of ``models`` (see the module docstring); returns a JSON-able dict."""
    if hd95 not in ("none", "mm", "transunet"):
        raise MedNeXtUserError(f"--hd95 must be none, mm or transunet, got {hd95!r}")
    if names and len(names) != len(models):
        raise MedNeXtUserError(f"{len(names)} --names for {len(models)} models; fix: give one name per model")
    folds = list(range(5)) if folds is None else folds
    root = _root(results, "nnUNet_results", "--results")
    ds = resolve_dataset(dataset, root)
    mode = "transunet" if hd95 == "transunet" else "mm"
    dsc_key, hd_key = MODE_KEYS[mode]
    gt_dir = Path(gt) if gt else None
    out_models = []
    labels: dict[str, str] = {}
    for i, spec in enumerate(models):
        if spec.count("__") != 2:
            raise MedNeXtUserError(f"model {spec!r} is not Trainer__Plans__configuration; fix: e.g. "
                                   "nnUNetTrainer__nnUNetPlans__2d")
        model_dir = root / ds / spec
        if not model_dir.is_dir():
            import difflib

            available = sorted(p.name for p in (root / ds).iterdir() if p.is_dir() and p.name.count("__") == 2)
            close = difflib.get_close_matches(spec, available, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]}? " if close else ""
            raise MedNeXtUserError(
                f"model {spec} does not exist in {root / ds}; {hint}fix: pass one of "
                f"{', '.join(available) or '(none: train a model first)'}"
            )
        dj = model_dir / "dataset.json"
        ending = json.loads(dj.read_text()).get("file_ending", ".nii.gz") if dj.is_file() else ".nii.gz"
        if dj.is_file() and not labels:
            labels = {str(v): k for k, v in json.loads(dj.read_text()).get("labels", {}).items()
                      if isinstance(v, int) and v != 0}
        trainer, plans, configuration = spec.split("__")
        entry: dict[str, Any] = {"model": spec, "name": names[i] if names else spec, "trainer": trainer,
                                 "plans": plans, "configuration": configuration, "folder": str(model_dir),
                                 "folds": {}, "missing": [], "notes": []}
        all_epoch_times: list[float] = []
        inference: list[float] = []
        for f in folds:
            fold_dir = model_dir / f"fold_{f}"
            all_epoch_times += epoch_times(fold_dir) if fold_dir.is_dir() else []
            if entry.get("params") is None and fold_dir.is_dir():
                entry["params"], entry["params_from"] = count_parameters(fold_dir)
            pred_dir = fold_dir / subdir
            summary_file = pred_dir / "summary.json"
            use_eval = _has_predictions(pred_dir) and (hd95 != "none" or not summary_file.is_file())
            if use_eval:
                ref = gt_dir or _default_gt(ds, subdir)
                res = evaluate_folders(ref, pred_dir, labels={int(k): v for k, v in labels.items()} or None,
                                       mode=mode, with_hd95=hd95 != "none", num_processes=num_processes,
                                       only_predicted=subdir == "validation")
                labels = labels or dict(res["labels"])
                fold = {"classes": res["mean"], "fg": res["foreground_mean"], "source": f"evaluated vs {ref}",
                        "per_case_fg": _per_case_fg(res),
                        "cases": case_records(res["metric_per_case"], dsc_key, pred_dir, [Path(ref)], ending)}
            elif summary_file.is_file():
                fold = {**load_summary(summary_file), "source": str(summary_file)}
                per_case = json.loads(summary_file.read_text()).get("metric_per_case", [])
                fold["cases"] = case_records(per_case, "Dice", pred_dir, _reference_dirs(ds, gt_dir), ending)
                if hd95 != "none":
                    entry["notes"].append(f"fold {f}: no predictions in {subdir}/, only its summary.json (no HD95 or "
                                          "TransUNet-rule metrics)")
            else:
                entry["missing"].append(f)
                continue
            t = inference_time(pred_dir)
            if t is not None:
                inference.append(t)
            entry["folds"][str(f)] = fold
        entry["epoch_time_s"] = _mean_std(all_epoch_times)[0] if all_epoch_times else None
        entry["epochs_logged"] = len(all_epoch_times)
        entry["inference_s_per_case"] = float(np.mean(inference)) if inference else None
        entry.setdefault("params", None)
        out_models.append(entry)
    if not labels:
        for e in out_models:
            for fold in e["folds"].values():
                labels = labels or {k: k for k in fold["classes"]}
    for e in out_models:
        _aggregate(e, labels, dsc_key, hd_key)
    return {"dataset": ds, "results": str(root), "subdir": subdir, "folds": folds, "hd95": hd95,
            "dsc_key": dsc_key, "hd95_key": hd_key if hd95 != "none" else None, "labels": labels, "models": out_models}


def _default_gt(ds: str, subdir: str) -> Path:
    if subdir == "validation":
        if os.environ.get("nnUNet_preprocessed"):
            cand = Path(os.environ["nnUNet_preprocessed"]) / ds / "gt_segmentations"
            if cand.is_dir():
                return cand
        if os.environ.get("nnUNet_raw"):
            cand = Path(os.environ["nnUNet_raw"]) / ds / "labelsTr"
            if cand.is_dir():
                return cand
    raise MedNeXtUserError(f"no reference labels for the predictions in {subdir}/; fix: pass --gt FOLDER (e.g. "
                           "nnUNet_raw/DatasetXXX/labelsTs for test predictions)")


def _per_case_fg(res: dict[str, Any]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for key in res["metrics"]:
        vals = []
        for c in res["metric_per_case"]:
            v = [c["metrics"][k][key] for k in res["labels"]]
            v = [x for x in v if not math.isnan(x)]
            if v:
                vals.append(float(np.mean(v)))
        out[key] = vals
    return out


def _aggregate(entry: dict[str, Any], labels: dict[str, str], dsc_key: str, hd_key: str) -> None:
    agg: dict[str, dict[str, tuple[float, float, int]]] = {}
    for key in (dsc_key, hd_key):
        # nnU-Net's own summary names Dice "Dice"; TransUNet-mode evaluations name it "DSC_transunet"
        per_class = {}
        for k in labels:
            per_class[k] = _mean_std([_nan(f["classes"].get(k, {}).get(key)) for f in entry["folds"].values()])
        per_class["mean"] = _mean_std([_nan(f["fg"].get(key)) for f in entry["folds"].values()])
        agg[key] = per_class
    entry["aggregate"] = agg
    entry["per_case_dsc"] = [v for f in entry["folds"].values() for v in f.get("per_case_fg", {}).get(dsc_key, [])]


# ---------------------------------------------------------------------------------------------------------- output
def _cell(stat: tuple[float, float, int], scale: float = 1.0) -> str:
    mean, std, n = stat
    if n == 0 or math.isnan(mean):
        return "—"
    return f"{mean * scale:.2f} ± {std * scale:.2f}" if n > 1 else f"{mean * scale:.2f}"


def markdown(comp: dict[str, Any]) -> str:
    labels = comp["labels"]
    cols = ordered_labels(labels) if labels else []
    dsc_key, hd_key = comp["dsc_key"], comp["hd95_key"]
    n_folds = len(comp["folds"])
    lines = [f"# Comparison on {comp['dataset']}", "",
             f"Predictions: `fold_N/{comp['subdir']}/`; folds requested: {', '.join(map(str, comp['folds']))}. "
             f"Cells are mean ± std over the folds present (population std; a single fold shows the mean only).", ""]
    tables = [("DSC (%)", dsc_key, 100.0)]
    if hd_key:
        unit = "mm" if comp["hd95"] == "mm" else "voxels, TransUNet rules"
        tables.append((f"HD95 ({unit})", hd_key, 1.0))
    for title, key, scale in tables:
        lines += [f"## {title}", ""]
        lines.append("| Model | Folds | Mean | " + " | ".join(t for _, t in cols) + " |")
        lines.append("|---" * (3 + len(cols)) + "|")
        for e in comp["models"]:
            agg = e["aggregate"][key]
            row = [e["name"], f"{len(e['folds'])}/{n_folds}", _cell(agg["mean"], scale)]
            row += [_cell(agg[k], scale) for k, _ in cols]
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    lines += ["## Cost", "", "| Model | Trainer | Plans | Config | Params (M) | Train time / epoch (s) | Epochs logged | "
              "Inference (s / case) |", "|---|---|---|---|---|---|---|---|"]
    for e in comp["models"]:
        params = f"{e['params'] / 1e6:.2f}" if e["params"] else "—"
        ep = f"{e['epoch_time_s']:.1f}" if e["epoch_time_s"] is not None else "—"
        inf = f"{e['inference_s_per_case']:.2f}" if e["inference_s_per_case"] is not None else "not recorded"
        trainer, plans, config = e["model"].split("__")
        lines.append(f"| {e['name']} | `{trainer}` | `{plans}` | {config} | {params} | {ep} | {e['epochs_logged']} | "
                     f"{inf} |")
    lines.append("")
    missing = [e for e in comp["models"] if e["missing"]]
    if missing:
        lines += ["## Missing folds", ""]
        for e in missing:
            lines.append(f"- {e['name']}: fold(s) {', '.join(map(str, e['missing']))} "
                         f"(no `{comp['subdir']}/summary.json` and no predictions)")
        lines.append("")
    notes = [(e["name"], n) for e in comp["models"] for n in e["notes"]]
    if notes:
        lines += ["## Notes", "", *[f"- {name}: {n}" for name, n in notes], ""]
    return "\n".join(lines)


def plot(comp: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = comp["labels"]
    cols = ordered_labels(labels) if labels else []
    groups = [*(t for _, t in cols), "Mean"]
    keys = [*(k for k, _ in cols), "mean"]
    models = comp["models"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(max(8.0, 1.2 * len(groups) + 4), 4.5),
                                   gridspec_kw={"width_ratios": [3, 1]})
    width = 0.8 / max(len(models), 1)
    x = np.arange(len(groups))
    for i, e in enumerate(models):
        agg = e["aggregate"][comp["dsc_key"]]
        means = [100 * agg[k][0] if agg[k][2] else 0.0 for k in keys]
        stds = [100 * agg[k][1] if agg[k][2] > 1 else 0.0 for k in keys]
        ax1.bar(x + (i - (len(models) - 1) / 2) * width, means, width, yerr=stds, capsize=2, label=e["name"])
    ax1.set_xticks(x, groups, rotation=30, ha="right")
    ax1.set_ylabel("DSC (%)")
    ax1.set_ylim(0, 100)
    ax1.set_title("DSC per class (mean ± std over folds)")
    ax1.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=min(len(models), 2), frameon=False)
    data = [[100 * v for v in e["per_case_dsc"]] or [float("nan")] for e in models]
    ax2.boxplot(data)
    ax2.set_xticks(range(1, len(models) + 1), [f"M{i + 1}" for i in range(len(models))])
    ax2.set_ylabel("per-case mean DSC (%)")
    ax2.set_title("cases, all folds")
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def write_comparison(comp: dict[str, Any], out_dir: str | os.PathLike,
                     raw: str | os.PathLike | None = None) -> dict[str, Path]:
    """``comparison.md/.json/.png``, and ``comparison_cases.png`` (best, median and worst case of each model, see
    :mod:`.pictures`) when the raw images are found (``raw`` or ``$nnUNet_raw``)."""
    from .evaluate import _json_safe
    from .pictures import raw_dataset_folder, write_case_pictures

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"md": out / "comparison.md", "json": out / "comparison.json", "png": out / "comparison.png"}
    text = markdown(comp)
    raw_folder = raw_dataset_folder(comp["dataset"], raw)
    drawn = write_case_pictures(comp, out / "comparison_cases.png", raw_folder) if raw_folder else []
    if drawn:
        paths["cases"] = out / "comparison_cases.png"
        text += ("\n## Cases\n\nBest, median and worst case of each model by mean foreground DSC (over all folds), "
                 "reference outlined solid green, prediction dashed magenta: `comparison_cases.png`.\n\n"
                 "| Model | best | median | worst |\n|---|---|---|---|\n")
        for name in dict.fromkeys(d["model"] for d in drawn):
            cells = {d["which"]: f"{d['case']} ({100 * d['dsc']:.1f} %)" for d in drawn if d["model"] == name}
            text += f"| {name} | {cells['best']} | {cells['median']} | {cells['worst']} |\n"
        text += "\n![cases](comparison_cases.png)\n"
    if len(comp["models"]) > 1:
        text += "\nPlot: M1..M{} = {}.\n".format(len(comp["models"]), ", ".join(
            f"M{i + 1} {e['name']}" for i, e in enumerate(comp["models"])))
    paths["md"].write_text(text)
    paths["json"].write_text(json.dumps(_json_safe(comp), indent=2))
    plot(comp, paths["png"])
    return paths
