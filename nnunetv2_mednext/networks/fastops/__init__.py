"""Fast CPU execution of MedNeXt layers: the same parameters and the same maths, cheaper kernels (pure PyTorch).

A MedNeXt network is made of cheap-in-MACs ops (1x1 convolutions, depthwise convolutions, per-channel norms,
GELU) that PyTorch's default kernels run far below peak on CPU, and it keeps many maps for backward. This package
changes *how* they run, never *what* they compute (``tests/test_fastops.py``):

* :mod:`.switch`: when the fast paths run (``NNUNETV2_MEDNEXT_FAST_OPS``, off under autocast and while compiling)
  and the channels-last activations they work in (``NNUNETV2_MEDNEXT_CHANNELS_LAST``);
* :mod:`.kernels`: single ops (pointwise convolutions as GEMMs, depthwise convolutions with a faster backward,
  instance norm on channels-last maps);
* :mod:`.fused`: autograd nodes for whole sub-blocks that save only their input and the expensive maps;
* :mod:`.layers`: the ``nn`` layer classes the networks build, which run the kernels where they apply.

The CPU is the measured target; on other devices only the exact tap cropping of depthwise kernels applies.
"""

from .kernels import concat_pointwise, depthwise_conv, instance_norm, pointwise_conv, useful_taps
from .layers import FastConv2d, FastConv3d, FastConvTranspose2d, FastConvTranspose3d, FastGroupNorm
from .switch import (
    CHANNELS_LAST_ENV,
    FAST_OPS_ENV,
    channels_last_wanted,
    fast_ops_enabled,
    is_channels_last,
    prepare_input,
    reference_ops,
    set_fast_ops,
)

__all__ = [
    "CHANNELS_LAST_ENV",
    "FAST_OPS_ENV",
    "FastConv2d",
    "FastConv3d",
    "FastConvTranspose2d",
    "FastConvTranspose3d",
    "FastGroupNorm",
    "channels_last_wanted",
    "concat_pointwise",
    "depthwise_conv",
    "fast_ops_enabled",
    "instance_norm",
    "is_channels_last",
    "pointwise_conv",
    "prepare_input",
    "reference_ops",
    "set_fast_ops",
    "useful_taps",
]
