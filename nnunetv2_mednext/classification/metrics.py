"""Classification metrics (scikit-learn does the maths) and their mean +- std over folds.

Per class (one-vs-rest): precision, recall (= sensitivity), specificity, F1, ROC-AUC, support. Macro = unweighted
mean over classes (AUC: over the classes where it is defined). Confusion matrix rows are true classes, columns
predictions. A metric that is undefined (e.g. AUC of a class absent from the evaluated images) is ``None``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np

SCALAR_KEYS = ("accuracy", "balanced_accuracy")
CLASS_KEYS = ("precision", "recall", "specificity", "f1", "auc")


def _f(x: float) -> float | None:
    x = float(x)
    return None if math.isnan(x) else x


def compute_metrics(y_true: Sequence[int], probs: np.ndarray, class_names: Sequence[str]) -> dict:
    """All metrics for integer labels ``y_true`` and class probabilities ``probs`` ``(N, K)``; prediction = argmax."""
    from sklearn.metrics import (
        accuracy_score,
        balanced_accuracy_score,
        confusion_matrix,
        precision_recall_fscore_support,
        roc_auc_score,
    )

    y = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(probs, dtype=np.float64)
    k = len(class_names)
    if p.ndim != 2 or p.shape != (len(y), k):
        raise ValueError(f"probs must be ({len(y)}, {k}), got {p.shape}")
    if len(y) == 0:
        raise ValueError("no samples to evaluate")
    pred = p.argmax(1)
    labels = list(range(k))
    cm = confusion_matrix(y, pred, labels=labels)
    prec, rec, f1, support = precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    total = cm.sum()
    per_class = {}
    for c, name in enumerate(class_names):
        tp = cm[c, c]
        fp = cm[:, c].sum() - tp
        fn = cm[c, :].sum() - tp
        tn = total - tp - fp - fn
        positives = (y == c).astype(int)
        auc = roc_auc_score(positives, p[:, c]) if 0 < positives.sum() < len(y) else None
        per_class[name] = {
            "precision": float(prec[c]),
            "recall": float(rec[c]),
            "specificity": float(tn / (tn + fp)) if tn + fp > 0 else None,
            "f1": float(f1[c]),
            "auc": _f(auc) if auc is not None else None,
            "support": int(support[c]),
        }
    present = [c for c in range(k) if support[c] > 0]

    def macro(key: str) -> float | None:
        vals = [per_class[class_names[c]][key] for c in range(k)]
        if key in ("recall", "f1", "precision"):
            return float(np.mean(vals))
        vals = [v for v in vals if v is not None]
        return float(np.mean(vals)) if vals else None

    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "y_pred contains classes not in y_true"
        bacc = balanced_accuracy_score(y, pred) if present else float("nan")
    return {
        "n": len(y),
        "accuracy": float(accuracy_score(y, pred)),
        "balanced_accuracy": _f(bacc),
        "macro": {key: macro(key) for key in CLASS_KEYS},
        "per_class": per_class,
        "confusion_matrix": {"labels": list(class_names), "matrix": cm.tolist()},
    }


def flatten(metrics: dict) -> dict[str, float | None]:
    """The scalar metrics as ``{"accuracy": .., "macro.f1": .., "per_class.<name>.auc": ..}``."""
    out: dict[str, float | None] = {k: metrics[k] for k in SCALAR_KEYS}
    out.update({f"macro.{k}": metrics["macro"][k] for k in CLASS_KEYS})
    for name, vals in metrics["per_class"].items():
        out.update({f"per_class.{name}.{k}": vals[k] for k in CLASS_KEYS})
    return out


def aggregate(fold_metrics: Sequence[dict]) -> dict:
    """Mean and sample standard deviation (ddof=1; 0 for one fold) of every scalar over folds, ignoring undefined
    values."""
    flats = [flatten(m) for m in fold_metrics]
    keys = list(flats[0]) if flats else []
    mean, std, n = {}, {}, {}
    for key in keys:
        vals = [f[key] for f in flats if f.get(key) is not None]
        n[key] = len(vals)
        mean[key] = float(np.mean(vals)) if vals else None
        std[key] = float(np.std(vals, ddof=1)) if len(vals) > 1 else (0.0 if vals else None)
    return {"n_folds": len(flats), "mean": mean, "std": std, "n_defined": n}


def fmt_pct(mean: float | None, std: float | None = None) -> str:
    if mean is None:
        return "n/a"
    return f"{100 * mean:.2f}" + (f" ± {100 * std:.2f}" if std is not None else "")
