"""nnunetv2-mednext: MedNeXt backbones for nnU-Net v2 and a 2D classification trainer.

Importing this package is cheap: sub-packages (``networks``, ``trainers``, ``planners``, ``classification``) are
imported on demand.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
