"""Diagnoses of file errors in the stock ``nnUNetv2_*`` commands, keyed to the operation that failed.

A ``FileNotFoundError`` for ``nnUNetPlans.json`` means "plan first" only when nnU-Net was *reading* the plans; when it
was *writing* them (``nnUNetv2_move_plans_between_datasets`` into a dataset without a preprocessed folder) the fix is
another command. The operation is read from the traceback (the innermost file helper nnU-Net called: batchgenerators'
``load_json`` / ``save_json`` and their kin), the command from ``argv``. Where neither is known, nothing is said and
nnU-Net's traceback stands.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from nnunetv2_mednext.nnunet.argv import arg_values, command_name

# the file helpers nnU-Net calls, by what they do (batchgenerators' file_and_folder_operations, pathlib, shutil)
READERS = frozenset({"load_json", "load_pickle", "read_text", "read_bytes", "load", "isfile_or_raise"})
WRITERS = frozenset({"save_json", "save_pickle", "write_pickle", "write_text", "write_bytes", "copy", "copyfile",
                     "copy2", "copytree", "maybe_mkdir_p", "makedirs", "mkdir", "save"})

MOVE_PLANS = "nnUNetv2_move_plans_between_datasets"
PREPROCESS = "nnUNetv2_preprocess"
FINETUNE_GUIDE = "nnU-Net's documentation/pretraining_and_finetuning.md"


def failing_operation(tb: TracebackType | None) -> str | None:
    """``"read"`` or ``"write"``: what the innermost known file helper in the traceback was doing; else ``None``."""
    found = None
    while tb is not None:
        name = tb.tb_frame.f_code.co_name
        if name in READERS:
            found = "read"
        elif name in WRITERS:
            found = "write"
        tb = tb.tb_next
    return found


def _plans_flag(command: str) -> str:
    return "-plans_name" if command == PREPROCESS else "-p"


def _under(path: Path, root: str | None) -> Path | None:
    """The dataset folder (first component below ``root``) that holds ``path``, if ``path`` is under ``root``."""
    if not root:
        return None
    try:
        rel = path.resolve().relative_to(Path(root).resolve())
    except ValueError:
        return None
    return Path(root) / rel.parts[0] if rel.parts else None


def file_not_found_message(exc: FileNotFoundError, tb: TracebackType | None, argv: Sequence[str]) -> str | None:
    """One line for a missing file, when the failing operation and command say what the fix is; else ``None``."""
    if not exc.filename:
        return None
    command = command_name(argv)
    path = Path(os.fspath(exc.filename))
    operation = failing_operation(tb)
    preprocessed = _under(path, os.environ.get("nnUNet_preprocessed"))
    if operation == "write" and command == MOVE_PLANS and not path.parent.is_dir():
        target = (arg_values(argv, "-t") or ["TARGET"])[0]
        return (f"nnU-Net writes the moved plans into {path.parent}, which does not exist: the target dataset has no "
                f"fingerprint yet; fix: nnUNetv2_extract_fingerprint -d {target}, then rerun this command "
                f"({FINETUNE_GUIDE})")
    if operation != "read":
        return None
    if path.name == "dataset.json" and command == PREPROCESS and preprocessed is not None:
        raw = os.environ.get("nnUNet_raw")
        source = Path(raw) / preprocessed.name / "dataset.json" if raw else None
        if source is not None and source.is_file():
            return (f"stock nnU-Net's nnUNetv2_preprocess reads dataset.json from {preprocessed}, which only planning "
                    "copies there (not nnUNetv2_extract_fingerprint nor nnUNetv2_move_plans_between_datasets); fix: "
                    f"cp {source} {preprocessed}/ and rerun this command")
        return None
    if path.name.lower().endswith("plans.json") or (preprocessed is not None and path.suffix == ".json"
                                                    and path.parent == preprocessed and "plans" in path.name.lower()):
        flag = _plans_flag(command)
        return (f"plans file {path} not found; fix: run nnUNetv2_plan_and_preprocess -d ID (nnUNetPlans) or "
                f"nnunetv2-mednext plan_and_preprocess -d ID (nnUNetMedNeXtPlans), or pass the right {flag}")
    return None
