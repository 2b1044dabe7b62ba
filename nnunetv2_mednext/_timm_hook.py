"""Register the MedNeXt classifiers in timm's registry once both packages are imported, in either order.

``import timm`` takes seconds (it imports torchvision), ``import nnunetv2_mednext`` must stay instant: so the package
does not import timm. If timm is already imported, :func:`install` registers at once; otherwise it puts a one-shot
finder at the front of ``sys.meta_path`` that lets the normal machinery find ``timm`` and only wraps that loader's
``exec_module``, so the registration (``nnunetv2_mednext.networks.timm_mednext``) runs right after timm is loaded.
A failure there is a warning, never a broken ``import timm``.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import warnings

REGISTRATION_MODULE = "nnunetv2_mednext.networks.timm_mednext"


def register() -> bool:
    """Import the registration module (needs timm); ``False`` with a warning if that fails."""
    try:
        importlib.import_module(REGISTRATION_MODULE)
        return True
    except Exception as e:  # an optional integration must not break the user's import of timm
        warnings.warn(f"nnunetv2_mednext: MedNeXt classifiers not registered in timm ({type(e).__name__}: {e})",
                      stacklevel=2)
        return False


class _AfterTimmImport:
    """Meta-path finder that finds nothing itself: it wraps the real loader of ``timm`` (one shot)."""

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> object:
        if fullname != "timm":
            return None
        uninstall()  # one shot, and no recursion through the find_spec below
        spec = importlib.util.find_spec("timm")
        loader = getattr(spec, "loader", None)
        exec_module = getattr(loader, "exec_module", None)
        if exec_module is None:
            return spec

        def exec_then_register(module: object) -> None:
            exec_module(module)
            register()

        loader.exec_module = exec_then_register  # this spec's own loader instance
        return spec


_FINDER = _AfterTimmImport()


def install() -> None:
    """Register now if timm is loaded, else after it is imported. Idempotent."""
    timm = sys.modules.get("timm")
    if timm is not None and getattr(timm, "create_model", None) is not None:
        register()
    elif _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)


def uninstall() -> None:
    while _FINDER in sys.meta_path:
        sys.meta_path.remove(_FINDER)
