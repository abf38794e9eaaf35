"""Parley's version, as installed: one place for `parley --version` and the User-Agent."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def parley_version() -> str:
    """The installed package's version (pyproject.toml's); "unknown" in a checkout never
    installed, which still runs through `python -m bots.cli`."""
    try:
        return version("parley")
    except PackageNotFoundError:
        return "unknown"
