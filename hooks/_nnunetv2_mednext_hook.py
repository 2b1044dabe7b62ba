"""Start-up hook installed by nnunetv2-mednext (through a .pth file in site-packages).

It only appends the folder with nnunetv2-mednext's trainer shim to the ``nnUNet_extTrainer`` environment variable,
so that the stock ``nnUNetv2_train`` / ``nnUNetv2_predict`` commands find ``nnUNetTrainerMedNeXt*``. It imports
nothing but ``os`` and never raises. Opt out with ``NNUNETV2_MEDNEXT_NO_AUTOREGISTER=1``.
"""

import os

_VAR = "nnUNet_extTrainer"


def shim_folder() -> str:
    """The shim folder next to this file (wheel install), else wherever ``nnunetv2_mednext`` lives (editable)."""
    here = os.path.dirname(os.path.abspath(__file__))
    folder = os.path.join(here, "nnunetv2_mednext", "_nnunet_ext")
    if os.path.isdir(folder):
        return folder
    import importlib.util

    spec = importlib.util.find_spec("nnunetv2_mednext")
    if spec is None or not spec.submodule_search_locations:
        return folder
    return os.path.join(next(iter(spec.submodule_search_locations)), "_nnunet_ext")


def install() -> None:
    try:
        if os.environ.get("NNUNETV2_MEDNEXT_NO_AUTOREGISTER", "").lower() in ("1", "true", "yes"):
            return
        folder = shim_folder()
        if not os.path.isdir(folder):
            return
        current = [p for p in os.environ.get(_VAR, "").split(os.pathsep) if p]
        if folder not in current:
            os.environ[_VAR] = os.pathsep.join([*current, folder])
    except Exception:  # a start-up hook must never break the interpreter
        pass
