"""Helpers for the budget tests: clocks the tests move. Holds no tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


class MovableClock:
    """An aware UTC wall clock that moves only when a test says."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


class Ticker:
    """A monotonic clock that moves only when a test says (for the rate limit)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def at(text: str) -> datetime:
    """`2026-12-01T23:59` as an aware UTC time."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)
