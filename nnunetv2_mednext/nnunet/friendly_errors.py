"""Explanations for the errors users meet in the stock ``nnUNetv2_*`` commands (with or without our trainers).

Installed as ``sys.excepthook`` by the start-up hook for every ``nnUNetv2_*`` command, and when our trainers are
imported. The hook only ever adds: it prints an explanation only when it explains the exception that reached the top
-- a failure it recognises by nnU-Net's own message (unknown dataset, configuration or trainer, too few cases for 5
folds, ``-pretrained_weights`` that do not fit, a read-only or full disk, ``nnUNet_n_proc_DA=0`` at planning), or a
data problem (``dataset_check``) that names the same file, the same made-up case or the same channel mismatch as the
failure. Then it prints two lines: nnU-Net's own exception type and message, and the explanation with its fix
(nnU-Net's traceback with ``NNUNETV2_MEDNEXT_TRACEBACK=1``). Anything else keeps nnU-Net's traceback, untouched.
:class:`MedNeXtUserError` raised by our own code is one line. Imports nothing heavy at start-up and nothing from
``trainers`` (the trainers register their names with :func:`install`).
"""

from __future__ import annotations

import errno
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

from nnunetv2_mednext.envflags import env_flag
from nnunetv2_mednext.errors import MedNeXtUserError
from nnunetv2_mednext.nnunet.argv import arg_values, command_name

SHOW_TRACEBACK_ENV = "NNUNETV2_MEDNEXT_TRACEBACK"
_trainer_names: Callable[[], list[str]] | None = None  # set by install() when the trainers are imported


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


# ----------------------------------------------------------------------------------------- data diagnoses
PLAN_COMMANDS = ("nnUNetv2_plan_and_preprocess", "nnUNetv2_extract_fingerprint", "nnUNetv2_plan_experiment",
                 "nnunetv2-mednext")
PREDICT_COMMANDS = ("nnUNetv2_predict", "nnUNetv2_predict_from_modelfolder")
_CONV_CHANNELS = re.compile(r"expected input\[[^\]]*\] to have (\d+) channels, but got (\d+) channels")
_FRAMES_SEARCHED = 3  # innermost nnU-Net frames whose locals are searched for the files a diagnosis names
_MAX_ITEMS = 20000


def _nnunet_frames(tb: TracebackType | None) -> list:
    """Frames of nnU-Net's own code in the traceback, innermost first (generator frames included)."""
    frames = []
    while tb is not None:
        if str(tb.tb_frame.f_globals.get("__name__", "")).startswith("nnunetv2."):
            frames.append(tb.tb_frame)
        tb = tb.tb_next
    return frames[::-1]


def _strings(value: object, depth: int = 4, budget: list[int] | None = None):  # type: ignore[no-untyped-def]
    """The strings in ``value`` and in the lists, tuples, sets and dicts (keys too) it holds, ``depth`` deep."""
    budget = [_MAX_ITEMS] if budget is None else budget
    if budget[0] <= 0:
        return
    budget[0] -= 1
    if isinstance(value, str):
        yield value
    elif isinstance(value, os.PathLike):
        yield os.fspath(value)
    elif depth > 0 and isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(k, depth - 1, budget)
            yield from _strings(v, depth - 1, budget)
    elif depth > 0 and isinstance(value, (list, tuple, set, frozenset)):
        for v in value:
            yield from _strings(v, depth - 1, budget)


def _holds(values: object, paths: frozenset[str], names: frozenset[str]) -> bool:
    """Whether ``values`` hold one of ``paths`` (compared as absolute paths) or ``names`` (ids or paths)."""
    paths = paths | {os.path.abspath(n) for n in names if os.sep in n}
    for text in _strings(values):
        if text in names or (os.sep in text and os.path.abspath(text) in paths):
            return True
    return False


