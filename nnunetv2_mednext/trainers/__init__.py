"""nnU-Net trainers for MedNeXt networks (``nnUNetTrainerMedNeXt*``).

Importing this package installs an exception hook (``friendly_errors``) that prints :class:`MedNeXtUserError` and
well-known nnU-Net failures as one line, so the stock ``nnUNetv2_*`` commands report problems without a traceback.
"""

from __future__ import annotations

from nnunetv2_mednext.friendly_errors import install as install_friendly_errors

from .base import nnUNetTrainerMedNeXt
from .variants import *  # noqa: F403
from .variants import TRAINERS
from .variants import __all__ as _variant_names

install_friendly_errors()

__all__ = ["TRAINERS", "nnUNetTrainerMedNeXt", *_variant_names]
