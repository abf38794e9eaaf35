"""Fair use in groups: a per-user rate of messages, and a process-wide cap on model calls.

`RateLimiter` is a token bucket per user (USER_MESSAGES_PER_MINUTE): a burst of N messages, then
one every 60/N seconds. A message over it is stored but not answered (the conversation service
answers with `rate_limited_line`). In process: one Parley process serves a bot.

`ReplySlots` lets at most MAX_CONCURRENT_REPLIES replies call a model at once; the others wait
in order of arrival at the cap, and each hears how many wait ahead of it whenever that changes,
so its placeholder can say "⏳ Queued (N ahead)" (`bots.relay`). A reply holds its slot for its
whole call, streaming included, and gives it back however the call ended.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass

#: Above this many users remembered, buckets that have filled up again are forgotten.
PRUNE_ABOVE = 1024


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    """A token bucket per key: `per_minute` messages at once, refilled at `per_minute` a minute."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        if per_minute <= 0:
            raise ValueError("a rate limit allows at least one message a minute")
        self._capacity = float(per_minute)
        self._per_second = per_minute / 60.0
        self._clock = clock
        self._buckets: dict[Hashable, _Bucket] = {}

    def take(self, key: Hashable) -> float | None:
        """Spend one message of `key`'s: None when it may be answered, else the seconds until
        the next one may."""
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= PRUNE_ABOVE:
                self._prune(now)
            bucket = self._buckets[key] = _Bucket(self._capacity, now)
        bucket.tokens = min(self._capacity, bucket.tokens + (now - bucket.at) * self._per_second)
        bucket.at = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return None
        return (1.0 - bucket.tokens) / self._per_second

    def _prune(self, now: float) -> None:
        """Forget the users whose buckets are full again: they are as if never seen."""
        full = [
            key
            for key, bucket in self._buckets.items()
            if bucket.tokens + (now - bucket.at) * self._per_second >= self._capacity
        ]
        for key in full:
            del self._buckets[key]


def rate_limited_line(per_minute: int, wait_seconds: float) -> str:
    """What a user over the rate limit reads."""
    wait = max(1, math.ceil(wait_seconds))
    return (
        f"⏳ Slow down: at most {per_minute} messages a minute each. I kept this message but "
        f"will not answer it; try again in {wait} s."
    )


#: Told how many replies wait ahead (0: next), each time that changes while it waits.
Moved = Callable[[int], None]


class ReplySlots:
    """At most `limit` holders at once; the rest wait first come, first served."""

    def __init__(self, limit: int) -> None:
        if limit <= 0:
            raise ValueError("at least one reply must be able to run")
        self._free = limit
        self._waiting: deque[tuple[asyncio.Future[None], Moved]] = deque()

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    async def acquire(self, moved: Moved) -> None:
        """Take a slot; while none is free, wait, telling `moved` the queue position each time
        it changes. Cancelled while waiting, it leaves the queue (and passes on a slot it was
        handed meanwhile). Each acquire is followed by one `release`."""
        if self._free > 0 and not self._waiting:
            self._free -= 1
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (turn, moved)
        self._waiting.append(entry)
        moved(len(self._waiting) - 1)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self.release()  # handed a slot as it was cancelled: pass it on
            else:
                self._waiting.remove(entry)
                self._tell_positions()
            raise

    def release(self) -> None:
        while self._waiting:
            turn, _ = self._waiting.popleft()
            if not turn.done():
                turn.set_result(None)  # the slot passes straight to the next in line
                self._tell_positions()
                return
        self._free += 1

    def _tell_positions(self) -> None:
        for ahead, (_, moved) in enumerate(self._waiting):
            moved(ahead)
