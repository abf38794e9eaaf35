"""Budgets: how much a user, a chat and the guests may spend per UTC day and month.

The limits come from the settings (`USER_DAILY_TOKENS`, ..., `GUEST_DAILY_TOKENS`; unset: no
limit) unless an admin set one for a user or chat with /budget (`Store.budget_overrides`,
read once and kept in memory). Money is integer micro-dollars. Spending is the usage ledger's
running totals (`Store.usage_totals`), charged once a reply's outcome is known; so a check is
one indexed read.

Checked before the model is called, charged after: a reply in flight is never cut by its own
charge. Replies racing each other would all pass a check made before any of them is charged;
so a reply that passes is *admitted*, and counts as in flight on its budgets until it is charged
(`Admission.release`).
- **A user's budget admits one reply at a time** (their replies in other chats wait for its
  charge): a person can cross their own limit by one reply at most, however big it is. (Their
  replies in one chat take turns anyway; across chats, this costs only a person racing themself.)
- **A chat's or the guests' budget, shared by several people, is not serialised** (that would
  make a group answer one person at a time): a reply passes at once if the budget's spending
  plus one reply's worth (the largest seen on it) for every admitted one and for itself fits
  under the limit; otherwise, while others are in flight, it waits for their charges and looks
  again. So a shared budget is crossed by the replies in flight when it runs out, and by about
  one reply's worth if replies are no bigger than the largest seen; found in review: eight
  replies four times bigger than any before ran a user's budget to 3,300 of 1,000 tokens under
  that rule alone, which is why a user's own budget takes turns.
A budget already spent refuses at once.

ADMIN_IDS (`Author.admin`) are exempt from every budget. A guest (`Author.guest`) spends from
its own user budgets and from the guests' daily pool, which is one for the whole bot
(`storage.ALL_GUESTS`): GUEST_DAILY_TOKENS is then the most strangers can spend in a day, on
both platforms together, which is what an operator who opens the bot needs to know.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Literal

from core.config import CoreSettings
from core.usage import MICROS_PER_DOLLAR, Totals, UsageKey, UsagePeriod, UsageScope, utc_now
from storage import BudgetOverride, StorageError, Store

if TYPE_CHECKING:  # the conversation service imports this module: only a type import goes back
    from core.conversation.chat import Author, ChatRef

log = logging.getLogger(__name__)

#: What budgets read "now" from: an aware UTC time (tests inject theirs).
WallClock = Callable[[], datetime]
OverridableScope = Literal["user", "chat"]


@dataclass(frozen=True, slots=True)
class Limit:
    """One kind of budget: its name in /budget, its period, and whether it counts money."""

    name: str
    period: UsagePeriod
    money: bool

    @property
    def adjective(self) -> str:
        return "daily" if self.period == "day" else "monthly"

    def spent(self, totals: Totals) -> int:
        return totals.cost_micros if self.money else totals.tokens

    def amount(self, value: int) -> str:
        """`value` as a person reads it: "20,000 tokens", "$0.50"."""
        if self.money:
            return f"${value / MICROS_PER_DOLLAR:,.2f}"
        return f"{value:,} tokens"


DAILY_TOKENS = Limit("daily_tokens", "day", money=False)
MONTHLY_TOKENS = Limit("monthly_tokens", "month", money=False)
DAILY_COST = Limit("daily_cost", "day", money=True)
MONTHLY_COST = Limit("monthly_cost", "month", money=True)
#: Every budget /budget can set, by name.
LIMITS: Mapping[str, Limit] = {
    limit.name: limit for limit in (DAILY_TOKENS, MONTHLY_TOKENS, DAILY_COST, MONTHLY_COST)
}


def _micros(dollars: float | None) -> int | None:
    """Dollars as micro-dollars; a limit above 0 never rounds down to 0 (which would refuse
    everyone: found in review, USER_DAILY_COST=0.0000001)."""
    return None if dollars is None else max(1, round(dollars * MICROS_PER_DOLLAR))


def setting_limits(settings: CoreSettings) -> dict[str, dict[str, int]]:
    """The operator's limits per scope ("user", "chat", "guests"), by limit name; unset ones
    are absent."""
    found = {
        "user": {
            DAILY_TOKENS.name: settings.user_daily_tokens,
            MONTHLY_TOKENS.name: settings.user_monthly_tokens,
            DAILY_COST.name: _micros(settings.user_daily_cost),
            MONTHLY_COST.name: _micros(settings.user_monthly_cost),
        },
        "chat": {
            DAILY_TOKENS.name: settings.chat_daily_tokens,
            MONTHLY_COST.name: _micros(settings.chat_monthly_cost),
        },
        "guests": {DAILY_TOKENS.name: settings.guest_daily_tokens},
    }
    return {
        scope: {name: value for name, value in limits.items() if value is not None}
        for scope, limits in found.items()
    }


def resets_at(now: datetime, period: UsagePeriod) -> datetime:
    """When the UTC day or month `now` falls in ends."""
    now = now.astimezone(UTC)
    if period == "day":
        return datetime(now.year, now.month, now.day, tzinfo=UTC) + timedelta(days=1)
    if now.month == 12:
        return datetime(now.year + 1, 1, 1, tzinfo=UTC)
    return datetime(now.year, now.month + 1, 1, tzinfo=UTC)


def _duration(delta: timedelta) -> str:
    """ "3 h 12 min", "12 days 3 h", "40 min": two units are enough to plan by."""
    minutes = max(1, int(delta.total_seconds() + 59) // 60)
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    if days:
        return f"{days} day{'s' if days != 1 else ''} {hours} h"
    return f"{hours} h {minutes} min" if hours else f"{minutes} min"


def _when(reset: datetime, now: datetime) -> str:
    if reset - now <= timedelta(days=1):
        return f"at 00:00 UTC (in {_duration(reset - now)})"
    return f"on {reset:%-d %B} at 00:00 UTC (in {_duration(reset - now)})"


@dataclass(frozen=True, slots=True)
class OverBudget:
    """A budget that is spent: the line for the user, and when it resets."""

    line: str
    resets_at: datetime


def over_budget_line(scope: str, limit: Limit, value: int, reset: datetime, now: datetime) -> str:
    """The polite line naming the budget and when it resets."""
    amount = f"{limit.adjective} {limit.amount(value)}"
    who = {
        "user": f"You have used your {amount}",
        "chat": f"This chat has used its {amount}",
        "guests": f"Guests of this bot have used their shared {amount}",
    }[scope]
    return f"{who}; it resets {_when(reset, now)}. I kept your message but will not answer it."


@dataclass(frozen=True, slots=True)
class _Budget:
    """One limit in force on one running total."""

    scope: UsageScope
    key: UsageKey
    limit: Limit
    value: int


@dataclass(eq=False)
class Admission:
    """A reply let through its budgets, in flight on them until `release` (once it is charged)."""

    policy: BudgetPolicy
    keys: tuple[UsageKey, ...]
    #: The totals of `keys` when it was admitted, and how many charges each had seen by then.
    before: dict[UsageKey, Totals] = field(default_factory=dict)
    charges_before: dict[UsageKey, int] = field(default_factory=dict)
    released: bool = False

    async def release(self) -> None:
        """The reply is charged (or never called the model): it no longer counts as in flight,
        and what it spent teaches the policy how big one reply is."""
        if not self.released:
            self.released = True
            await self.policy._release(self)


class BudgetPolicy:
    """The limits in force (settings, then admins' overrides) and the checks against them."""

    def __init__(self, store: Store, settings: CoreSettings, clock: WallClock = utc_now) -> None:
        self._store = store
        self._clock = clock
        self._settings = setting_limits(settings)
        self._overrides: dict[tuple[OverridableScope, str], dict[str, int]] | None = None
        self._in_flight: dict[UsageKey, int] = {}
        #: Per running total: the largest (tokens, cost) one reply has been seen to spend.
        self._largest: dict[UsageKey, Totals] = {}
        #: Per running total: how many admitted replies have been charged on it.
        self._charges: dict[UsageKey, int] = {}
        #: Set, and replaced, each time a reply is charged: waiting replies look again.
        self._charged = asyncio.Event()

    @property
    def clock(self) -> WallClock:
        return self._clock

    # The limits.

    async def _loaded(self) -> dict[tuple[OverridableScope, str], dict[str, int]]:
        if self._overrides is None:
            overrides: dict[tuple[OverridableScope, str], dict[str, int]] = {}
            for row in await self._store.budget_overrides():
                overrides.setdefault((row.scope, row.key), {})[row.name] = row.value
            self._overrides = overrides
        return self._overrides

    async def limits(self, scope: UsageScope, key: str) -> dict[str, tuple[int, bool]]:
        """The limits in force on one user's, chat's or the guests' spending: name -> (value,
        whether an admin set it)."""
        own = {} if scope == "guests" else (await self._loaded()).get((scope, key), {})
        found = {name: (value, False) for name, value in self._settings[scope].items()}
        found.update({name: (value, True) for name, value in own.items()})
        return found

    async def overrides(self) -> list[BudgetOverride]:
        loaded = await self._loaded()
        return [
            BudgetOverride(scope, key, name, value)
            for (scope, key), limits in loaded.items()
            for name, value in limits.items()
        ]

    async def set_override(
        self, scope: OverridableScope, key: str, name: str, value: int | None
    ) -> None:
        """Set (or with None, remove) an admin's limit for one user or chat."""
        if name not in LIMITS:
            raise ValueError(f"unknown budget {name!r}")
        await self._store.set_budget_override(scope, key, name, value)
        own = (await self._loaded()).setdefault((scope, key), {})
        if value is None:
            own.pop(name, None)
        else:
            own[name] = value

    async def _budgets(self, author: Author, chat: ChatRef) -> list[_Budget]:
        wanted: list[tuple[UsageScope, str]] = [
            ("user", UsageKey.user(chat.platform, author.id, "day").key),
            ("chat", UsageKey.chat(chat, "day").key),
        ]
        if author.guest:
            wanted.append(("guests", UsageKey.guests("day").key))
        budgets = []
        for scope, key in wanted:
            for name, (value, _) in (await self.limits(scope, key)).items():
                limit = LIMITS[name]
                total = UsageKey(scope, key, limit.period)
                budgets.append(_Budget(scope, total, limit, value))
        return budgets

    # The checks.

    async def check(self, author: Author, chat: ChatRef) -> OverBudget | None:
        """The budget `author` has spent in `chat`, if any (admitted replies not counted):
        what /usage and a quick look need; replies go through `admit`."""
        if author.admin:
            return None
        budgets = await self._budgets(author, chat)
        if not budgets:
            return None
        now = self._clock()
        totals = await self._store.usage_totals(list({b.key for b in budgets}), now)
        return self._spent(budgets, totals, now)

    async def admit(self, author: Author, chat: ChatRef) -> OverBudget | Admission:
        """Let a reply through its budgets, or say which is spent. May wait for replies in
        flight on a budget near its limit to be charged (see the module's docstring)."""
        if author.admin:
            return Admission(self, ())
        budgets = await self._budgets(author, chat)
        if not budgets:
            return Admission(self, ())
        keys = tuple({b.key for b in budgets})
        while True:
            charged = self._charged
            now = self._clock()
            totals = await self._store.usage_totals(list(keys), now)
            if (over := self._spent(budgets, totals, now)) is not None:
                return over
            if all(self._fits(budget, totals[budget.key]) for budget in budgets):
                for key in keys:
                    self._in_flight[key] = self._in_flight.get(key, 0) + 1
                return Admission(
                    self,
                    keys,
                    before={key: totals[key] for key in keys},
                    charges_before={key: self._charges.get(key, 0) for key in keys},
                )
            await charged.wait()

    def _spent(
        self, budgets: Iterable[_Budget], totals: Mapping[UsageKey, Totals], now: datetime
    ) -> OverBudget | None:
        """The spent budget that resets last (the user can go on only then), if any."""
        spent = [b for b in budgets if b.limit.spent(totals[b.key]) >= b.value]
        if not spent:
            return None
        last = max(spent, key=lambda b: resets_at(now, b.limit.period))
        reset = resets_at(now, last.limit.period)
        return OverBudget(over_budget_line(last.scope, last.limit, last.value, reset, now), reset)

    def _fits(self, budget: _Budget, totals: Totals) -> bool:
        """Whether one more reply fits beside those in flight (always, with none in flight;
        never beside another on a user's own budget: see the module's docstring)."""
        in_flight = self._in_flight.get(budget.key, 0)
        if not in_flight:
            return True
        if budget.scope == "user":
            return False
        one = budget.limit.spent(self._largest.get(budget.key, Totals()))
        if not one:  # no idea yet how big a reply is: wait for one to be charged
            return False
        return budget.limit.spent(totals) + (in_flight + 1) * one <= budget.value

    async def _release(self, admission: Admission) -> None:
        if not admission.keys:
            return
        for key in admission.keys:
            self._in_flight[key] -= 1
            if not self._in_flight[key]:
                del self._in_flight[key]
            self._charges[key] = self._charges.get(key, 0) + 1
        try:
            after = await self._store.usage_totals(list(admission.keys), self._clock())
        except StorageError as exc:  # only the lesson is lost; the next charge teaches it
            log.warning("Could not read what a reply spent: %s", exc)
            return
        finally:
            self._charged.set()
            self._charged = asyncio.Event()
        for key in admission.keys:
            before = admission.before[key]
            # Charges others made meanwhile are in the difference too: share it among them.
            replies = self._charges[key] - admission.charges_before[key]
            one = Totals(
                max(0, after[key].tokens - before.tokens) // replies,
                max(0, after[key].cost_micros - before.cost_micros) // replies,
            )
            seen = self._largest.get(key, Totals())
            self._largest[key] = Totals(
                max(seen.tokens, one.tokens), max(seen.cost_micros, one.cost_micros)
            )
