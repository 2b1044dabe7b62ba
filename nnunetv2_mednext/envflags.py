"""The one parser of the package's on/off environment variables (``NNUNETV2_MEDNEXT_*=1/0``)."""

from __future__ import annotations

import os

from nnunetv2_mednext.errors import MedNeXtUserError

ON = ("1", "on", "true", "yes")
OFF = ("0", "off", "false", "no")


def env_flag(name: str, default: bool | None, on: str = "", off: str = "") -> bool | None:
    """``True``/``False`` for ``1/on/true/yes`` / ``0/off/false/no`` (any case); ``default`` when unset or empty.

    Any other value raises :class:`MedNeXtUserError` naming the variable and what each setting does (``on`` and
    ``off`` describe them).
    """
    raw = os.environ.get(name)
    value = (raw or "").strip().lower()
    if not value:
        return default
    if value in ON:
        return True
    if value in OFF:
        return False
    meaning = f" ({on})" if on else ""
    meaning_off = f" ({off})" if off else ""
    unset = "" if default is None else f", or unset it for the default ({'on' if default else 'off'})"
    raise MedNeXtUserError(f"{name}={raw!r} is not valid; fix: use 1{meaning} or 0{meaning_off}{unset}")
