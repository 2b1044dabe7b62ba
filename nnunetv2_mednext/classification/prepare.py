"""Everything before training that needs no torch: find the images, fingerprint them, drop or group duplicates,
make or load the splits. Problems surface here as one-line errors, before any heavy import."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nnunetv2_mednext.errors import MedNeXtUserError

from . import fingerprint as fpmod
from . import splits as spmod
from .console import Console
from .duplicates import drop_exact_duplicates, leakage_components
from .index import DatasetIndex, discover


@dataclass
class Prepared:
    index: DatasetIndex
    fingerprint: dict
    splits: dict
    components: np.ndarray
    dropped: list[dict] = field(default_factory=list)


def existing_run(out_dir: Path) -> list[str]:
    """Fold folders of ``out_dir`` that already hold checkpoints or results."""
    found = []
    for d in sorted(out_dir.glob("fold_*")):
        if any((d / n).exists() for n in ("checkpoint_latest.pt", "checkpoint_final.pt", "metrics.json")):
            found.append(d.name)
    return found


DEFAULT_FOLDS, DEFAULT_SEED, DEFAULT_SPLIT = 5, 12345, "cv"
SPLIT_MODES = ("cv", "cv-test", "holdout", "image-cv")


def _check_reused_splits(splits: dict, path: Path, n_folds: int | None, seed: int | None, split_mode: str | None) -> None:
    """An existing ``splits.json`` is reused only when every split option given explicitly agrees with it."""
    method = str(splits.get("method", ""))
    stored_mode = splits.get("mode") or ("holdout" if "hold-out" in method else ("cv" if "k-fold" in method else None))
    wanted = {"--folds": (n_folds, splits.get("n_folds")), "--seed": (seed, splits.get("seed")),
              "--split": (split_mode, stored_mode)}
    for flag, (given, stored) in wanted.items():
        if given is not None and stored is not None and given != stored:
            raise MedNeXtUserError(
                f"{path} was made with {flag} {stored}, this call asks for {flag} {given}; fix: train into a new -o "
                f"(the folds of a run must come from one split), or drop {flag} to reuse the existing split"
            )


def check_run_data(out: Path, signature: str) -> None:
    """Refuse to mix data: a run folder whose ``config.json`` was written for other images stays theirs."""
    path = out / "config.json"
    if not path.is_file():
        return
    try:
        old = json.loads(path.read_text()).get("data_signature")
    except (OSError, ValueError):
        return
    if old and old != signature:
        raise MedNeXtUserError(
            f"{out} holds a run on other data (the images or labels differ from those it was trained on); fix: train "
            "this dataset into a new -o"
        )


def prepare(
    data: str | os.PathLike | DatasetIndex,
    out_dir: str | os.PathLike | None,
    *,
    n_folds: int | None = None,
    seed: int | None = None,
    split_mode: str | None = None,
    splits_file: str | os.PathLike | None = None,
    near_threshold: int = fpmod.DEFAULT_NEAR_THRESHOLD,
    duplicates: str = "group",
    console: Console | None = None,
    write: bool = True,
) -> Prepared:
    """Index, fingerprint (``out_dir/fingerprint.json``), duplicate policy and splits (``out_dir/splits.json``).

    ``duplicates``: ``group`` keeps every image and keeps duplicates in one fold; ``drop`` keeps one image of each
    exact-duplicate group and drops groups whose labels disagree (near duplicates stay grouped either way).
    ``split_mode``: ``cv`` (stratified group k-fold, ``n_folds`` default 5), ``cv-test`` (the same with a test part
    per fold and validation carved from training), ``holdout`` (70/10/20) or ``image-cv`` (image-level, leaky); ``seed``
    default 12345. An existing ``out_dir/splits.json`` is reused when the options given (not ``None``) agree with
    it, else refused; ``splits_file`` (a user file) wins and is copied there. Nothing is written before every check
    has passed, and a run folder never changes data (``config.json`` records the data's signature).
    """
    console = console or Console()
    if duplicates not in ("group", "drop"):
        raise MedNeXtUserError(f"--duplicates must be group or drop (got {duplicates!r}); fix: change the option")
    if split_mode not in (None, *SPLIT_MODES):
        raise MedNeXtUserError(f"--split must be one of {', '.join(SPLIT_MODES)} (got {split_mode!r}); fix: change "
                               "the option")
    index = data if isinstance(data, DatasetIndex) else discover(data)
    out = Path(out_dir) if out_dir is not None else None
    write = write and console.main and out is not None
    fp_path = out / "fingerprint.json" if out is not None else None
    fp, reused = fpmod.load_or_compute(index, fp_path, near_threshold, progress=console.progress_disabled() is None,
                                       write=False)
    if out is not None:
        check_run_data(out, fp["signature"])
    console.info(f"fingerprint{' (cached)' if reused else ''}:")
    for line in fpmod.describe(fp):
        console.info("  " + line)
    for w in fpmod.warnings_for(fp):
        console.warn(w)

    dropped: list[dict] = []
    if duplicates == "drop":
        index, dropped = drop_exact_duplicates(index, fp)
        if dropped:
            conflicts = sum("another label" in d["reason"] for d in dropped)
            console.info(f"duplicates: dropped {len(dropped)} exact duplicates ({conflicts} with conflicting labels); "
                         f"{len(index)} images left")
            counts = index.class_counts()
            if sum(v > 0 for v in counts.values()) < 2:
                raise MedNeXtUserError("fewer than 2 classes left after dropping duplicates; fix: --duplicates group")

    comps = leakage_components(index, fp, use_near=True)
    splits_path = out / "splits.json" if out is not None else None
    save_splits = False
    if splits_file is not None:
        splits = spmod.load_splits(splits_file, index)
        console.info(f"splits: {splits['n_folds']} folds from {splits_file}")
        save_splits = splits_path is None or Path(splits_file).resolve() != splits_path.resolve()
    elif splits_path is not None and splits_path.is_file():
        splits = spmod.load_splits(splits_path, index)
        _check_reused_splits(splits, splits_path, n_folds, seed, split_mode)
        console.info(f"splits: reusing {splits_path} ({splits['n_folds']} folds)")
    else:
        seed = DEFAULT_SEED if seed is None else seed
        mode = split_mode or DEFAULT_SPLIT
        k = DEFAULT_FOLDS if n_folds is None else n_folds
        if mode == "cv":
            splits = spmod.make_cv_splits(index, comps, k, seed)
        elif mode == "cv-test":
            splits = spmod.make_cv_test_splits(index, comps, k, seed)
        elif mode == "image-cv":
            splits = spmod.make_image_cv_splits(index, k, seed)
        else:
            splits = spmod.make_holdout_split(index, comps, seed=seed)
        splits["grouped_by"] = ["nothing (image-level, leaky)"] if mode == "image-cv" else (
            (["patient column"] if index.has_groups else []) + [
                "exact duplicates",
                f"near duplicates (dHash <= {fp['duplicates']['near_threshold']} bits, thumbnail r >= "
                f"{fp['duplicates'].get('near_min_corr')})"
                if fp["duplicates"]["near_threshold"] >= 0 else "near duplicates: off",
            ])
        splits = spmod.attach_positions(splits, index)
        save_splits = True
        console.info(f"splits: {splits['method']}, {splits['n_folds']} fold(s), seed {seed}, grouped by "
                     + ", ".join(splits["grouped_by"]))
    if write:  # every check passed: now the run folder may change
        if not reused:
            fpmod.save_json(fp, fp_path)
        if duplicates == "drop":
            fpmod.save_json({"dropped": dropped}, out / "dropped_duplicates.json")
        if save_splits:
            spmod.save_splits({k: v for k, v in splits.items() if not k.startswith("_")}, splits_path)
    for w in spmod.leak_report(splits, index, comps) + spmod.coverage_report(splits, index):
        console.warn(w)
    if not splits.get("leaky"):
        for w in spmod.largest_group_report(index, comps, splits["n_folds"]):
            console.warn(w)
    return Prepared(index, fp, splits, comps, dropped)


def read_json(path: str | os.PathLike) -> dict:
    return json.loads(Path(path).read_text())
