"""nnU-Net experiment planners for MedNeXt (``nnUNetPlannerMedNeXt*``)."""

from .mednext_planner import *  # noqa: F403
from .mednext_planner import PLANNERS, nnUNetPlannerMedNeXt, reference_value

__all__ = ["PLANNERS", "nnUNetPlannerMedNeXt", "reference_value"]
