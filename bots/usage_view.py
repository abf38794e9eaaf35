"""What `/usage` and `/stats` say, the same on every platform: figures read from the ledger,
written as people read money and counts.

`/usage` is a person's own use today and this month (tokens and cost), what is left of each
budget that applies to them, and the chat's use; `/stats` is the top users and models and the
total for the day, the week and the month, of one chat (a group's admins) or of the whole bot
(`ADMIN_IDS`). The numbers come from `Store.usage_totals` (the running totals a budget check
reads, so what `/usage` says is left is what the check sees) and `Store.usage_report` (the
ledger, which also says which figures were estimated). Money is integer micro-dollars until it
is written here, as "$0.42". Days, weeks and months are UTC's: a week starts on Monday.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

from core.budgets import DAILY_COST, DAILY_TOKENS, MONTHLY_COST, MONTHLY_TOKENS, BudgetPolicy
from core.conversation import Author, ChatRef
from core.usage import (
    MICROS_PER_DOLLAR,
    Totals,
    UsageKey,
    UsagePeriod,
    UsageRow,
    UsageScope,
    period_start,
)
from storage import Store

#: How many users and models `/stats` names per period.
TOP = 5
#: Below a cent a cost shows more digits ("$0.0042"), so a cheap model's use is not "$0.00".
CENT_MICROS = MICROS_PER_DOLLAR // 100

StatsPeriod = Literal["day", "week", "month"]
_PERIODS: tuple[UsagePeriod, UsagePeriod] = ("day", "month")
_ADJECTIVES: dict[UsagePeriod, str] = {"day": "daily", "month": "monthly"}
_PERIOD_NAMES: dict[StatsPeriod, str] = {
    "day": "Today",
    "week": "This week (since Monday)",
    "month": "This month",
}
ESTIMATED_NOTE = "* estimated in part: the provider did not report every count."
RESETS_NOTE = "Days and months are UTC: the day's use resets at 00:00 UTC, the month's on the 1st."


def money(micros: int) -> str:
    """ "$0.42"; under a cent to four places ("$0.0042"), so small use does not read as none."""
    if 0 < micros < CENT_MICROS:
        return f"${micros / MICROS_PER_DOLLAR:.4f}"
    return f"${micros / MICROS_PER_DOLLAR:,.2f}"


def tokens(count: int) -> str:
    return f"{count:,} tokens"


@dataclass(frozen=True, slots=True)
class Use:
    """Tokens and cost over a period, and whether any of it was estimated."""

    tokens: int = 0
    cost_micros: int = 0
    estimated: bool = False

    def __str__(self) -> str:
        mark = "*" if self.estimated else ""
        return f"{tokens(self.tokens)}{mark}, {money(self.cost_micros)}"


@dataclass(frozen=True, slots=True)
class Limits:
    """The budgets in force over one scope, each None when there is none. Cost in micros."""

    daily_tokens: int | None = None
    monthly_tokens: int | None = None
    daily_cost_micros: int | None = None
    monthly_cost_micros: int | None = None

    def of(self, period: UsagePeriod) -> tuple[int | None, int | None]:
        """(tokens, cost) limits for the day or the month."""
        if period == "day":
            return self.daily_tokens, self.daily_cost_micros
        return self.monthly_tokens, self.monthly_cost_micros


@dataclass(frozen=True, slots=True)
class UsageLimits:
    """What applies to one person in one chat: their own budgets, the chat's, and the guests'
    shared one when they are a guest. `exempt`: ADMIN_IDS, whom no budget stops."""

    user: Limits = field(default_factory=Limits)
    chat: Limits = field(default_factory=Limits)
    guests: Limits | None = None
    exempt: bool = False


async def limits_in_force(policy: BudgetPolicy, chat: ChatRef, author: Author) -> UsageLimits:
    """What applies to `author` in `chat`: the operator's budgets with the admins' overrides
    (`BudgetPolicy.limits`), the guests' pool for a guest; none for ADMIN_IDS."""

    async def scope(kind: UsageScope, key: str) -> Limits:
        found = {name: value for name, (value, _) in (await policy.limits(kind, key)).items()}
        return Limits(
            daily_tokens=found.get(DAILY_TOKENS.name),
            monthly_tokens=found.get(MONTHLY_TOKENS.name),
            daily_cost_micros=found.get(DAILY_COST.name),
            monthly_cost_micros=found.get(MONTHLY_COST.name),
        )

    return UsageLimits(
        user=await scope("user", UsageKey.user(chat.platform, author.id, "day").key),
        chat=await scope("chat", UsageKey.chat(chat, "day").key),
        guests=await scope("guests", UsageKey.guests("day").key) if author.guest else None,
        exempt=author.admin,
    )


def _estimated_periods(rows: list[UsageRow], today: str) -> tuple[bool, bool]:
    """From a month's rows by day: (today estimated in part, the month estimated in part)."""
    day = any(row.key == today and row.estimated_share > 0 for row in rows)
    return day, any(row.estimated_share > 0 for row in rows)


