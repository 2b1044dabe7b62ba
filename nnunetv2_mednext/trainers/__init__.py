"""nnU-Net trainers for MedNeXt networks (``nnUNetTrainerMedNeXt*``).

Importing this package installs an exception hook that prints :class:`MedNeXtUserError` as one line, so the stock
``nnUNetv2_*`` commands report configuration problems without a traceback.
"""

from __future__ import annotations

import sys

from nnunetv2_mednext.errors import MedNeXtUserError

from .base import nnUNetTrainerMedNeXt
from .variants import *  # noqa: F403
from .variants import TRAINERS
from .variants import __all__ as _variant_names


def _excepthook(exc_type, exc, tb, _previous=sys.excepthook):  # type: ignore[no-untyped-def]
    if isinstance(exc, MedNeXtUserError):
        print(f"nnunetv2-mednext: error: {exc}", file=sys.stderr)
        return
    _previous(exc_type, exc, tb)


if not getattr(sys.excepthook, "_mednext", False):
    _excepthook._mednext = True  # type: ignore[attr-defined]
    sys.excepthook = _excepthook

__all__ = ["TRAINERS", "nnUNetTrainerMedNeXt", *_variant_names]
