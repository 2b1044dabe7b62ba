"""Reading a stock ``nnUNetv2_*`` command line: which command ran, and the values of its flags."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence


def command_name(argv: Sequence[str] | None = None) -> str:
    """The command's name (``nnUNetv2_train``), from ``argv`` or ``sys.argv``."""
    argv = sys.argv if argv is None else argv
    return os.path.basename(argv[0]) if argv else ""


def arg_values(argv: Sequence[str], flag: str) -> list[str]:
    """Values that follow ``flag`` in ``argv`` (up to the next option; negative numbers are values)."""
    out: list[str] = []
    for i, a in enumerate(argv):
        if a == flag:
            for v in argv[i + 1 :]:
                if v.startswith("-") and not v.lstrip("-").isdigit():
                    break
                out.append(v)
    return out