async def usage_text(
    store: Store,
    chat: ChatRef,
    user_id: str,
    limits: UsageLimits,
    now: datetime,
    *,
    in_private: bool,
) -> str:
    """The `/usage` answer for `user_id` in `chat` at `now`. `in_private`: the chat is the
    user's private one, whose use is theirs, so it is not repeated as the chat's."""
    platform = chat.platform
    user_keys = {p: UsageKey.user(platform, user_id, p) for p in _PERIODS}
    chat_keys = {p: UsageKey.chat(chat, p) for p in _PERIODS}
    guest_keys = {p: UsageKey.guests(p) for p in _PERIODS}
    wanted = [*user_keys.values(), *chat_keys.values()]
    if limits.guests is not None:
        wanted += guest_keys.values()
    totals = await store.usage_totals(wanted, now)
    month_start = _start_of(now, "month")
    today = period_start(now, "day")
    mine = await store.usage_report(month_start, "day", platform=platform, user_id=user_id)
    here = await store.usage_report(month_start, "day", platform=platform, chat_id=chat.chat_id)
    marks = {"user": _estimated_periods(mine, today), "chat": _estimated_periods(here, today)}

    def use(scope: Literal["user", "chat"], period: UsagePeriod) -> Use:
        key = (user_keys if scope == "user" else chat_keys)[period]
        day_mark, month_mark = marks[scope]
        total = totals[key]
        return Use(total.tokens, total.cost_micros, day_mark if period == "day" else month_mark)

    lines = ["Your use", f"Today: {use('user', 'day')}", f"This month: {use('user', 'month')}"]
    lines += _budget_lines(limits, totals, user_keys, chat_keys, guest_keys)
    if not in_private:
        lines += ["", "This chat"]
        lines += [f"Today: {use('chat', 'day')}", f"This month: {use('chat', 'month')}"]
    if any(day or month for day, month in marks.values()):
        lines += ["", ESTIMATED_NOTE]
    lines += ["", RESETS_NOTE]
    return "\n".join(lines)


def _budget_lines(
    limits: UsageLimits,
    totals: dict[UsageKey, Totals],
    user_keys: dict[UsagePeriod, UsageKey],
    chat_keys: dict[UsagePeriod, UsageKey],
    guest_keys: dict[UsagePeriod, UsageKey],
) -> list[str]:
    """One line per budget that applies: what is left of it."""
    if limits.exempt:
        return ["No budget applies to you (ADMIN_IDS)."]
    scopes: list[tuple[str, Limits, dict[UsagePeriod, UsageKey]]] = [
        ("your", limits.user, user_keys),
        ("this chat's", limits.chat, chat_keys),
    ]
    if limits.guests is not None:
        scopes.append(("the guests' shared", limits.guests, guest_keys))
    lines: list[str] = []
    for whose, scope_limits, keys in scopes:
        for period, adjective in _ADJECTIVES.items():
            token_limit, cost_limit = scope_limits.of(period)
            total = totals[keys[period]]
            if token_limit is not None:
                left = max(token_limit - total.tokens, 0)
                lines.append(f"Left of {whose} {adjective} {tokens(token_limit)}: {left:,}")
            if cost_limit is not None:
                left = max(cost_limit - total.cost_micros, 0)
                lines.append(f"Left of {whose} {adjective} {money(cost_limit)}: {money(left)}")
    return lines or ["No budget applies to you."]


def _start_of(now: datetime, period: StatsPeriod | UsagePeriod) -> datetime:
    """The UTC start of the day, the week (Monday) or the month `now` is in."""
    day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "week":
        return day - timedelta(days=day.weekday())
    if period == "month":
        return day.replace(day=1)
    return day


def _row_line(row: UsageRow) -> str:
    mark = "*" if row.estimated_share > 0 else ""
    unpriced = f" (+{row.unpriced} unpriced)" if row.unpriced else ""
    return f"  {row.label}: {tokens(row.tokens)}{mark}, {money(row.cost_micros)}{unpriced}"


async def stats_text(
    store: Store,
    now: datetime,
    *,
    chat: ChatRef | None,
    top: int = TOP,
) -> str:
    """The `/stats` answer at `now`: of `chat` (all its threads), or of the whole bot (None)."""
    platform = None if chat is None else chat.platform
    chat_id = None if chat is None else chat.chat_id
    lines = ["Usage of this chat" if chat is not None else "Usage of the whole bot"]
    estimated = False
    for period, name in _PERIOD_NAMES.items():
        since = _start_of(now, period)
        models = await store.usage_report(since, "model", platform=platform, chat_id=chat_id)
        users = await store.usage_report(
            since, "user", limit=top, platform=platform, chat_id=chat_id
        )
        total = Use(
            sum(row.tokens for row in models),
            sum(row.cost_micros for row in models),
            any(row.estimated_share > 0 for row in models),
        )
        calls = sum(row.calls for row in models)
        estimated = estimated or total.estimated
        lines += ["", f"{name}: {total} in {calls:,} calls"]
        if not models:
            continue
        lines.append("Top users:")
        lines += [_row_line(row) for row in users]
        lines.append("Models:")
        lines += [_row_line(row) for row in models[:top]]
    if estimated:
        lines += ["", ESTIMATED_NOTE]
    return "\n".join(lines)
