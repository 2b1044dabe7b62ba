"""The sections of the device check, one module each, in the order they run (:data:`ALL`); every module exposes
``SECTION``, a :class:`~.base.Section`."""

from __future__ import annotations

from ..profiles import SECTIONS
from . import classify, matrix, nnunet_train, planner, predictor, routes, stability, torch_compile
from .base import Context, Section

_MODULES = (matrix, stability, planner, torch_compile, routes, predictor, classify, nnunet_train)
ALL: tuple[Section, ...] = tuple(m.SECTION for m in _MODULES)
assert tuple(s.name for s in ALL) == SECTIONS, "profiles.SECTIONS names the sections in the order they run"

__all__ = ["ALL", "Context", "Section"]
