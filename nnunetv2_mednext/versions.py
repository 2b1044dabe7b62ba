"""Installed versions of distributions (for ``info`` and the device check's report)."""

from __future__ import annotations


def installed_version(dist: str) -> str:
    """The installed version of distribution ``dist``, or ``not installed``."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"