def explains(problem: object, exc: BaseException, tb: TracebackType | None) -> bool:
    """Whether a data problem (``dataset_check.DataProblemError``) explains ``exc``: nnU-Net's message names one of
    its files or the case id nnU-Net made up for a misnamed file, or reports the same channel mismatch, or the
    innermost nnU-Net frames were handling one of its files when they failed, or it is the known failure the
    problem causes where nnU-Net names nothing."""
    paths: frozenset[str] = getattr(problem, "paths", frozenset())
    derived: frozenset[str] = getattr(problem, "derived", frozenset())
    text = " ".join([str(exc), *(str(getattr(exc, a, None) or "") for a in ("filename", "filename2"))])
    for p in paths:
        if p in text or ("." in os.path.basename(p) and os.path.basename(p) in text):
            return True
    if any(f"'{d}'" in text or (os.sep in d and d in text) for d in derived):
        return True
    found = _CONV_CHANNELS.search(text)
    if found and getattr(problem, "channels", None) == (int(found[1]), int(found[2])):
        return True
    frames = _nnunet_frames(tb)
    signature = getattr(problem, "signature", None)
    if signature and frames and str(frames[0].f_globals.get("__name__", "")).endswith(signature[0]) \
            and re.search(signature[1], text):
        return True
    for i, frame in enumerate(frames[:_FRAMES_SEARCHED]):
        local = {k: v for k, v in frame.f_locals.items() if k != "self"}
        if _holds(local, paths, derived):
            return True
        owner = frame.f_locals.get("self")
        if i == 0 and derived and owner is not None and _holds(getattr(owner, "__dict__", {}), frozenset(), derived):
            return True
    return False


def _data_problems(argv: Sequence[str]):  # type: ignore[no-untyped-def]
    """The data problems behind the command ``argv``, cheapest check first (a generator: stops when one explains)."""
    from nnunetv2_mednext.nnunet import dataset_check
    from nnunetv2_mednext.nnunet.env import find_dataset

    cmd = command_name(argv)
    raw = os.environ.get("nnUNet_raw")
    if cmd in PLAN_COMMANDS and raw:
        for d in arg_values(argv, "-d"):
            for full in (False, True):
                yield lambda d=d, full=full: dataset_check.check_raw_dataset(Path(raw) / find_dataset(d), full=full)
    elif cmd == "nnUNetv2_train" and raw and len(argv) > 1:
        yield lambda: dataset_check.check_raw_dataset(Path(raw) / find_dataset(argv[1]))
    elif cmd in PREDICT_COMMANDS:
        folder, model = arg_values(argv, "-i"), _model_folder(argv)
        if folder and model is not None and (model / "dataset.json").is_file():
            import json

            dataset_json = json.loads((model / "dataset.json").read_text())
            plans = json.loads((model / "plans.json").read_text()) if (model / "plans.json").is_file() else None
            yield lambda: dataset_check.check_prediction_inputs(folder[0], dataset_json, plans)


def _diagnose_data(exc: BaseException, tb: TracebackType | None, argv: Sequence[str]) -> str | None:
    """After a failed nnU-Net command, check the data it was given; the problem found if it explains ``exc``."""
    from nnunetv2_mednext.nnunet.dataset_check import DataProblemError

    try:
        for check in _data_problems(argv):
            try:
                check()
            except DataProblemError as problem:
                if explains(problem, exc, tb):
                    return str(problem)
                # a problem, but not the one nnU-Net failed on: nnU-Net's own traceback stands
    except Exception:  # a diagnosis must never hide the original error
        return None
    return None


def _model_folder(argv: Sequence[str]) -> Path | None:
    """Model folder of a predict command (``-m`` folder, or ``-d/-tr/-p/-c``)."""
    folders = arg_values(argv, "-m")
    if folders:
        return Path(folders[0])
    results = os.environ.get("nnUNet_results")
    d, c = arg_values(argv, "-d"), arg_values(argv, "-c")
    if not (results and d and c):
        return None
    from nnunetv2_mednext.nnunet.env import find_dataset

    tr = (arg_values(argv, "-tr") or ["nnUNetTrainer"])[0]
    p = (arg_values(argv, "-p") or ["nnUNetPlans"])[0]
    return Path(results) / find_dataset(d[0], "nnUNet_results") / f"{tr}__{p}__{c[0]}"


# ------------------------------------------------------------------------------------------ known pitfalls
def _pitfall_message(exc: BaseException, argv: Sequence[str]) -> str | None:
    """Stock nnU-Net failures users hit with a documented setting: nnU-Net's reason stays, the fix is added."""
    text = str(exc)
    n_proc_da = os.environ.get("nnUNet_n_proc_DA", "").strip()
    if "set_num_threads expects a positive integer" in text and n_proc_da.lstrip("-").isdigit() \
            and int(n_proc_da) < 1:
        return (f"nnU-Net's planner sets torch's threads to nnUNet_n_proc_DA, and nnUNet_n_proc_DA={n_proc_da} is "
                f"not a thread count (stock nnU-Net fails the same way); fix: run {command_name(argv) or 'planning'} "
                "without nnUNet_n_proc_DA (or with 1 or more); 0 is only meant for nnUNetv2_train")
    return None


