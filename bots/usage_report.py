"""`parley usage`: the usage ledger summed per user, chat, model or day, as a table, CSV or JSON.

`--since` takes a span back from now ("7d", "12h", "2w") or a UTC date ("2026-11-01"); the
sums are the store's (`Store.usage_report`), read from a database that must exist.
"""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import UTC, date, datetime, timedelta

from bots.config import Settings
from core.usage import MICROS_PER_DOLLAR, UsageGrouping, UsageRow
from storage import open_store

_SPAN = re.compile(r"(\d+)([hdw])")
_UNITS = {"h": "hours", "d": "days", "w": "weeks"}
#: The columns of every format, in order.
COLUMNS = ("key", "label", "calls", "prompt_tokens", "completion_tokens", "cost_usd", "estimated")


def parse_since(text: str, now: datetime) -> datetime:
    """The start `--since` names: "7d" (days), "12h", "2w" back from `now`, or a UTC date.
    Raises ValueError with the line for the user."""
    span = _SPAN.fullmatch(text.strip())
    if span:
        try:
            return now - timedelta(**{_UNITS[span.group(2)]: int(span.group(1))})
        except OverflowError:  # further back than the calendar goes: all of it
            return datetime.min.replace(tzinfo=UTC)
    try:
        day = date.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"--since {text!r}: give a span (7d, 12h, 2w) or a date (2026-11-01)"
        ) from None
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


async def usage_rows(
    settings: Settings, since: datetime | None, by: UsageGrouping, limit: int | None = None
) -> list[UsageRow]:
    """The report's rows, the `limit` most costly (None: all); StorageError when the database
    is missing or unusable."""
    store = await open_store(settings.database_url, must_exist=True)
    try:
        return await store.usage_report(since, by, limit=limit)
    finally:
        await store.close()


def dollars(micros: int) -> str:
    return f"{micros / MICROS_PER_DOLLAR:.4f}"


def _values(row: UsageRow) -> list[object]:
    return [
        row.key,
        row.label,
        row.calls,
        row.prompt_tokens,
        row.completion_tokens,
        dollars(row.cost_micros),
        round(row.estimated_share, 3),
    ]


def as_csv(rows: list[UsageRow]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows(_values(row) for row in rows)
    return out.getvalue()


def as_json(rows: list[UsageRow]) -> str:
    return json.dumps(
        [dict(zip(COLUMNS, _values(row), strict=True)) for row in rows], ensure_ascii=False
    )
