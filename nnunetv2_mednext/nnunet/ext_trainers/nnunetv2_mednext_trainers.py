"""Shim searched by nnU-Net through ``nnUNet_extTrainer``: re-exports the MedNeXt trainers, nothing else."""

from nnunetv2_mednext.nnunet.trainers import *
