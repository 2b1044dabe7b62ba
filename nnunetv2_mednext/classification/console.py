"""Output of the classification tools: information to stdout, warnings to stderr, both only on the main process."""

from __future__ import annotations

import os
import sys


def process_rank() -> int:
    """The ``torchrun`` rank (0 when not launched by torchrun), known before torch is imported."""
    return int(os.environ.get("RANK", "0"))


class Console:
    def __init__(self, quiet: bool = False, main: bool | None = None) -> None:
        self.quiet = quiet
        self.main = process_rank() == 0 if main is None else main
        self.warnings: list[str] = []

    def info(self, msg: str = "") -> None:
        if self.main and not self.quiet:
            print(msg, flush=True)

    def warn(self, msg: str) -> None:
        self.warnings.append(msg)
        if self.main:
            print(f"warning: {msg}", file=sys.stderr, flush=True)

    def progress_disabled(self) -> bool | None:
        """tqdm's ``disable``: off when quiet or not the main process, else automatic (shown on a terminal only)."""
        return True if (self.quiet or not self.main) else None
