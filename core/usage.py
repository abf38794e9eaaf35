"""What each model call used, as the usage ledger records it (`storage` keeps it).

The record types live in `storage.base` (the bottom layer, where the ledger is written) and are
named here for the core and the bots: `UsageRecord` (one call), `UsageKey` and `Totals` (a
user's, chat's or the guests' running total for the UTC day or month: what a budget check
reads), `UsageRow` (a line of a report). Money is integer micro-dollars throughout.
"""

from __future__ import annotations

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

#: Micro-dollars in a dollar: money is kept in integers of these.
MICROS_PER_DOLLAR = 1_000_000

__all__ = [
    "ALL_GUESTS",
    "MICROS_PER_DOLLAR",
    "Totals",
    "UsageGrouping",
    "UsageKey",
    "UsageKind",
    "UsagePeriod",
    "UsageRecord",
    "UsageRow",
    "UsageScope",
    "period_start",
]
