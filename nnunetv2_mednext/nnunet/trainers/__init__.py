"""nnU-Net trainers for MedNeXt networks (``nnUNetTrainerMedNeXt*``).

Importing this package installs the exception hook (``friendly_errors``, also installed by the start-up hook) and
hands it the trainer names for "did you mean" on an unknown ``-tr``; the hook never imports this package.
"""

from __future__ import annotations

from nnunetv2_mednext.nnunet.friendly_errors import install as install_friendly_errors

from .base import nnUNetTrainerMedNeXt
from .variants import *  # noqa: F403
from .variants import TRAINERS, trainer_names
from .variants import __all__ as _variant_names

install_friendly_errors(trainer_names)

__all__ = ["TRAINERS", "nnUNetTrainerMedNeXt", *_variant_names]
