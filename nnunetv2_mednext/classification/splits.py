"""Splits, saved as ``splits.json``: leakage-safe stratified k-fold over leakage groups (``cv``; ``cv-test`` adds a
test part per fold and carves validation from training, 70:10:20 at 5 folds), a 70/10/20 hold-out, and the leaky
image-level k-fold of the community protocol (``image-cv``, labelled as leaky).

A leakage group (see :mod:`.duplicates`) never crosses folds. Splits store sample ids, so a file stays valid when
the dataset's rows are reordered; user-given files (ours, or nnU-Net's list of ``{"train", "val"}``) are honoured
and only checked (a warning per leak).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np

from nnunetv2_mednext.errors import MedNeXtUserError

from .index import DatasetIndex

FORMAT = "nnunetv2_mednext.classification.splits/1"
PARTS = ("train", "val", "test")


def _fold_ids(index: DatasetIndex, **parts: np.ndarray) -> dict[str, list[str]]:
    ids = index.ids
    return {k: sorted(ids[i] for i in v) for k, v in parts.items()}


def _fewer_folds_hint(n_possible: int) -> str:
    """The fix for too little data: fewer CV folds when at least 2 are possible, else more data."""
    if n_possible >= 2:
        return f"use --split cv --folds {n_possible} (or fewer, at least 2), or add data"
    return "add data: cross-validation needs at least 2 independent images per class"


def _check_enough_groups(index: DatasetIndex, comps: np.ndarray, n_splits: int, what: str) -> None:
    n_groups = len(np.unique(comps))
    if n_groups < n_splits:
        raise MedNeXtUserError(
            f"only {n_groups} independent groups (patients / duplicate clusters) in {len(index)} images, too few for "
            f"{what}; fix: {_fewer_folds_hint(n_groups)}, or loosen duplicate grouping (--near-dup-threshold -1)"
        )


def _check_class_sizes(index: DatasetIndex, n_splits: int, what: str) -> None:
    small = {c: n for c, n in index.class_counts().items() if 0 < n < n_splits}
    if small:
        c, n = min(small.items(), key=lambda kv: kv[1])
        if n < 2:
            fix = f"add images of {c!r} (every class needs one image to train on and one to evaluate), or remove it"
        else:
            fix = _fewer_folds_hint(n)
        raise MedNeXtUserError(f"class {c!r} has only {n} image{'s' if n > 1 else ''}, fewer than the {n_splits} parts of {what}; fix: {fix}")


def _sgkf(labels: np.ndarray, comps: np.ndarray, n_splits: int, seed: int) -> list[np.ndarray]:
    from sklearn.model_selection import StratifiedGroupKFold

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "least populated class has only N members": reported by us
        cv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        return [val for _, val in cv.split(np.zeros(len(labels)), labels, comps)]


def make_cv_splits(index: DatasetIndex, comps: np.ndarray, n_folds: int = 5, seed: int = 12345) -> dict:
    """Stratified group k-fold: every leakage group lies in exactly one validation fold."""
    if n_folds < 2:
        raise MedNeXtUserError(
            f"--folds must be >= 2 for cross-validation (got {n_folds}); fix: --folds 2 or more, or --split holdout "
            "(one 70/10/20 train/val/test split; needs >= 10 images per class)"
        )
    _check_enough_groups(index, comps, n_folds, f"{n_folds} folds")
    _check_class_sizes(index, n_folds, f"{n_folds}-fold cross-validation")
    vals = _sgkf(index.labels(), comps, n_folds, seed)
    every = np.arange(len(index))
    folds = [_fold_ids(index, train=np.setdiff1d(every, v), val=v) for v in vals]
    return {"format": FORMAT, "mode": "cv", "method": "stratified group k-fold", "n_folds": n_folds, "seed": seed,
            "folds": folds}


def _closest_part(parts: list[np.ndarray], labels: np.ndarray, n_classes: int, target: float) -> np.ndarray:
    """The part of a group k-fold that best stands for the whole: every class present first, then the class
    proportions and the size closest to the whole's and to ``target`` (with few groups per part, scikit-learn's
    first part can miss a class)."""
    whole = np.bincount(labels, minlength=n_classes) / len(labels)

    def score(part: np.ndarray) -> tuple[int, float]:
        counts = np.bincount(labels[part], minlength=n_classes)
        return int((counts == 0).sum()), float(np.abs(counts / max(len(part), 1) - whole).sum()
                                               + abs(len(part) - target) / max(target, 1))

    return min(parts, key=score)


def make_cv_test_splits(index: DatasetIndex, comps: np.ndarray, n_folds: int = 5, seed: int = 12345,
                        val: float = 0.1) -> dict:
    """Stratified group k-fold with a test part per fold and a validation part carved from its training part.

    Fold k tests on part k (1 / n_folds of the images); ``val`` (a fraction of all images, default 0.1) of the rest
    is split off by groups for choosing checkpoints and settings, so 5 folds give 70:10:20 train:val:test. Every
    leakage group lies in one part of each fold and in exactly one test part.
    """
    if n_folds < 2:
        raise MedNeXtUserError(f"--folds must be >= 2 for --split cv-test (got {n_folds}); fix: --folds 5")
    if not 0 < val < 1 - 1 / n_folds:
        raise MedNeXtUserError(f"validation fraction {val} is invalid for {n_folds} folds; fix: e.g. 0.1")
    n_inner = max(2, round((1 - 1 / n_folds) / val))
    _check_enough_groups(index, comps, n_folds * 2, f"{n_folds} folds with a validation part each")
    _check_class_sizes(index, n_folds, f"{n_folds}-fold cross-validation with test parts")
    labels = index.labels()
    tests = _sgkf(labels, comps, n_folds, seed)
    every = np.arange(len(index))
    folds = []
    for k, test_idx in enumerate(tests):
        rest = np.setdiff1d(every, test_idx)
        _check_class_sizes(index.subset(rest.tolist()), n_inner, f"the validation carve-out of fold {k}")
        val_idx = rest[_closest_part(_sgkf(labels[rest], comps[rest], n_inner, seed + 1 + k), labels[rest],
                                     len(index.class_names), val * len(index))]
        folds.append(_fold_ids(index, train=np.setdiff1d(rest, val_idx), val=val_idx, test=test_idx))
    share = f"{round(100 * (1 - 1 / n_folds - (1 - 1 / n_folds) / n_inner))}:{round(100 * (1 - 1 / n_folds) / n_inner)}:" \
            f"{round(100 / n_folds)}"
    return {"format": FORMAT, "mode": "cv-test", "method": f"stratified group k-fold with test parts, train:val:test "
            f"about {share}", "n_folds": n_folds, "seed": seed, "folds": folds}


LEAKY_METHOD = "stratified image-level k-fold (LEAKY: ignores patients and duplicates)"


def make_image_cv_splits(index: DatasetIndex, n_folds: int = 5, seed: int = 12345) -> dict:
    """Stratified **image-level** k-fold: the community protocol, for comparison with published image-level results.

    Patients and duplicates are ignored, so slices of one patient and copies of one image can sit on both sides:
    results are optimistic. The split says so (``leaky: true``, and its method).
    """
    from sklearn.model_selection import StratifiedKFold

    if n_folds < 2:
        raise MedNeXtUserError(f"--folds must be >= 2 for --split image-cv (got {n_folds}); fix: --folds 5")
    _check_class_sizes(index, n_folds, f"{n_folds}-fold cross-validation")
    labels = index.labels()
    cv = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    every = np.arange(len(index))
    folds = [_fold_ids(index, train=np.setdiff1d(every, v), val=v) for _, v in cv.split(np.zeros(len(labels)), labels)]
    return {"format": FORMAT, "mode": "image-cv", "leaky": True, "method": LEAKY_METHOD, "n_folds": n_folds,
            "seed": seed, "folds": folds}


def make_holdout_split(index: DatasetIndex, comps: np.ndarray, val: float = 0.1, test: float = 0.2,
                       seed: int = 12345) -> dict:
    """One group-aware stratified train/val/test split (fractions rounded to tenths: 10 group folds)."""
    n_val, n_test = round(val * 10), round(test * 10)
    if n_test < 1 or n_val < 0 or n_val + n_test >= 10:
        raise MedNeXtUserError(f"hold-out fractions val={val}, test={test} are invalid; fix: e.g. 0.1 and 0.2")
    _check_enough_groups(index, comps, 10, "a 70/10/20 hold-out (10 group folds)")
    _check_class_sizes(index, 10, "the hold-out split (10 group folds)")
    vals = _sgkf(index.labels(), comps, 10, seed)
    test_idx = np.concatenate(vals[:n_test])
    val_idx = np.concatenate(vals[n_test : n_test + n_val]) if n_val else np.zeros(0, dtype=np.int64)
    train_idx = np.concatenate(vals[n_test + n_val :])
    fold = _fold_ids(index, train=train_idx, val=val_idx, test=test_idx)
    if not n_val:
        fold.pop("val")
    return {"format": FORMAT, "mode": "holdout", "method": f"stratified group hold-out {10 - n_val - n_test}/{n_val}/{n_test} (tenths)",
            "n_folds": 1, "seed": seed, "folds": [fold]}


def save_splits(splits: dict, path: str | os.PathLike) -> None:
    from .fingerprint import save_json

    save_json(splits, path)


def _lookup(index: DatasetIndex) -> dict[str, int]:
    """Ids, normalised ids and absolute paths -> position."""
    table: dict[str, int] = {}
    for i, sample in enumerate(index.samples):
        for key in (sample.id, os.path.normpath(sample.id), os.path.normpath(sample.path)):
            table.setdefault(key, i)
    return table


def load_splits(path: str | os.PathLike, index: DatasetIndex) -> dict:
    """Read a split file and check it against ``index``; returns our format with positions in ``_positions``."""
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise MedNeXtUserError(f"cannot read split file {str(path)!r} ({e}); fix: pass a JSON split file") from None
    folds = raw.get("folds") if isinstance(raw, dict) else raw
    if not isinstance(folds, list) or not folds or not all(isinstance(f, dict) and "train" in f for f in folds):
        raise MedNeXtUserError(
            f"split file {str(path)!r} is not a list of folds; fix: use {{\"folds\": [{{\"train\": [...], "
            "\"val\": [...]}}, ...]}} (or nnU-Net's splits_final.json list)"
        )
    positions, unknown = [], []
    table = _lookup(index)
    for k, f in enumerate(folds):
        if "val" not in f and "test" not in f:
            raise MedNeXtUserError(f"fold {k} of split file {str(path)!r} has no 'val' list; fix: add one")
        fp: dict[str, list[int]] = {}
        for part in PARTS:
            if part not in f:
                continue
            pos = []
            for item in f[part]:
                p = table.get(str(item), table.get(os.path.normpath(str(item))))
                if p is None:
                    unknown.append(str(item))
                else:
                    pos.append(p)
            fp[part] = pos
        for a in PARTS:
            for b in PARTS:
                if a < b and a in fp and b in fp and set(fp[a]) & set(fp[b]):
                    both = index.samples[sorted(set(fp[a]) & set(fp[b]))[0]].id
                    raise MedNeXtUserError(
                        f"fold {k} of split file {str(path)!r} puts {both!r} in both {a} and {b}; fix: each image "
                        "belongs to one part"
                    )
        positions.append(fp)
    if unknown:
        raise MedNeXtUserError(
            f"split file {str(path)!r} names {len(unknown)} images that are not in the dataset, first {unknown[0]!r}; "
            "fix: pass the split file made for this dataset (a run folder's splits.json belongs to the data it was made for: train other data into a new -o)"
        )
    out = dict(raw) if isinstance(raw, dict) else {"format": FORMAT, "method": "user", "folds": folds}
    out["n_folds"] = len(folds)
    out["_positions"] = positions
    return out


def attach_positions(splits: dict, index: DatasetIndex) -> dict:
    """``splits`` made by us for ``index``: add ``_positions`` without re-reading."""
    splits = dict(splits)
    splits["_positions"] = [
        {part: [index.position(i) for i in f[part]] for part in PARTS if part in f} for f in splits["folds"]
    ]
    return splits


def _crossing(fold_positions: dict[str, list[int]], comps: np.ndarray) -> set[int]:
    """Leakage groups with members in more than one part of a fold."""
    owner: dict[int, str] = {}
    crossing: set[int] = set()
    for part in PARTS:
        for p in fold_positions.get(part, []):
            c = int(comps[p])
            if c in owner and owner[c] != part:
                crossing.add(c)
            owner.setdefault(c, part)
    return crossing


def leak_report(splits: dict, index: DatasetIndex, comps: np.ndarray) -> list[str]:
    """A warning per fold where a leakage group (patient / duplicates) has members in two parts; for a split that is
    leaky by design (``--split image-cv``) one line with the counts."""
    if splits.get("leaky"):
        crossing = [len(_crossing(fp, comps)) for fp in splits["_positions"]]
        n_groups = int(sum(np.bincount(comps) > 1)) if len(comps) else 0
        return [f"leaky split by design ({splits.get('method', 'image-level')}): of {n_groups} patient/duplicate "
                f"groups, {min(crossing)}-{max(crossing)} per fold have images on both sides; do not report it as "
                "patient-independent"]
    out = []
    for k, fp in enumerate(splits["_positions"]):
        crossing = _crossing(fp, comps)
        if crossing:
            c = sorted(crossing)[0]
            members = [index.samples[i].id for i in np.nonzero(comps == c)[0][:3]]
            out.append(
                f"fold {k}: {len(crossing)} patient/duplicate groups are split between train and evaluation parts "
                f"(e.g. {', '.join(members)})"
            )
    return out


def coverage_report(splits: dict, index: DatasetIndex) -> list[str]:
    """Warnings for folds whose train or evaluation part lacks a class."""
    labels = index.labels()
    out = []
    for k, fp in enumerate(splits["_positions"]):
        for part, pos in fp.items():
            present = set(labels[pos].tolist()) if pos else set()
            missing = [c for i, c in enumerate(index.class_names) if i not in present]
            if missing and part == "train":
                out.append(f"fold {k}: no {', '.join(missing)} images in train")
            elif missing and pos:
                out.append(f"fold {k}: no {', '.join(missing)} images in {part} (metrics for that class are undefined)")
    return out


def largest_group_report(index: DatasetIndex, comps: np.ndarray, n_folds: int) -> list[str]:
    """Warn when one leakage group holds more than half a fold (near-duplicate chains can merge many images)."""
    if len(comps) == 0:
        return []
    _, counts = np.unique(comps, return_counts=True)
    biggest = int(counts.max())
    if n_folds > 1 and biggest > len(index) / (2 * n_folds):
        return [
            f"one patient/duplicate group holds {biggest} of {len(index)} images; folds will be unbalanced "
            "(fix: --near-dup-threshold lower, or -1 to group only exact duplicates and patients)"
        ]
    return []
