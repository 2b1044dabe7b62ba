"""The one parser of the package's on/off environment variables (``NNUNETV2_MEDNEXT_*=1/0``).

The start-up hook (``nnunet/startup_hook.py``) is the one exception: it runs at every interpreter start, before the
package may be imported, and reads its opt-out variable itself.
"""

from __future__ import annotations

import os

from nnunetv2_mednext.errors import MedNeXtUserError

ON = ("1", "on", "true", "yes")
OFF = ("0", "off", "false", "no")


def parse_flag(name: str, raw: str | None, default: bool | None, on: str = "", off: str = "",
               unset: str = "") -> bool | None:
    """``True``/``False`` for ``1/on/true/yes`` / ``0/off/false/no`` (any case, spaces ignored); ``default`` when
    ``raw`` is None or empty. Any other value raises :class:`MedNeXtUserError` naming the variable and what each
    setting does (``on``/``off``; ``unset``: what leaving it unset means)."""
    value = (raw or "").strip().lower()
    if not value:
        return default
    if value in ON:
        return True
    if value in OFF:
        return False
    meaning_on = f" ({on})" if on else ""
    meaning_off = f" ({off})" if off else ""
    if not unset and default is not None:
        unset = f"the default, {'on' if default else 'off'}"
    rest = f", or unset it for {unset}" if unset else ""
    raise MedNeXtUserError(f"{name}={raw!r} is not valid; fix: use 1{meaning_on} or 0{meaning_off}{rest}")


def env_flag(name: str, default: bool | None, on: str = "", off: str = "", unset: str = "") -> bool | None:
    """:func:`parse_flag` of the environment variable ``name``."""
    return parse_flag(name, os.environ.get(name), default, on, off, unset)