def friendly_message(exc: BaseException, tb: TracebackType | None = None,
                     argv: Sequence[str] | None = None) -> str | None:
    """The explanation of ``exc`` (one line), or ``None`` when nothing explains it and the traceback stands."""
    argv = sys.argv if argv is None else argv
    text = str(exc)
    if isinstance(exc, MedNeXtUserError):
        return text
    message = _pretrained_message(exc, tb) or _pitfall_message(exc, argv)
    if message:
        return message
    if isinstance(exc, OSError):
        from nnunetv2_mednext.fsutil import os_error_message
        from nnunetv2_mednext.nnunet.file_errors import failing_operation

        # a read-only or full disk fails only writes; otherwise the traceback says which operation failed
        writes_only = exc.errno in (errno.EROFS, errno.ENOSPC, errno.EDQUOT)
        message = os_error_message(exc, action=failing_operation(tb) or ("write" if writes_only else "access"))
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
    if isinstance(exc, FileNotFoundError):
        from nnunetv2_mednext.nnunet.file_errors import file_not_found_message

        message = file_not_found_message(exc, tb, argv)
        if message:
            return message
    if isinstance(exc, ValueError) and "n_splits" in text and "number of samples" in text:
        n = re.search(r"n_samples=(\d+)", text)
        return (f"only {n.group(1) if n else 'a few'} training cases, fewer than the 5 folds of nnU-Net's "
                "cross-validation; fix: add cases, train on all cases with fold `all` (nnUNetv2_train D C all), or "
                "write your own splits_final.json into the preprocessed dataset folder")
    return _diagnose_data(exc, tb, argv)


def nnunet_error_line(exc: BaseException, limit: int = 600) -> str:
    """nnU-Net's own exception type and message on one line (printed above every explanation)."""
    text = " ".join(str(exc).split())
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    name = type(exc).__qualname__
    return f"{name}: {text}" if text else name


def unknown_trainer_message(name: str) -> str:
    """``-tr NAME`` that nobody provides: the closest names of ours, and the usual causes."""
    import difflib

    try:
        names = _trainer_names() if _trainer_names is not None else []
    except Exception:  # trainers broken: no suggestion
        names = []
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.75)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    return (f"trainer {name} not found; {hint}fix: check the -tr name (`nnunetv2-mednext info --trainers` lists the "
            "MedNeXt trainers); for your own trainers set nnUNet_extTrainer to their folder")


def excepthook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None,
               _previous=sys.excepthook) -> None:  # type: ignore[no-untyped-def]
    message = None
    try:
        show_traceback = bool(env_flag(SHOW_TRACEBACK_ENV, False, "nnU-Net's full traceback", "explanations"))
    except MedNeXtUserError:  # a bad value of this setting must not hide the real error: show everything
        show_traceback = True
    if not show_traceback:
        try:
            message = friendly_message(exc, tb)
        except Exception:  # never let the hook hide the real error
            message = None
    if message is None:
        _previous(exc_type, exc, tb)
        return
    if not isinstance(exc, MedNeXtUserError):  # nnU-Net's (or Python's) own reason, then ours
        print(f"nnunetv2-mednext: nnU-Net failed with {nnunet_error_line(exc)} (traceback: rerun with "
              f"{SHOW_TRACEBACK_ENV}=1)", file=sys.stderr)
    print(f"nnunetv2-mednext: error: {message}", file=sys.stderr)


def install(trainer_names: Callable[[], list[str]] | None = None) -> None:
    """Make :func:`excepthook` the interpreter's (once; the start-up hook may have installed its lazy twin).

    ``trainer_names``: the trainers package passes its name list, for "did you mean" on an unknown ``-tr``.
    """
    global _trainer_names
    if trainer_names is not None:
        _trainer_names = trainer_names
    if not getattr(sys.excepthook, "_mednext", False):
        excepthook._mednext = True  # type: ignore[attr-defined]
        sys.excepthook = excepthook
