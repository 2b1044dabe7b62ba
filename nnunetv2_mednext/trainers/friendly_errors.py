"""One-line messages for the errors users hit when running the stock ``nnUNetv2_*`` commands with our trainers.

Installed as ``sys.excepthook`` when the trainers are imported (nnU-Net's trainer lookup imports them). Only
:class:`MedNeXtUserError` and a few well-known nnU-Net failures are shortened; anything else keeps its traceback.
"""

from __future__ import annotations

import re
import sys
from types import TracebackType

from nnunetv2_mednext.errors import MedNeXtUserError


def friendly_message(exc: BaseException) -> str | None:
    """The one-line message for ``exc``, or ``None`` when the full traceback should be shown."""
    text = str(exc)
    if isinstance(exc, MedNeXtUserError):
        return text
    if isinstance(exc, RuntimeError) and text.startswith("Could not find a dataset with the ID"):
        ident = re.search(r"ID (\d+)", text)
        return (f"dataset {ident.group(1) if ident else '?'} not found in nnUNet_raw, nnUNet_preprocessed or "
                "nnUNet_results; fix: check the id and that the three nnUNet_* variables point at your folders")
    if isinstance(exc, RuntimeError) and text.startswith("Requested configuration"):
        name = text.split()[2]
        avail = re.search(r"Available configurations: (.*)", text)
        return (f"configuration {name!r} is not in these plans (available: {avail.group(1) if avail else '?'}); fix: "
                f"plan it (nnUNetv2_plan_and_preprocess -d ID -c {name}) or pick an available one")
    if isinstance(exc, FileNotFoundError) and str(exc.filename or "").lower().endswith("plans.json"):
        return (f"plans file {exc.filename} not found; fix: run nnUNetv2_plan_and_preprocess -d ID (nnUNetPlans) or "
                "nnunetv2-mednext plan_and_preprocess -d ID (nnUNetMedNeXtPlans), or pass the right -p")
    if isinstance(exc, AssertionError) and "pretrained model" in text:
        key = re.search(r"[Kk]ey (\S+)", text)
        return (f"-pretrained_weights do not fit this network (first mismatch: {key.group(1) if key else '?'}): they "
                "come from another variant, kernel size or plans; fix: use a checkpoint of the same trainer and plans, "
                "or `nnunetv2-mednext upkern` to go from a k3 to a k5 MedNeXtV1 checkpoint")
    return None


def excepthook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None,
               _previous=sys.excepthook) -> None:  # type: ignore[no-untyped-def]
    message = friendly_message(exc)
    if message is None:
        _previous(exc_type, exc, tb)
    else:
        print(f"nnunetv2-mednext: error: {message}", file=sys.stderr)


def install() -> None:
    if not getattr(sys.excepthook, "_mednext", False):
        excepthook._mednext = True  # type: ignore[attr-defined]
        sys.excepthook = excepthook
