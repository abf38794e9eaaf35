"""Stop strings applied by the client, also across chunk boundaries.

Providers may ignore `stop` or support only a few strings, so the client enforces it: the text
ends right before the first occurrence of any stop string. While streaming, a tail that could
still be the start of a stop string is held back until the next piece settles it.
"""

from __future__ import annotations


def normalize_stop(stop: str | list[str] | None) -> list[str]:
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else list(stop)
    return [s for s in stops if s]


def cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    """`text` up to the first stop string, and whether one was found."""
    positions = [i for i in (text.find(s) for s in stops) if i >= 0]
    if not positions:
        return text, False
    return text[: min(positions)], True


class StopFilter:
    """Feed pieces in, get out the text that is certainly before any stop string."""

    __slots__ = ("_held", "_keep", "stopped", "stops")

    def __init__(self, stops: list[str]) -> None:
        self.stops = stops
        self._keep = max(len(s) for s in stops) - 1
        self._held = ""
        self.stopped = False

    def feed(self, piece: str) -> str:
        """Text safe to emit now; after a stop string is seen, `stopped` is set."""
        text = self._held + piece
        head, found = cut_at_stop(text, self.stops)
        if found:
            self.stopped = True
            self._held = ""
            return head
        safe = max(len(text) - self._keep, 0)
        # Hold back only the tail that is a prefix of some stop string.
        while safe < len(text) and not any(s.startswith(text[safe:]) for s in self.stops):
            safe += 1
        self._held = text[safe:]
        return text[:safe]

    def flush(self) -> str:
        """What was held back, once the stream has ended without a stop string."""
        held, self._held = self._held, ""
        return held
