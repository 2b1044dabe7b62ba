"""Checks of the nnU-Net environment that give one actionable line instead of a deep traceback."""

from __future__ import annotations

import os
import re
from pathlib import Path

from nnunetv2_mednext.errors import MedNeXtUserError

PATH_VARS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")


def require_env(*names: str) -> dict[str, Path]:
    """Return the named nnU-Net folders, or raise naming the unset variables and how to set them."""
    names = names or PATH_VARS
    missing = [n for n in names if not os.environ.get(n)]
    if missing:
        raise MedNeXtUserError(
            f"environment variable(s) {', '.join(missing)} not set; export them to nnU-Net's data folders, e.g. "
            f"export {missing[0]}=/data/{missing[0]} (see nnU-Net's documentation/set_environment_variables.md)"
        )
    return {n: Path(os.environ[n]) for n in names}


def find_dataset(dataset: str | int, root_var: str = "nnUNet_raw") -> str:
    """Resolve ``27`` / ``Dataset027_ACDC`` to the dataset folder name under ``$root_var``, or raise."""
    root = require_env(root_var)[root_var]
    if not root.is_dir():
        raise MedNeXtUserError(f"{root_var}={root} does not exist; create it or point {root_var} at your data folder")
    text = str(dataset)
    if text.isdigit():
        prefix = f"Dataset{int(text):03d}_"
        hits = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name.startswith(prefix))
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise MedNeXtUserError(f"dataset id {text} is ambiguous in {root}: {', '.join(hits)}; rename one of them")
    elif re.fullmatch(r"Dataset\d{3}_.+", text) and (root / text).is_dir():
        return text
    available = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name.startswith("Dataset"))
    raise MedNeXtUserError(
        f"dataset {text} not found in {root_var}={root} (available: {', '.join(available) or 'none'}); "
        "convert it to nnU-Net's raw format first (DatasetXXX_Name with imagesTr, labelsTr, dataset.json)"
    )
