"""Sizes and lengths as a chat user reads them, in the lines that refuse a file over a cap."""

from __future__ import annotations


def megabytes(size: int) -> str:
    """`size` bytes as "20 MB" or "1.5 MB", in the binary megabytes Telegram's limits use."""
    return f"{size / 1024**2:.1f}".removesuffix(".0") + " MB"


def minutes(seconds: float) -> str:
    """A length as "45 s", "10 min" or "12 min 5 s"."""
    mins, secs = divmod(round(seconds), 60)
    if not mins:
        return f"{secs} s"
    return f"{mins} min {secs} s" if secs else f"{mins} min"
