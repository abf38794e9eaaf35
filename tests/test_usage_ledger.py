"""The usage ledger on a real store (SQLite and PostgreSQL): a row per model call, running totals per user, chat
and guests for each UTC day and month (what a budget check reads), and the reports."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest

from storage import (
    ALL_GUESTS,
    AUDIO_MINUTE_TOKENS,
    DRAWING_TOKENS,
    StorageError,
    Store,
    Totals,
    UsageKey,
    UsageKind,
    UsageRecord,
)
from tests.test_conversation_fakes import chat

pytestmark = pytest.mark.all_backends

NOON = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
ROOM = chat("42")


def use(user: str = "1", *, at: datetime = NOON, **fields: object) -> UsageRecord:
    values: dict[str, object] = {
        "kind": UsageKind.CHAT,
        "at": at,
        "platform": ROOM.platform,
        "chat_id": ROOM.chat_id,
        "thread_id": ROOM.thread_id,
        "user_id": user,
        "user_name": f"User {user}",
        "model": "gpt-4o",
        "provider": "OpenAI",
        "prompt_tokens": 100,
        "completion_tokens": 50,
        "cost_micros": 1_000,
        **fields,
    }
    return UsageRecord(**values)  # type: ignore[arg-type]


def keys(user: str = "1") -> list[UsageKey]:
    return [
        UsageKey.user(ROOM.platform, user, "day"),
        UsageKey.user(ROOM.platform, user, "month"),
        UsageKey.chat(ROOM, "day"),
        UsageKey.guests("day"),
    ]


async def test_totals_add_up_per_user_chat_and_period(store: Store) -> None:
    await store.record_usage(use("1"))
    await store.record_usage(use("1", prompt_tokens=10, completion_tokens=5, cost_micros=None))
    await store.record_usage(use("2", cost_micros=7))
    totals = await store.usage_totals(keys("1"), NOON)
    day, month, room, guests = keys("1")
    assert totals[day] == totals[month] == Totals(165, 1_000)  # an unpriced call adds tokens only
    assert totals[room] == Totals(315, 1_007)
    assert totals[guests] == Totals()  # nobody was a guest


async def test_a_new_utc_day_and_month_start_from_zero(store: Store) -> None:
    last_minute = datetime(2026, 11, 30, 23, 59, 59, tzinfo=UTC)
    await store.record_usage(use(at=last_minute))
    day, month, *_ = keys()
    at_midnight = last_minute + timedelta(seconds=1)  # 1 December, 00:00 UTC
    assert (await store.usage_totals([day, month], last_minute))[day].tokens == 150
    after = await store.usage_totals([day, month], at_midnight)
    assert after[day] == Totals() and after[month] == Totals()  # a new month too
    # The day is UTC's, whatever zone the time is given in: 01:30 in UTC+3 is the day before.
    east = timezone(timedelta(hours=3))
    await store.record_usage(use(at=datetime(2026, 12, 2, 1, 30, tzinfo=east)))
    on_first = await store.usage_totals([day], datetime(2026, 12, 1, 23, 0, tzinfo=UTC))
    assert on_first[day].tokens == 150


async def test_guests_share_a_pool_across_platforms_and_per_platform(store: Store) -> None:
    await store.record_usage(use("7", guest=True))
    await store.record_usage(replace(use("8", guest=True), platform="discord"))
    totals = await store.usage_totals(
        [UsageKey.guests("day"), UsageKey.guests("day", "discord"), UsageKey.guests("month")], NOON
    )
    assert totals[UsageKey.guests("day", ALL_GUESTS)].tokens == 300
    assert totals[UsageKey.guests("day", "discord")].tokens == 150
    assert totals[UsageKey.guests("month")].cost_micros == 2_000


async def test_reports_group_sort_and_filter_by_time(store: Store) -> None:
    await store.record_usage(use("1", cost_micros=5_000))
    await store.record_usage(use("2", model="llama3", cost_micros=0, estimated=True))
    await store.record_usage(use("2", at=NOON - timedelta(days=10), cost_micros=9_999))
    by_user = await store.usage_report(None, "user")
    assert [(r.key, r.label, r.calls, r.cost_micros) for r in by_user] == [
        ("telegram:2", "User 2", 2, 9_999),
        ("telegram:1", "User 1", 1, 5_000),
    ]
    recent = await store.usage_report(NOON - timedelta(days=1), "model")
    assert [(r.label, r.tokens, r.estimated_share) for r in recent] == [
        ("gpt-4o", 150, 0.0),
        ("llama3", 150, 1.0),
    ]
    (day,) = await store.usage_report(NOON - timedelta(hours=1), "day")
    assert (day.key, day.calls) == ("2026-11-30", 2)
    assert len(await store.usage_report(None, "user", limit=1)) == 1


async def test_a_chat_report_names_the_chat_by_its_title(store: Store) -> None:
    await store.add_user_message(
        ROOM, author_id="1", author_name="A", text="hi", chat_title="Book club"
    )
    await store.record_usage(use("1"))
    (row,) = await store.usage_report(None, "chat")
    assert (row.key, row.label) == (f"telegram:{ROOM.chat_id}:{ROOM.thread_id}", "Book club")


async def test_nonsense_never_enters_the_ledger(store: Store) -> None:
    with pytest.raises(StorageError):
        await store.record_usage(use(prompt_tokens=-5))  # the CHECK refuses it
    with pytest.raises(ValueError, match="aware"):
        await store.record_usage(use(at=datetime(2026, 11, 30, 12, 0)))
    assert (await store.usage_totals(keys()[:1], NOON))[keys()[0]] == Totals()


async def test_reports_keep_one_platform_chat_or_user_when_asked(store: Store) -> None:
    await store.record_usage(use("1", cost_micros=5_000))
    await store.record_usage(use("2", thread_id="7"))  # another topic of the same chat
    await store.record_usage(use("1", chat_id="99"))
    await store.record_usage(replace(use("1"), platform="discord"))
    in_chat = await store.usage_report(None, "user", platform="telegram", chat_id=ROOM.chat_id)
    assert [(r.key, r.calls) for r in in_chat] == [("telegram:1", 1), ("telegram:2", 1)]
    mine = await store.usage_report(None, "chat", platform="telegram", user_id="1")
    assert sorted(r.key for r in mine) == sorted(
        [f"telegram:99:{ROOM.thread_id}", f"telegram:{ROOM.chat_id}:{ROOM.thread_id}"]
    )
    later = await store.usage_report(NOON + timedelta(hours=1), "user", user_id="1")
    assert later == []


async def test_drawings_and_audio_weigh_on_token_totals(store: Store) -> None:
    """So a budget set in tokens alone bounds /image and voice notes too (found in review)."""
    await store.record_usage(
        use(kind=UsageKind.IMAGE, prompt_tokens=0, completion_tokens=0, images_out=2)
    )
    await store.record_usage(
        use(kind=UsageKind.TRANSCRIPTION, prompt_tokens=0, completion_tokens=0, audio_seconds=90)
    )
    day = keys()[0]
    expected = 2 * DRAWING_TOKENS + 90 * AUDIO_MINUTE_TOKENS // 60
    assert (await store.usage_totals([day], NOON))[day].tokens == expected
    (row,) = await store.usage_report(None, "user")
    assert row.tokens == 0  # the report's columns stay the provider's tokens
