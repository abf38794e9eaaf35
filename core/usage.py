"""What each model call used, as the usage ledger records it (`storage` keeps it).

The record types live in `storage.base` (the bottom layer, where the ledger is written) and are
named here for the core and the bots: `UsageRecord` (one call), `UsageKey` and `Totals` (a
user's, chat's or the guests' running total for the UTC day or month: what a budget check
reads), `UsageRow` (a line of a report). Money is integer micro-dollars throughout.

`charged_usage` is what a chat completion is charged, a reply's or a summary's alike.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from core.client import estimate_usage
from core.types import Usage
from storage import (
    ALL_GUESTS,
    Totals,
    UsageGrouping,
    UsageKey,
    UsageKind,
    UsagePeriod,
    UsageRecord,
    UsageRow,
    UsageScope,
    period_start,
)

log = logging.getLogger(__name__)

#: Micro-dollars in a dollar: money is kept in integers of these.
MICROS_PER_DOLLAR = 1_000_000
#: More tokens than any one call can use (the largest context windows are a few million): a
#: provider reporting more is reporting nonsense.
MAX_SANE_TOKENS = 10**9


def utc_now() -> datetime:
    """The default clock of whatever records or checks usage; tests inject their own."""
    return datetime.now(UTC)


def sane_tokens(value: Any, what: str) -> int | None:
    """A provider's token count if it is believable, else None (logged): the caller then uses
    its own estimate, marked estimated, so nonsense is neither a crash nor a free pass."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_SANE_TOKENS:
        return value
    log.warning("The provider reported %s = %r; using the estimate instead.", what, value)
    return None


def charged_usage(usage: Any, messages: list[dict[str, Any]], completion_chars: int) -> Usage:
    """The tokens a chat completion is charged: the provider's `usage` when both counts are
    believable, else the estimate from the `messages` sent and the `completion_chars` written
    (`core.client.estimate_usage`), marked estimated. The client's own estimate, passed on as
    `usage`, stays marked."""
    prompt = sane_tokens(getattr(usage, "prompt_tokens", None), "prompt_tokens")
    completion = sane_tokens(getattr(usage, "completion_tokens", None), "completion_tokens")
    if usage is None or prompt is None or completion is None:
        return estimate_usage(messages, completion_chars)
    return Usage(prompt, completion, estimated=bool(getattr(usage, "estimated", False)))


__all__ = [
    "ALL_GUESTS",
    "MAX_SANE_TOKENS",
    "MICROS_PER_DOLLAR",
    "Totals",
    "UsageGrouping",
    "UsageKey",
    "UsageKind",
    "UsagePeriod",
    "UsageRecord",
    "UsageRow",
    "UsageScope",
    "charged_usage",
    "period_start",
    "sane_tokens",
    "utc_now",
]
