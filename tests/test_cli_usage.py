"""`parley usage` on a real SQLite file, run as the operator runs it."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bots.usage_report import parse_since
from core.usage import UsageKind, UsageRecord
from storage import open_store
from tests.cli_support import run_parley

NOW = datetime.now(UTC)


async def ledger(tmp_path: Path) -> dict[str, str]:
    url = f"sqlite:///{tmp_path}/history.db"
    store = await open_store(url)
    for days_ago, user, model, cost in ((0, "1", "gpt-4o", 7_500), (10, "2", "gpt-4o-mini", 300)):
        await store.record_usage(
            UsageRecord(
                kind=UsageKind.CHAT,
                at=NOW - timedelta(days=days_ago),
                platform="telegram",
                chat_id="-100",
                thread_id="",
                user_id=user,
                user_name=f"User {user}",
                model=model,
                prompt_tokens=1_000,
                completion_tokens=500,
                cost_micros=cost,
            )
        )
    await store.close()
    return {"DATABASE_URL": url}


async def test_usage_by_model_as_json_and_since(tmp_path: Path) -> None:
    env = await ledger(tmp_path)
    every = await run_parley("usage", "--by", "model", "--format", "json", env=env, cwd=tmp_path)
    assert every.code == 0, every.err
    rows = json.loads(every.out)
    assert [(r["key"], r["cost_usd"], r["calls"]) for r in rows] == [
        ("gpt-4o", "0.0075", 1),
        ("gpt-4o-mini", "0.0003", 1),
    ]
    recent = await run_parley("usage", "--since", "7d", "--format", "csv", env=env, cwd=tmp_path)
    lines = recent.out.splitlines()
    assert lines[0].startswith("key,label,calls") and len(lines) == 2
    assert "User 1" in lines[1]


async def test_usage_as_a_table_and_a_bad_since(tmp_path: Path) -> None:
    env = await ledger(tmp_path)
    table = await run_parley("usage", env=env, cwd=tmp_path)
    assert table.code == 0 and "User 1" in table.out and "0.0075" in table.out
    bad = await run_parley("usage", "--since", "last tuesday", env=env, cwd=tmp_path)
    assert bad.code == 2 and "give a span (7d, 12h, 2w) or a date" in bad.err


async def test_a_table_shows_the_most_costly_and_says_what_it_left_out(tmp_path: Path) -> None:
    env = await ledger(tmp_path)
    top = await run_parley("usage", "--limit", "1", env=env, cwd=tmp_path)
    assert top.code == 0 and "User 1" in top.out and "User 2" not in top.out
    assert "Only the 1 most costly are shown: --limit 0 shows all of them." in top.out
    every = await run_parley("usage", "--limit", "0", env=env, cwd=tmp_path)
    assert "User 2" in every.out and "Only the" not in every.out
    csv_top = await run_parley("usage", "--format", "csv", "--limit", "1", env=env, cwd=tmp_path)
    assert len(csv_top.out.splitlines()) == 2  # the header and the costliest row
    negative = await run_parley("usage", "--limit", "-1", env=env, cwd=tmp_path)
    assert negative.code == 2 and "--limit must be 0 (all) or more." in negative.err


def test_a_span_longer_than_the_calendar_means_all_of_it() -> None:
    """`--since 999999d` reaches before year 1: everything, not an OverflowError's traceback."""
    now = datetime(2026, 12, 1, tzinfo=UTC)
    assert parse_since("999999d", now) == datetime.min.replace(tzinfo=UTC)
    assert parse_since("99999999999999999999w", now) == datetime.min.replace(tzinfo=UTC)
    assert parse_since("2d", now) == now - timedelta(days=2)
