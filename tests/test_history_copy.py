"""`parley history copy`: a whole history moved SQLite -> PostgreSQL -> SQLite comes back the
same, row for row, ids and references kept; a target that is not empty is refused."""

from __future__ import annotations

import contextlib
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bots.errors import HistoryCopyError
from bots.history_copy import TABLE_ORDER, copy_history
from storage import (
    HistorySummary,
    MessageStatus,
    ReplyOutcome,
    UsageKind,
    UsageRecord,
    open_store,
)
from tests.cli_support import run_parley
from tests.test_conversation_fakes import chat
from tests.test_storage_images import GREEN, RED


async def fill(url: str) -> None:
    """A history with one of everything: two chats (one in a topic), a reset, images shared
    between messages, reasoning, usage, a persona, a budget, a summary and a reply chain."""
    store = await open_store(url)
    try:
        room, topic = chat("-100"), chat("-100", thread_id="7")
        await store.set_chat_persona(room, "pirate")
        await store.set_chat_model(topic, "gpt-x")
        first = await store.add_user_message(
            room,
            author_id="1",
            author_name="Alice",
            text="look",
            platform_message_id="10",
            chat_title="Room",
            images=[RED, GREEN],
        )
        answer = await store.start_reply(first, "m")
        await store.finish_reply(
            answer,
            ReplyOutcome(
                MessageStatus.COMPLETE,
                "red and green",
                provider="P",
                prompt_tokens=10,
                completion_tokens=3,
                total_tokens=13,
                reasoning="two squares, so...",
            ),
        )
        await store.set_platform_message_ids(answer, ["11", "12"])
        branch = await store.add_user_message(
            room, author_id="2", author_name="Bob", text="and?", parent=answer, images=[RED]
        )
        cut = await store.start_reply(branch, "m")
        await store.save_partial_reply(cut, "half")
        await store.interrupt_streaming()
        conversation = await store.current_conversation(room)
        assert conversation is not None
        await store.save_history_summary(conversation, HistorySummary("they talked", first, "s"))
        await store.new_conversation(room)
        await store.add_user_message(topic, author_id="1", author_name="Alice", text="in a topic")
        await store.record_usage(
            UsageRecord(
                kind=UsageKind.CHAT,
                at=datetime(2026, 11, 30, 12, tzinfo=UTC),
                platform="telegram",
                chat_id="-100",
                thread_id="",
                user_id="1",
                user_name="Alice",
                model="m",
                prompt_tokens=10,
                completion_tokens=3,
                cost_micros=42,
                guest=True,
                message_id=answer,
                audio_seconds=1.5,
            )
        )
        await store.set_budget_override("user", "telegram:1", "daily_tokens", 5000)
    finally:
        await store.close()


def dump(path: Path) -> dict[str, list[tuple[object, ...]]]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return {
            table: sorted(db.execute(f"SELECT * FROM {table}").fetchall(), key=repr)
            for table in TABLE_ORDER
        }


async def test_sqlite_to_postgresql_and_back_gives_the_same_rows(
    tmp_path: Path, postgres_url: str
) -> None:
    original = tmp_path / "original.db"
    await fill(f"sqlite:///{original}")
    there = await copy_history(f"sqlite:///{original}", postgres_url)
    back = tmp_path / "back.db"
    again = await copy_history(postgres_url, f"sqlite:///{back}")

    before, after = dump(original), dump(back)
    assert after == before
    assert all(before[table] for table in TABLE_ORDER)  # every table had rows to copy
    assert [t.digest for t in there.tables] == [t.digest for t in again.tables]
    assert {t.name: t.rows for t in there.tables} == {t: len(rows) for t, rows in before.items()}

    # The copy goes on where the source stopped: new rows get new ids, references hold.
    store = await open_store(postgres_url)
    try:
        newest = max(row[0] for row in before["messages"])
        message = await store.add_user_message(
            chat("-100"), author_id="1", author_name="A", text="x"
        )
        assert isinstance(newest, int) and message > newest
        [answer] = [row for row in before["messages"] if row[6] == "red and green"]
        assert await store.reply_reasoning(int(str(answer[0]))) == "two squares, so..."
        found = await store.find_message(chat("-100"), "12")
        assert found is not None and found.text == "red and green"
    finally:
        await store.close()


async def test_a_target_with_rows_is_refused_and_left_as_it_was(
    tmp_path: Path, postgres_url: str
) -> None:
    await fill(f"sqlite:///{tmp_path}/a.db")
    store = await open_store(postgres_url)
    await store.add_user_message(chat("9"), author_id="1", author_name="A", text="mine")
    await store.close()
    with pytest.raises(HistoryCopyError, match=r"is not empty \(table chats has rows\)"):
        await copy_history(f"sqlite:///{tmp_path}/a.db", postgres_url)
    store = await open_store(postgres_url)
    try:
        assert [c.chat_id for c in await store.list_chats()] == ["9"]
    finally:
        await store.close()


async def test_the_command_copies_and_says_what_it_checked(
    tmp_path: Path, postgres_url: str
) -> None:
    await fill(f"sqlite:///{tmp_path}/a.db")
    finished = await run_parley(
        "history",
        "copy",
        "--from",
        f"sqlite:///{tmp_path}/a.db",
        "--to",
        postgres_url,
        cwd=tmp_path,
    )
    assert finished.code == 0, finished.err
    assert "tables copied and checked row for row" in finished.out
    assert "messages" in finished.out
    again = await run_parley(
        "history",
        "copy",
        "--from",
        f"sqlite:///{tmp_path}/a.db",
        "--to",
        postgres_url,
        cwd=tmp_path,
    )
    assert again.code == 1
    assert "is not empty" in again.err


async def test_a_missing_source_is_not_created(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="does not exist"):
        await copy_history(f"sqlite:///{tmp_path}/none.db", f"sqlite:///{tmp_path}/b.db")
    assert not (tmp_path / "none.db").exists()
