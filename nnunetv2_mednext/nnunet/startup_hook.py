"""Start-up hook installed by nnunetv2-mednext (through a .pth file in site-packages).

The wheel installs this file as the top-level module ``_nnunetv2_mednext_hook`` next to
``nnunetv2_mednext_autoregister.pth`` (both from this folder, see ``pyproject.toml``), so it runs at every interpreter
start of the environment; it must stay cheap and self-contained.

It appends the folder with nnunetv2-mednext's trainer shim to the ``nnUNet_extTrainer`` environment variable, so
that the stock ``nnUNetv2_train`` / ``nnUNetv2_predict`` commands find ``nnUNetTrainerMedNeXt*``, and, in
``nnUNetv2_*`` commands only, installs an exception hook that adds an explanation below nnU-Net's own error when it
can explain the failure, and otherwise leaves nnU-Net's traceback alone (it imports the package only when an
exception reaches the top). It imports nothing but ``os`` and ``sys`` and never raises. Opt out of both with
``NNUNETV2_MEDNEXT_NO_AUTOREGISTER=1``.
"""

import os
import sys

_VAR = "nnUNet_extTrainer"
SHIM = ("nnunetv2_mednext", "nnunet", "ext_trainers")  # the folder nnU-Net searches, from site-packages


def shim_folder() -> str:
    """The shim folder next to this file (wheel install), else wherever ``nnunetv2_mednext`` lives (editable)."""
    here = os.path.dirname(os.path.abspath(__file__))
    folder = os.path.join(here, *SHIM)
    if os.path.isdir(folder):
        return folder
    import importlib.util

    spec = importlib.util.find_spec("nnunetv2_mednext")
    if spec is None or not spec.submodule_search_locations:
        return folder
    return os.path.join(next(iter(spec.submodule_search_locations)), *SHIM[1:])


def _lazy_excepthook(exc_type, exc, tb, _previous=sys.excepthook):  # type: ignore[no-untyped-def]
    try:
        from nnunetv2_mednext.nnunet.friendly_errors import excepthook
    except Exception:
        _previous(exc_type, exc, tb)
        return
    excepthook(exc_type, exc, tb, _previous)


def install() -> None:
    try:
        # read here, not by envflags: the package must not be imported at every interpreter start
        if os.environ.get("NNUNETV2_MEDNEXT_NO_AUTOREGISTER", "").strip().lower() in ("1", "on", "true", "yes"):
            return
        folder = shim_folder()
        if not os.path.isdir(folder):
            return
        current = [p for p in os.environ.get(_VAR, "").split(os.pathsep) if p]
        if folder not in current:
            os.environ[_VAR] = os.pathsep.join([*current, folder])
        argv = getattr(sys, "argv", None) or [""]
        if os.path.basename(argv[0]).startswith("nnUNetv2_") and not getattr(sys.excepthook, "_mednext", False):
            _lazy_excepthook._mednext = True  # type: ignore[attr-defined]
            sys.excepthook = _lazy_excepthook
    except Exception:  # a start-up hook must never break the interpreter
        pass
