"""nnunetv2-mednext: MedNeXt backbones for nnU-Net v2 and a 2D classification trainer.

Importing this package is cheap: sub-packages (``networks``, ``trainers``, ``planners``, ``classification``) are
imported on demand. It registers the MedNeXt classifiers in timm's model registry as soon as timm is imported
(``timm.create_model("mednext_cls_t", in_chans=1, num_classes=3)``) without importing timm itself.
"""

from ._timm_hook import install as _install_timm_registration

__version__ = "0.1.0"

__all__ = ["__version__"]

_install_timm_registration()
