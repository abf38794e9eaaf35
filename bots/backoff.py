"""Capped exponential backoff: the one rule for how long the bots wait between two tries.

Two kinds of retry use it. Reaching a platform (start-up, long polling) waits without jitter:
one process reconnects one bot per platform, so there is no herd to spread, and a log line that
says "retrying in 4 s" should retry in 4 s. Delivering replies through an outage (the streaming
engine) waits with jitter: the replies an outage failed together should not all come back at
the same instant.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

#: Doublings after which the wait is at its cap anyway; bounds the float power.
MAX_DOUBLINGS = 32


@dataclass(frozen=True, slots=True)
class Backoff:
    """Waits between tries: `first`, doubled after each failure, never above `cap`; with
    `jitter`, each shortened by a random share of up to half."""

    first: float = 1.0
    cap: float = 60.0
    jitter: bool = False

    def delay(self, failures: int) -> float:
        """The wait after the `failures`-th failure in a row (1 for the first)."""
        doubled: float = self.first * 2.0 ** min(failures - 1, MAX_DOUBLINGS)
        wait = min(self.cap, doubled)
        return wait * random.uniform(0.5, 1.0) if self.jitter else wait

    def delays(self) -> Iterator[float]:
        """The waits after the first, second, ... failure in a row."""
        failures = 1
        while True:
            yield self.delay(failures)
            failures += 1
