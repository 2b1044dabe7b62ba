"""Metrics from prediction CSVs (``predict`` output or a fold's ``predictions.csv``) and from whole run folders."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from nnunetv2_mednext.errors import MedNeXtUserError

from .fingerprint import save_json
from .metrics import compute_metrics


def read_predictions(path: str | os.PathLike, class_names: Sequence[str] | None = None,
                     labels_from: dict[str, str] | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(y, probs, class_names)`` from a prediction CSV. Labels come from its ``label`` column, else from
    ``labels_from`` (path -> label)."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            header = list(reader.fieldnames or [])
            rows = list(reader)
    except OSError as e:
        raise MedNeXtUserError(f"cannot read predictions {str(path)!r} ({e}); fix: pass a CSV written by predict") from None
    prob_cols = [h for h in header if h.startswith("prob_")]
    if "path" not in header or not prob_cols:
        raise MedNeXtUserError(
            f"{str(path)!r} is not a prediction CSV (needs path and prob_<class> columns); fix: pass predict's output"
        )
    names = [h[len("prob_"):] for h in prob_cols]
    if class_names is not None and list(class_names) != names:
        raise MedNeXtUserError(f"{str(path)!r} has classes {names}, expected {list(class_names)}; fix: check the file")
    lut = {c: i for i, c in enumerate(names)}
    y, probs = [], []
    for line, row in enumerate(rows, start=2):
        label = (row.get("label") or "").strip()
        if not label and labels_from is not None:
            label = labels_from.get(os.path.normpath(row["path"]), "")
        if not label:
            raise MedNeXtUserError(
                f"{str(path)!r} line {line} has no label for {row['path']!r}; fix: predict from a labelled CSV/folder "
                "or pass --labels DATA"
            )
        if label not in lut:
            raise MedNeXtUserError(f"{str(path)!r} line {line}: label {label!r} is not one of {names}; fix: check it")
        y.append(lut[label])
        probs.append([float(row[c]) for c in prob_cols])
    if not y:
        raise MedNeXtUserError(f"{str(path)!r} has no rows; fix: predict some images first")
    return np.array(y, dtype=np.int64), np.array(probs, dtype=np.float64), names


def labels_lookup(data: str | os.PathLike) -> dict[str, str]:
    """Absolute path -> label of a labelled dataset (folder or CSV)."""
    from .index import discover

    return {os.path.normpath(s.path): s.label for s in discover(data).samples}


def evaluate_csv(pred_csv: str | os.PathLike, out_dir: str | os.PathLike | None = None,
                 labels: str | os.PathLike | None = None) -> dict:
    """Metrics of one prediction CSV; writes ``metrics.json`` and ``confusion_matrix.png`` into ``out_dir``."""
    from .plots import plot_confusion_matrix

    y, probs, names = read_predictions(pred_csv, labels_from=labels_lookup(labels) if labels else None)
    metrics = compute_metrics(y, probs, names)
    metrics["source"] = str(pred_csv)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        save_json(metrics, out / "metrics.json")
        plot_confusion_matrix(metrics["confusion_matrix"]["matrix"], names, out / "confusion_matrix.png",
                              f"{Path(pred_csv).name}: accuracy {100 * metrics['accuracy']:.1f}%")
    return metrics


def evaluate_run(run_dir: str | os.PathLike) -> dict:
    """Recompute every fold's metrics from its ``predictions.csv`` and the summary over folds."""
    from .metrics import aggregate

    run = Path(run_dir)
    preds = sorted(run.glob("fold_*/predictions.csv"), key=lambda p: int(p.parent.name.split("_")[1]))
    if not preds:
        raise MedNeXtUserError(f"no fold_*/predictions.csv in {str(run)!r}; fix: pass a training output folder")
    per_fold = []
    for p in preds:
        m = evaluate_csv(p)
        m["fold"] = int(p.parent.name.split("_")[1])
        per_fold.append(m)
    summary = {"folds": [m["fold"] for m in per_fold], "aggregate": aggregate(per_fold),
               "per_fold": {str(m["fold"]): m for m in per_fold}}
    return summary


def load_json(path: str | os.PathLike) -> dict:
    return json.loads(Path(path).read_text())
