"""A trained model folder (``$nnUNet_results/DatasetX/Trainer__Plans__Config``), checked before nnU-Net reads it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from nnunetv2_mednext.errors import MedNeXtUserError


def fold_name(fold: int | str) -> str:
    """``0`` -> ``fold_0``, ``all`` -> ``fold_all``."""
    return f"fold_{fold}"


def parse_folds(folds: Sequence[int | str] | None) -> list[int | str] | None:
    """``["0", "all"]`` -> ``[0, "all"]``; a fold that is neither an integer nor ``all`` is an error."""
    if folds is None:
        return None
    out: list[int | str] = []
    for f in folds:
        text = str(f)
        if text == "all":
            out.append("all")
        elif text.isdigit():
            out.append(int(text))
        else:
            raise MedNeXtUserError(f"fold {text!r} is not a fold; give fold numbers (0 1 2 3 4) or 'all'")
    return out


def available_folds(model_folder: Path, checkpoint: str) -> list[int | str]:
    """The folds of ``model_folder`` that hold ``checkpoint`` (integers first, then ``all``)."""
    found = [p.name[5:] for p in model_folder.glob("fold_*") if (p / checkpoint).is_file()]
    return sorted((int(f) if f.isdigit() else f for f in found), key=lambda f: (isinstance(f, str), str(f).zfill(4)))


def check_model_folder(model_folder: str | Path, folds: Sequence[int | str] | None, checkpoint: str) -> tuple[Path, list[int | str]]:
    """The model folder and the folds to use, or a one-line error naming what is missing and the fix."""
    folder = Path(model_folder)
    if not folder.is_dir():
        raise MedNeXtUserError(f"model folder {folder} does not exist; give the training output folder "
                               "($nnUNet_results/DatasetXXX_Name/Trainer__Plans__Configuration) or train it first")
    for name in ("plans.json", "dataset.json"):
        if not (folder / name).is_file():
            raise MedNeXtUserError(f"{folder} has no {name}, so it is not an nnU-Net model folder; give the folder "
                                   "nnUNetv2_train wrote (Trainer__Plans__Configuration)")
    wanted = parse_folds(folds)
    if wanted is None:
        wanted = available_folds(folder, checkpoint)
        if not wanted:
            raise MedNeXtUserError(f"no fold of {folder} holds {checkpoint}; train a fold first, or pick the "
                                   "checkpoint with -chk (e.g. -chk checkpoint_best.pth)")
        return folder, wanted
    for f in wanted:
        fold_dir = folder / fold_name(f)
        if not fold_dir.is_dir():
            have = ", ".join(str(x) for x in available_folds(folder, checkpoint)) or "none"
            raise MedNeXtUserError(f"fold {f} not found in {folder} (folds with {checkpoint}: {have}); pick one "
                                   "of those with -f, or train the fold first")
        if not (fold_dir / checkpoint).is_file():
            present = sorted(p.name for p in fold_dir.glob("checkpoint_*.pth"))
            raise MedNeXtUserError(f"no checkpoint {checkpoint} in {fold_dir} (present: {', '.join(present) or 'none'});"
                                   " pick one with -chk, or finish the training")
    return folder, wanted


def load_predictor(model_folder: Path, folds: Sequence[int | str], checkpoint: str, **predictor_kwargs):
    """nnU-Net's own predictor, on the CPU, with every fold's weights (the network holds the first fold's)."""
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    kwargs = {"tile_step_size": 0.5, "use_gaussian": True, "use_mirroring": True,
              "perform_everything_on_device": False, "device": torch.device("cpu"), "allow_tqdm": False,
              **predictor_kwargs}
    predictor = nnUNetPredictor(**kwargs)
    predictor.initialize_from_trained_model_folder(str(model_folder), list(folds), checkpoint_name=checkpoint)
    return predictor
