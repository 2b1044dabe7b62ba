"""One-line messages for the errors users meet in the stock ``nnUNetv2_*`` commands (with or without our trainers).

Installed as ``sys.excepthook`` by the start-up hook for every ``nnUNetv2_*`` command, and when our trainers are
imported. Only :class:`MedNeXtUserError`, file-system errors (read-only, full disk) and failures we can explain are
shortened -- for the last, the data the command was given is checked (``dataset_check``) and the problem found is
named with its file and fix; anything else keeps nnU-Net's traceback. Imports nothing heavy at start-up.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from nnunetv2_mednext.errors import MedNeXtUserError

SHOW_TRACEBACK_ENV = "NNUNETV2_MEDNEXT_TRACEBACK"


def command_name(argv: Sequence[str] | None = None) -> str:
    argv = sys.argv if argv is None else argv
    return os.path.basename(argv[0]) if argv else ""


def _arg_values(argv: Sequence[str], flag: str) -> list[str]:
    """Values that follow ``flag`` in ``argv`` (up to the next option)."""
    out: list[str] = []
    for i, a in enumerate(argv):
        if a == flag:
            for v in argv[i + 1 :]:
                if v.startswith("-") and not v.lstrip("-").isdigit():
                    break
                out.append(v)
    return out


def _frame_locals(tb: TracebackType | None, function: str) -> dict | None:
    """Locals of the innermost traceback frame running ``function``."""
    found = None
    while tb is not None:
        if tb.tb_frame.f_code.co_name == function:
            found = tb.tb_frame.f_locals
        tb = tb.tb_next
    return found


def _pretrained_message(exc: BaseException, tb: TracebackType | None) -> str | None:
    """``-pretrained_weights``: unreadable file, not an nnU-Net checkpoint, missing key, shape mismatch."""
    loc = _frame_locals(tb, "load_pretrained_weights")
    if loc is None:
        return None
    fname = loc.get("fname", "?")
    fix = "fix: pass a checkpoint_final.pth written by nnUNetv2_train for the same network and plans"
    pretrained, model = loc.get("pretrained_dict"), loc.get("model_dict")
    if pretrained is None:
        if isinstance(exc, KeyError):
            keys = list(loc.get("saved_model", {}) or {})[:4] if isinstance(loc.get("saved_model"), dict) else []
            what = " (it looks like a classification checkpoint of `nnunetv2-mednext classify`)" if "format" in keys else ""
            return f"-pretrained_weights {fname} is not an nnU-Net training checkpoint (keys {keys}){what}; {fix}"
        reason = " ".join(str(exc).split())[:120] or type(exc).__name__
        return f"-pretrained_weights {fname} cannot be read as a PyTorch checkpoint ({reason}); {fix}"
    key = loc.get("key")
    if key is not None and model is not None and key not in pretrained:
        return (f"-pretrained_weights {fname} do not fit this network: it has no {key!r} (another variant, kernel size "
                f"or plans?); {fix}, or `nnunetv2-mednext upkern` to go from a k3 to a k5 MedNeXtV1 checkpoint")
    if key is not None and model is not None:
        theirs, ours = tuple(pretrained[key].shape), tuple(model[key].shape)
        return (f"-pretrained_weights {fname} do not fit this network: {key!r} has shape {list(theirs)} in the "
                f"checkpoint and {list(ours)} in the network; {fix}, or `nnunetv2-mednext upkern` to go from a k3 "
                "to a k5 MedNeXtV1 checkpoint")
    return None


def _diagnose_data(argv: Sequence[str]) -> str | None:
    """After a failed nnU-Net command, check the data it was given; the first problem found, or ``None``."""
    cmd = command_name(argv)
    try:
        if cmd in ("nnUNetv2_plan_and_preprocess", "nnUNetv2_extract_fingerprint", "nnunetv2-mednext"):
            from nnunetv2_mednext.dataset_check import check_raw_dataset
            from nnunetv2_mednext.nnunet_env import find_dataset

            raw = os.environ.get("nnUNet_raw")
            for d in _arg_values(argv, "-d"):
                if raw:
                    check_raw_dataset(Path(raw) / find_dataset(d), full=True)
        elif cmd in ("nnUNetv2_predict", "nnUNetv2_predict_from_modelfolder"):
            folder = _arg_values(argv, "-i")
            model_json = _model_dataset_json(argv)
            if folder and model_json is not None:
                from nnunetv2_mednext.dataset_check import check_prediction_inputs

                check_prediction_inputs(folder[0], len(model_json["channel_names"]), model_json.get("file_ending"))
    except MedNeXtUserError as e:
        return f"{e} (nnU-Net's traceback: rerun with {SHOW_TRACEBACK_ENV}=1)"
    except Exception:  # a diagnosis must never hide the original error
        return None
    return None


PREDICT_COMMANDS = ("nnUNetv2_predict", "nnUNetv2_predict_from_modelfolder")


def check_predict_command_inputs(num_input_channels: int, argv: Sequence[str] | None = None) -> None:
    """In ``nnUNetv2_predict``: check the ``-i`` folder before nnU-Net's workers die on a misnamed file.

    Called by our trainers' network builders, which the predictor runs before it reads any image.
    """
    argv = sys.argv if argv is None else argv
    if command_name(argv) not in PREDICT_COMMANDS:
        return
    folder = _arg_values(argv, "-i")
    if not folder:
        return
    from nnunetv2_mednext.dataset_check import check_prediction_inputs

    try:
        model_json = _model_dataset_json(argv)
    except Exception:  # the predictor reports a missing model folder itself
        model_json = None
    check_prediction_inputs(folder[0], num_input_channels, (model_json or {}).get("file_ending"))


def _model_dataset_json(argv: Sequence[str]) -> dict | None:
    """``dataset.json`` of the model a predict command names (``-m`` folder, or ``-d/-tr/-p/-c``)."""
    import json

    folders = _arg_values(argv, "-m")
    if not folders:
        results = os.environ.get("nnUNet_results")
        d, c = _arg_values(argv, "-d"), _arg_values(argv, "-c")
        if not (results and d and c):
            return None
        from nnunetv2_mednext.nnunet_env import find_dataset

        tr = (_arg_values(argv, "-tr") or ["nnUNetTrainer"])[0]
        p = (_arg_values(argv, "-p") or ["nnUNetPlans"])[0]
        folders = [str(Path(results) / find_dataset(d[0], "nnUNet_results") / f"{tr}__{p}__{c[0]}")]
    path = Path(folders[0]) / "dataset.json"
    return json.loads(path.read_text()) if path.is_file() else None


def friendly_message(exc: BaseException, tb: TracebackType | None = None,
                     argv: Sequence[str] | None = None) -> str | None:
    """The one-line message for ``exc``, or ``None`` when the full traceback should be shown."""
    argv = sys.argv if argv is None else argv
    text = str(exc)
    if isinstance(exc, MedNeXtUserError):
        return text
    message = _pretrained_message(exc, tb)
    if message:
        return message
    if isinstance(exc, OSError):
        from nnunetv2_mednext.fsutil import os_error_message

        message = os_error_message(exc)
        if message:
            return message
    if isinstance(exc, RuntimeError) and text.startswith("Could not find a dataset with the ID"):
        ident = re.search(r"ID (\d+)", text)
        unset = [v for v in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results") if not os.environ.get(v)]
        if unset:
            return (f"dataset {ident.group(1) if ident else '?'} not found because {', '.join(unset)} "
                    f"{'is' if len(unset) == 1 else 'are'} not set; fix: export {unset[0]}=/path/to/{unset[0]} (and the "
                    "other nnUNet_* folders; nnU-Net's documentation/set_environment_variables.md)")
        return (f"dataset {ident.group(1) if ident else '?'} not found in nnUNet_raw, nnUNet_preprocessed or "
                "nnUNet_results; fix: check the id and that the three nnUNet_* variables point at your folders")
    if isinstance(exc, RuntimeError) and text.startswith("Requested configuration"):
        name = text.split()[2]
        avail = re.search(r"Available configurations: (.*)", text)
        return (f"configuration {name!r} is not in these plans (available: {avail.group(1) if avail else '?'}); fix: "
                f"plan it (nnUNetv2_plan_and_preprocess -d ID -c {name}) or pick an available one")
    if isinstance(exc, RuntimeError) and text.startswith("Could not find requested nnunet trainer"):
        found = re.match(r"Could not find requested nnunet trainer (\S+)", text)
        return unknown_trainer_message(found.group(1) if found else "?")
    if isinstance(exc, FileNotFoundError) and str(exc.filename or "").lower().endswith("plans.json"):
        return (f"plans file {exc.filename} not found; fix: run nnUNetv2_plan_and_preprocess -d ID (nnUNetPlans) or "
                "nnunetv2-mednext plan_and_preprocess -d ID (nnUNetMedNeXtPlans), or pass the right -p")
    if isinstance(exc, ValueError) and "n_splits" in text and "number of samples" in text:
        n = re.search(r"n_samples=(\d+)", text)
        return (f"only {n.group(1) if n else 'a few'} training cases, fewer than the 5 folds of nnU-Net's "
                "cross-validation; fix: add cases, train on all cases with fold `all` (nnUNetv2_train D C all), or "
                "write your own splits_final.json into the preprocessed dataset folder")
    return _diagnose_data(argv)


def unknown_trainer_message(name: str) -> str:
    """``-tr NAME`` that nobody provides: the closest names of ours, and the usual causes."""
    import difflib

    try:
        from nnunetv2_mednext.trainers.variants import trainer_names

        names = trainer_names()
    except Exception:  # nnU-Net itself broken: no suggestion
        names = []
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.75)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    return (f"trainer {name} not found; {hint}fix: check the -tr name (`nnunetv2-mednext info --trainers` lists the "
            "MedNeXt trainers); for your own trainers set nnUNet_extTrainer to their folder")


def excepthook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None,
               _previous=sys.excepthook) -> None:  # type: ignore[no-untyped-def]
    message = None
    if os.environ.get(SHOW_TRACEBACK_ENV, "") not in ("1", "true", "yes"):
        try:
            message = friendly_message(exc, tb)
        except Exception:  # never let the hook hide the real error
            message = None
    if message is None:
        _previous(exc_type, exc, tb)
    else:
        print(f"nnunetv2-mednext: error: {message}", file=sys.stderr)


def install() -> None:
    """Make :func:`excepthook` the interpreter's (once; the start-up hook may have installed its lazy twin)."""
    if not getattr(sys.excepthook, "_mednext", False):
        excepthook._mednext = True  # type: ignore[attr-defined]
        sys.excepthook = excepthook
