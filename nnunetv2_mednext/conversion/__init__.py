"""Converters from public dataset layouts to nnU-Net's raw format, with the papers' split protocols.

``convert_synapse`` (BTCV raw NIfTI or TransUNet's npz/h5 copy; 18/12 TransUNet split or 5-fold on 30 cases) and
``convert_acdc`` (challenge NIfTI folders or the SSL4MIS HDF5 copy; TransUNet 70/10/20 patient split), ``convert_msd`` (Decathlon-style task folders, optional subset).
"""

from .acdc import convert_acdc
from .msd import convert_msd
from .synapse import ConversionResult, convert_synapse

__all__ = ["ConversionResult", "convert_acdc", "convert_msd", "convert_synapse"]
