"""One write budget per chat, shared by every reply streaming into it.

Platforms limit writes per chat, not per message: Telegram about one per second in a private chat
and twenty a minute in a group, Discord five per five seconds in a channel. With a clock per
message, five replies streaming into one group make five times the writes and meet 429s; so every
send and edit to a chat draws on the chat's `WriteBudget`, however many replies share it.

The budget is a sliding window: at most `limit` writes in any `window` seconds. A write counts
from when it *landed*: when the platform answered it, which is when the call returned unless the
caller knows better (discord.py returns from a call that used up its bucket only once the bucket
refills). A platform client may hold a call back before sending it (discord.py waiting for its
bucket), and the next write must not follow 2 ms after it went through. The server counts each
call when it arrives, never later than its answer, so this count is the stricter.

Who writes next when several replies wait (`Urgency`): the first text of a reply (someone waits
to see their question was heard), then whichever has waited longest, a message's final text or
an ordinary edit. Ordinary edits leave `reserve` writes of every window to the other two and are
paced `window / (limit - reserve)` apart (after the chat's last write ended), so one long reply
streaming alone never drains the window and then stands still; more replies mean rarer edits of
each, never a 429. Ordinary edits are coalesced by the engine (each shows the newest text), so
waiting drops nothing; final texts always get their turn. A 429 stops every write to the chat
until its `retry_after` has passed (`hold`).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import enum
import itertools
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from bots.clock import SYSTEM_CLOCK, Clock

K = TypeVar("K", bound=Hashable)

#: A registry holding more budgets than this drops the idle ones (see `ChatBudgets.get`).
PRUNE_ABOVE = 256


@dataclass(frozen=True, slots=True)
class WriteLimits:
    """At most `limit` writes in any `window` seconds; ordinary edits keep `reserve` of them
    free for first and final texts."""

    limit: int
    window: float
    reserve: int = 0

    def __post_init__(self) -> None:
        if self.limit < 1 or self.window <= 0 or not 0 <= self.reserve < self.limit:
            raise ValueError(f"Impossible write limits: {self}")

    @property
    def pace(self) -> float:
        """Least seconds between an ordinary edit and the end of the chat's write before it."""
        return self.window / (self.limit - self.reserve)


class Urgency(enum.IntEnum):
    """What a write shows, which decides what it may use of the budget."""

    #: A reply's first text: ahead of every other write.
    FIRST = 0
    #: A message's last text: may use the reserve; never dropped.
    FINAL = 1
    #: Text so far: paced, and never into the reserve.
    ROUTINE = 2


class Claim:
    """One write's place in the chat's queue: `wait()` for its turn, make the call, `release()`.

    Its urgency may rise while it waits (`raise_to`: the reply's final text arrived)."""

    def __init__(self, budget: WriteBudget, urgency: Urgency, since: float, order: int) -> None:
        self.urgency = urgency
        #: When the reply started waiting for this write: the longest-waiting goes first.
        self.since = since
        self._order = order
        self._budget = budget
        self._granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._released = False

    @property
    def rank(self) -> tuple[bool, float, int]:
        """Its place in the queue: first texts, then by how long each has waited."""
        return (self.urgency is not Urgency.FIRST, self.since, self._order)

    def raise_to(self, urgency: Urgency) -> None:
        if urgency < self.urgency and not self._granted.done():
            self.urgency = urgency
            self._budget._dispatch()

    async def wait(self) -> None:
        """Until the write may start. Cancelled, it leaves the queue (or returns its turn)."""
        self._budget._enqueue(self)
        try:
            await asyncio.shield(self._granted)
        except asyncio.CancelledError:
            self.release(wrote=False)
            raise

    def release(self, *, wrote: bool, landed: float | None = None) -> None:
        """The write is over (`wrote`: a call reached the platform, so it counts, from `landed`
        if the caller knows when the platform answered it, else from now), or it was never
        made. Only the first call counts; later ones do nothing."""
        if self._released:
            return
        self._released = True
        if self._granted.done():
            self._budget._ended_write(wrote, landed)
        else:
            self._granted.cancel()
            self._budget._withdraw(self)


