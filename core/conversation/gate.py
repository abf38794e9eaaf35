"""What a reply passes before its model is called: the asker's rate, the budgets, a slot.

In that order, each at its own time. The rate (`core.fair_use.RateLimiter`) is taken when the
message arrives, so a burst is refused in the order it came. The budgets (`core.budgets`) are
checked when the reply's turn comes (its author's previous reply in the chat is charged by
then), and the reply is admitted on them until it is charged. Then it waits for one of the
process's model slots (`core.fair_use.ReplySlots`), telling its queue position to whoever shows
it (`Reply.queue_position`). A refused message is stored all the same; its reply is the refusal
line (`Reply.notice`), and no model is called. ADMIN_IDS pass the rate and the budgets freely,
but wait for a slot like everyone: the cap protects the provider's limits, not a budget.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from core.budgets import Admission, BudgetPolicy, OverBudget, WallClock
from core.config import CoreSettings
from core.fair_use import RateLimiter, ReplySlots, rate_limited_line
from core.usage import utc_now
from storage import Store

from .chat import Author
from .reply import Reply, ReplyState


@dataclass(eq=False)
class Passage:
    """A reply let through: it holds a model slot (if there is a cap) and its admission to the
    budgets, until `leave` once it is charged."""

    gate: Gate
    admission: Admission
    slot: bool

    async def leave(self) -> None:
        """Give the slot back at once, then stop counting the reply as in flight on its
        budgets (it is charged by now)."""
        if self.slot:
            self.slot = False
            assert self.gate.slots is not None
            self.gate.slots.release()
        await self.admission.release()


class Gate:
    """The rate limit, the budgets and the concurrency cap, as the conversation service uses them."""

    def __init__(
        self,
        budgets: BudgetPolicy,
        *,
        rate: RateLimiter | None = None,
        per_minute: int | None = None,
        slots: ReplySlots | None = None,
    ) -> None:
        self.budgets = budgets
        self.rate = rate
        self._per_minute = per_minute
        self.slots = slots

    @classmethod
    def from_settings(
        cls,
        store: Store,
        settings: CoreSettings,
        *,
        clock: WallClock = utc_now,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> Gate:
        """USER_MESSAGES_PER_MINUTE, MAX_CONCURRENT_REPLIES and the budget settings."""
        per_minute = settings.user_messages_per_minute
        cap = settings.max_concurrent_replies
        return cls(
            BudgetPolicy(store, settings, clock),
            rate=None if per_minute is None else RateLimiter(per_minute, monotonic),
            per_minute=per_minute,
            slots=None if cap is None else ReplySlots(cap),
        )

    def arrived(self, author: Author, platform: str) -> str | None:
        """A message of `author` arrived: the line refusing it if they are over the rate."""
        if self.rate is None or author.admin or self._per_minute is None:
            return None
        wait = self.rate.take((platform, author.id))
        return None if wait is None else rate_limited_line(self._per_minute, wait)

    async def through(self, reply: Reply, refusal: str | None) -> Passage | None:
        """Let `reply` through to its model call, waiting as needed; None when it must not call
        it: then it has ended, with `refusal` (from `arrived`) or the spent budget's line as its
        text, or stopped (a stop asked while it waited)."""
        if refusal is None:
            verdict = await reply.unless_stopped(self.budgets.admit(reply.author, reply.chat))
            if verdict is None:
                reply.begin()  # a stop was asked: it ends STOPPED
                return None
            if isinstance(verdict, OverBudget):
                refusal = verdict.line
        if refusal is not None:
            _refuse(reply, refusal)
            return None
        assert isinstance(verdict, Admission)
        passage = Passage(self, verdict, slot=False)
        if self.slots is not None:
            got = await reply.unless_stopped(self._slot(reply, self.slots))
            reply.move_in_queue(None)
            if got is None:  # stopped while it waited
                await passage.leave()
                reply.begin()  # ends STOPPED
                return None
            passage.slot = True
        return passage

    @staticmethod
    async def _slot(reply: Reply, slots: ReplySlots) -> bool:
        await slots.acquire(reply.move_in_queue)
        return True


def _refuse(reply: Reply, line: str) -> None:
    """End `reply` without calling the model: the line is its whole answer, and nothing is
    stored for it (its user message is)."""
    if reply.begin():
        reply.notice = line
        reply.end(ReplyState.DONE)