class WriteBudget:
    """The writes one chat allows, shared by every reply streaming into it."""

    def __init__(self, limits: WriteLimits, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.limits = limits
        self._clock = clock
        #: When each write of the last window landed, oldest first.
        self._ended: list[float] = []
        self._in_flight = 0
        self._held_until = -float("inf")
        self._waiting: list[Claim] = []
        #: Replies streaming into the chat now (`in_use`), idle between writes or not.
        self._users = 0
        self._order = itertools.count()
        self._timer: asyncio.Task[None] | None = None

    def claim(self, urgency: Urgency, *, since: float | None = None) -> Claim:
        """A write of this `urgency`, waiting since `since` (now if None)."""
        when = self._clock.monotonic() if since is None else since
        return Claim(self, urgency, when, next(self._order))

    def hold(self, seconds: float) -> None:
        """The platform answered 429: no write to the chat for `seconds`."""
        self._held_until = max(self._held_until, self._clock.monotonic() + seconds)
        self._dispatch()

    @contextlib.contextmanager
    def in_use(self) -> Iterator[None]:
        """Around a reply's whole delivery: the budget is not idle meanwhile, even while the
        reply waits for its first text, so `ChatBudgets` never replaces it under the reply."""
        self._users += 1
        try:
            yield
        finally:
            self._users -= 1

    @property
    def idle(self) -> bool:
        """No reply uses it, and no past write still counts."""
        self._forget_old(self._clock.monotonic())
        busy = self._users or self._waiting or self._in_flight or self._ended
        return not busy and not self._held

    @property
    def _held(self) -> bool:
        return self._held_until > self._clock.monotonic()

    # The claims' side.

    def _enqueue(self, claim: Claim) -> None:
        self._waiting.append(claim)
        self._dispatch()

    def _withdraw(self, claim: Claim) -> None:
        if claim in self._waiting:
            self._waiting.remove(claim)
            self._dispatch()

    def _ended_write(self, wrote: bool, landed: float | None) -> None:
        self._in_flight -= 1
        if wrote:
            now = self._clock.monotonic()
            bisect.insort(self._ended, now if landed is None else min(landed, now))
        self._dispatch()

    # Deciding.

    def _dispatch(self) -> None:
        """Grant every waiting write that may go now, best first; wake up again when the next
        one may."""
        now = self._clock.monotonic()
        self._forget_old(now)
        soonest = float("inf")
        for claim in sorted(self._waiting, key=lambda claim: claim.rank):
            delay = self._delay(claim.urgency, now)
            if delay <= 0:
                self._waiting.remove(claim)
                self._in_flight += 1
                claim._granted.set_result(None)
            else:
                soonest = min(soonest, delay)
                if claim.urgency is Urgency.FIRST:
                    break  # nothing overtakes a waiting first text
        self._wake_in(soonest)

    def _delay(self, urgency: Urgency, now: float) -> float:
        """Seconds until a write of `urgency` may start, inf while that depends on a write in
        flight (its end wakes the budget)."""
        limits = self.limits
        allowed = limits.limit if urgency is not Urgency.ROUTINE else limits.limit - limits.reserve
        used = len(self._ended) + self._in_flight
        delay = self._held_until - now
        if used >= allowed:
            expiring = used - allowed  # this many must leave the window first, oldest first
            if expiring >= len(self._ended):
                return float("inf")
            delay = max(delay, self._ended[expiring] + limits.window - now)
        if urgency is Urgency.ROUTINE:
            if self._in_flight:
                return float("inf")
            if self._ended:
                delay = max(delay, self._ended[-1] + limits.pace - now)
        return delay

    def _forget_old(self, now: float) -> None:
        expired = bisect.bisect_right(self._ended, now - self.limits.window)
        del self._ended[:expired]

    def _wake_in(self, delay: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if delay != float("inf"):
            self._timer = asyncio.ensure_future(self._wake_after(delay))

    async def _wake_after(self, delay: float) -> None:
        await self._clock.sleep(delay)
        self._timer = None
        self._dispatch()


class ChatBudgets(Generic[K]):
    """The write budgets of one platform's chats, each made on first use and kept while a reply
    uses it or any write of its last window still counts."""

    def __init__(self, clock: Clock = SYSTEM_CLOCK) -> None:
        self._clock = clock
        self._budgets: dict[K, WriteBudget] = {}

    def get(self, chat: K, limits: WriteLimits) -> WriteBudget:
        """The budget of `chat`, made with `limits` if it has none."""
        budget = self._budgets.get(chat)
        if budget is None:
            if len(self._budgets) > PRUNE_ABOVE:
                self._budgets = {key: kept for key, kept in self._budgets.items() if not kept.idle}
            budget = self._budgets[chat] = WriteBudget(limits, clock=self._clock)
        return budget
