"""The SQLite store on real files: schema, turn order, context selection, awkward text."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from storage import (
    ChatKey,
    DatabaseURLError,
    MessageStatus,
    ReplyOutcome,
    Role,
    StorageError,
    Store,
    StoredMessage,
    open_store,
)
from storage.factory import sqlite_path
from storage.sqlite import migrations
from storage.sqlite import store as sqlite_store
from storage.sqlite.migrations import LATEST_VERSION, MIGRATIONS
from storage.sqlite.store import CONTEXT_QUERY
from tests.test_conversation_fakes import chat

pytestmark = pytest.mark.all_backends

EXPECTED_COLUMNS = {
    "chats": [
        "id",
        "platform",
        "chat_id",
        "thread_id",
        "model",
        "system_prompt",
        "created_at",
        "title",  # m003
        "image_generation",  # m006
        "persona",  # m012
    ],
    "conversations": ["id", "chat", "created_at"],
    "messages": [
        "id",
        "conversation",
        "reply_to",
        "role",
        "author_id",
        "author_name",
        "text",
        "status",
        "model",
        "provider",
        "first_token_ms",
        "total_ms",
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "error",
        "platform_ids",
        "created_at",
        "updated_at",
        "tokens_estimated",  # m002
        "delivery_pending",  # m004
        "image_count",  # m005
        "parent",  # m011
        "replica",  # m013
    ],
    # m005
    "images": ["id", "sha256", "media_type", "width", "height", "data", "created_at"],
    "message_images": ["message", "position", "image"],
    # m007
    "usage": [
        "id",
        "at",
        "kind",
        "platform",
        "chat_id",
        "thread_id",
        "user_id",
        "user_name",
        "model",
        "provider",
        "prompt_tokens",
        "completion_tokens",
        "estimated",
        "images_in",
        "audio_seconds",
        "images_out",
        "cost_micros",
        "guest",
        "message",
    ],
    "usage_totals": ["scope", "key", "period", "tokens", "cost_micros"],
    # m008
    "budget_overrides": ["scope", "key", "name", "value"],
    # m009
    "history_summaries": ["conversation", "through", "text", "model", "updated_at"],
    # m010
    "reply_reasoning": ["message", "text"],
    # m011
    "platform_messages": ["platform_id", "message"],
    # m013
    "replicas": ["id", "started_at", "expires_at"],
    "inbox": ["platform", "update_id", "chat_key", "body", "received_at", "message", "done"],
}
EXPECTED_INDEXES = {
    "chats_by_chat_id",
    "conversations_newest",
    "messages_by_turn",
    "messages_streaming",
    "messages_delivery_pending",
    "message_images_by_image",
    "usage_by_time",
    "platform_messages_by_message",  # m011
    "messages_unfinished",  # m013
    "inbox_pending",  # m013
    "inbox_handled",  # m013
}
#: Text that breaks naive SQL building, quoting or JSON, used in every text field.
NASTY = "'; DROP TABLE messages; -- \" \\ % _ ? :name $1 ` \x00 NULL ' OR '1'='1"


async def conversation(store: Store, key: ChatKey | None = None) -> list[StoredMessage]:
    """The messages of the chat's current conversation."""
    current = await store.current_conversation(key or chat())
    assert current is not None
    return await store.conversation_messages(current)


def schema(path: Path) -> tuple[dict[str, list[str]], set[str], int, str, int]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        tables = [
            name
            for (name,) in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
            )
        ]
        columns = {t: [row[1] for row in db.execute(f"PRAGMA table_info({t})")] for t in tables}
        indexes = {
            name
            for (name,) in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
            )
        }
        version = db.execute("PRAGMA user_version").fetchone()[0]
        journal = db.execute("PRAGMA journal_mode").fetchone()[0]
        foreign_keys = len(db.execute("PRAGMA foreign_key_list(messages)").fetchall())
    return columns, indexes, version, journal, foreign_keys


async def test_migrations_on_an_empty_database_give_the_expected_schema(tmp_path: Path) -> None:
    path = tmp_path / "new" / "folder" / "parley.db"  # folders are created on first run
    store = await open_store(f"sqlite:///{path}")
    await store.close()
    columns, indexes, version, journal, foreign_keys = schema(path)
    assert columns == EXPECTED_COLUMNS
    assert indexes == EXPECTED_INDEXES
    assert version == LATEST_VERSION == len(MIGRATIONS)
    assert journal == "wal"
    assert foreign_keys == 3  # conversation, reply_to and parent (m011)

    again = await open_store(f"sqlite:///{path}")  # a second start migrates nothing
    await again.close()
    assert schema(path) == (columns, indexes, version, journal, foreign_keys)


def test_migrations_are_numbered_in_order() -> None:
    for number, step in enumerate(MIGRATIONS, start=1):
        assert step.__name__.startswith(f"m{number:03d}_")


@pytest.mark.sqlite_only
async def test_context_load_uses_the_turn_index(store: Store, tmp_path: Path) -> None:
    with contextlib.closing(sqlite3.connect(tmp_path / "history.db")) as db:
        plan = db.execute(f"EXPLAIN QUERY PLAN {CONTEXT_QUERY}", (5, 5, 5, 50)).fetchall()
    details = [row[-1] for row in plan]
    assert "SEARCH messages USING INDEX messages_by_turn (conversation=? AND <expr><?)" in details
    assert "SEARCH messages USING INTEGER PRIMARY KEY (rowid=?)" in details  # its conversation
    assert not any("SCAN" in step or "TEMP B-TREE" in step for step in details), details


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///data/parley.db", Path("data/parley.db")),
        ("sqlite:////var/lib/parley/parley.db", Path("/var/lib/parley/parley.db")),
        ("sqlite:///with%20space.db", Path("with space.db")),
    ],
)
def test_sqlite_urls(url: str, expected: Path) -> None:
    assert sqlite_path(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "mysql://user@host/parley",
        "postgresql://user@host",  # no database
        "postgres://user:secret@host:port/parley",
        "sqlite://host/parley.db",
        "sqlite:///",
        "sqlite:///:memory:",
        "data/parley.db",
        "sqlite:///x.db?mode=ro",
    ],
)
async def test_unsupported_urls_are_refused_with_the_accepted_forms(url: str) -> None:
    with pytest.raises(DatabaseURLError, match=r"sqlite:///relative/path\.db") as refused:
        await open_store(url)
    assert "postgresql://user:password@host:5432/database" in str(refused.value)
    assert "secret" not in str(refused.value)


async def test_a_chat_is_created_with_its_first_conversation(store: Store) -> None:
    assert await store.current_conversation(chat()) is None
    message = await store.add_user_message(chat(), author_id="1", author_name="A", text="hi")
    conversation = await store.current_conversation(chat())
    [record] = await store.find_chats("1")
    assert (record.platform, record.chat_id, record.thread_id) == ("telegram", "1", "")
    assert [c.id for c in await store.conversations(record.id)] == [conversation]
    assert conversation is not None
    assert [m.id for m in await store.conversation_messages(conversation)] == [message]


async def test_chats_are_keyed_by_platform_chat_and_thread(store: Store) -> None:
    keys = [chat("1"), chat("1", thread_id="7"), chat("1", platform="discord"), chat("2")]
    for key in keys:
        await store.add_user_message(key, author_id="u", author_name="U", text=str(key))
    assert len({await store.current_conversation(key) for key in keys}) == 4
    assert len(await store.find_chats("1")) == 3
    assert [c.platform for c in await store.find_chats("1", "discord")] == ["discord"]
    assert await store.find_chats("3") == []


async def test_reset_starts_a_new_conversation_and_keeps_the_old(store: Store) -> None:
    await store.add_user_message(chat(), author_id="1", author_name="A", text="old")
    first = await store.current_conversation(chat())
    new = await store.new_conversation(chat())
    await store.add_user_message(chat(), author_id="1", author_name="A", text="new")
    assert first is not None
    assert new == await store.current_conversation(chat()) != first
    assert [m.text for m in await store.conversation_messages(first)] == ["old"]
    assert [m.text for m in await store.conversation_messages(new)] == ["new"]
    # A reset on a chat never seen before is its first conversation, not a second one.
    fresh = await store.new_conversation(chat("9"))
    [record] = await store.find_chats("9")
    assert [c.id for c in await store.conversations(record.id)] == [fresh]


async def test_settings_are_per_chat_and_can_go_back_to_default(store: Store) -> None:
    assert (await store.chat_config(chat())).model is None
    await store.set_chat_model(chat(), "gpt-x")
    await store.set_chat_system_prompt(chat(), "be brief")
    config = await store.chat_config(chat())
    assert (config.model, config.system_prompt) == ("gpt-x", "be brief")
    assert (await store.chat_config(chat("2"))).model is None
    await store.set_chat_model(chat(), None)
    assert (await store.chat_config(chat())).model is None


async def test_the_image_switch_is_per_chat_and_keeps_the_other_settings(store: Store) -> None:
    assert (await store.chat_config(chat())).image_generation is None
    await store.set_chat_model(chat(), "gpt-x")
    await store.set_chat_image_generation(chat(), False)
    config = await store.chat_config(chat())
    assert (config.model, config.image_generation) == ("gpt-x", False)
    assert (await store.chat_config(chat("2"))).image_generation is None
    await store.set_chat_image_generation(chat(), True)
    assert (await store.chat_config(chat())).image_generation is True
    await store.set_chat_image_generation(chat(), None)
    assert (await store.chat_config(chat())).image_generation is None


async def test_the_persona_is_per_chat_and_keeps_the_other_settings(store: Store) -> None:
    assert (await store.chat_config(chat())).persona is None
    await store.set_chat_model(chat(), "gpt-x")
    await store.set_chat_persona(chat(), "pirate")
    config = await store.chat_config(chat())
    assert (config.model, config.persona) == ("gpt-x", "pirate")
    assert (await store.chat_config(chat("2"))).persona is None
    await store.set_chat_persona(chat(), None)
    assert (await store.chat_config(chat())).persona is None


async def test_a_queued_turn_keeps_its_reply_next_to_its_question(store: Store) -> None:
    """Q1, Q2 stored, then A1: the history reads Q1 A1 Q2, and Q2's context includes A1."""
    q1 = await store.add_user_message(chat(), author_id="1", author_name="A", text="Q1")
    q2 = await store.add_user_message(chat(), author_id="2", author_name="B", text="Q2")
    a1 = await store.start_reply(q1, "m")
    assert (await store.context_messages(q1, 50))[-1].text == "Q1"
    await store.finish_reply(a1, ReplyOutcome(MessageStatus.COMPLETE, "A1"))
    history = await conversation(store)
    assert [m.text for m in history] == ["Q1", "A1", "Q2"]
    assert history[1].reply_to == q1
    context = await store.context_messages(q2, 50)
    assert [m.text for m in context] == ["Q1", "A1", "Q2"]
    # Q1's context never includes the later Q2.
    context = await store.context_messages(q1, 50)
    assert [m.text for m in context] == ["Q1"]


async def test_context_leaves_out_errors_streaming_and_empty_replies(store: Store) -> None:
    outcomes = [
        (MessageStatus.COMPLETE, "kept"),
        (MessageStatus.INTERRUPTED, "kept partial"),
        (MessageStatus.ERROR, "partial before error"),
        (MessageStatus.INTERRUPTED, ""),
        (None, "still streaming"),
    ]
    for status, text in outcomes:
        question = await store.add_user_message(chat(), author_id="1", author_name="A", text="q")
        reply = await store.start_reply(question, "m")
        if status is None:
            await store.save_partial_reply(reply, text)
        else:
            await store.finish_reply(reply, ReplyOutcome(status, text, error="boom"))
    last = await store.add_user_message(chat(), author_id="1", author_name="A", text="last")
    context = await store.context_messages(last, 50)
    assert [m.text for m in context] == ["q", "kept", "q", "kept partial", "q", "q", "q", "last"]


async def test_context_returns_the_newest_messages_oldest_first(store: Store) -> None:
    question = 0
    for number in range(30):
        question = await store.add_user_message(
            chat(), author_id="1", author_name="A", text=f"q{number}"
        )
        reply = await store.start_reply(question, "m")
        await store.finish_reply(reply, ReplyOutcome(MessageStatus.COMPLETE, f"a{number}"))
    context = await store.context_messages(question, 5)
    assert [m.text for m in context] == ["q27", "a27", "q28", "a28", "q29"]
    assert [m.role for m in context] == [Role.USER, Role.ASSISTANT] * 2 + [Role.USER]


async def test_a_finished_reply_keeps_every_field(store: Store) -> None:
    question = await store.add_user_message(
        chat(), author_id="42", author_name="Zoë", text="hi", platform_message_id="m-1"
    )
    reply = await store.start_reply(question, "asked-model")
    outcome = ReplyOutcome(
        MessageStatus.ERROR,
        "part",
        model="served-model",
        provider="OpenAI",
        first_token_ms=120,
        total_ms=900,
        prompt_tokens=10,
        completion_tokens=5,
        total_tokens=15,
        error="RateLimitError: slow down",
    )
    await store.finish_reply(reply, outcome)
    await store.set_platform_message_ids(reply, ["r-1", "r-2"])
    await store.set_platform_message_ids(reply, ["r-1", "r-2", "r-3"])  # replaces, no duplicates
    user, assistant = await conversation(store)
    assert (user.author_id, user.author_name, user.platform_message_ids) == ("42", "Zoë", ("m-1",))
    assert user.status is MessageStatus.COMPLETE
    assert assistant.platform_message_ids == ("r-1", "r-2", "r-3")
    assert (assistant.status, assistant.text, assistant.model) == ("error", "part", "served-model")
    assert (assistant.provider, assistant.first_token_ms, assistant.total_ms) == (
        "OpenAI",
        120,
        900,
    )
    assert (assistant.prompt_tokens, assistant.completion_tokens, assistant.total_tokens) == (
        10,
        5,
        15,
    )
    assert assistant.error == "RateLimitError: slow down"
    assert assistant.created_at.endswith("Z") and assistant.updated_at >= assistant.created_at


async def test_interrupt_streaming_marks_only_streaming_rows(store: Store) -> None:
    question = await store.add_user_message(chat(), author_id="1", author_name="A", text="q")
    done = await store.start_reply(question, "m")
    await store.finish_reply(done, ReplyOutcome(MessageStatus.COMPLETE, "done"))
    cut = await store.start_reply(question, "m")
    await store.save_partial_reply(cut, "half")
    assert await store.interrupt_streaming() == 1
    assert await store.interrupt_streaming() == 0
    rows = {m.id: m for m in await conversation(store)}
    assert (rows[cut].status, rows[cut].text) == (MessageStatus.INTERRUPTED, "half")
    assert rows[done].status is MessageStatus.COMPLETE
    # A checkpoint that arrives after the row was closed does not reopen or change it.
    await store.save_partial_reply(cut, "late")
    rows = {m.id: m for m in await conversation(store)}
    assert rows[cut].text == "half"


@pytest.mark.parametrize(
    "text",
    [
        NASTY,
        "Привет, 世界! 👋🏽👨‍👩‍👧‍👦 \u202eRTL\u202c e\u0301 \U0001f600",
        "x" * 100_000,
        "🙂" * 25_000,  # 100 KB of four-byte characters
        "line\nbreaks\r\nand\ttabs\u2028separators",
    ],
    ids=["sql-metacharacters", "unicode-emoji", "100KB-ascii", "100KB-emoji", "whitespace"],
)
async def test_awkward_text_round_trips_in_every_text_field(
    store: Store, store_backend: str, text: str
) -> None:
    # PostgreSQL's text cannot hold NUL: that store keeps it as U+FFFD (storage.postgres.store).
    stored = text if store_backend == "sqlite" else text.replace("\x00", "\ufffd")
    # Its B-tree indexes take at most 2.7 KB an entry, so the ids (a chat's, a platform
    # message's) stay ids there: the 100 KB texts go into the other fields only.
    ident = text if store_backend == "sqlite" or len(text.encode()) < 2000 else text[:100]
    stored_ident = ident if store_backend == "sqlite" else ident.replace("\x00", "\ufffd")
    key = chat(ident, platform=ident, thread_id=ident)
    await store.set_chat_model(key, text)
    await store.set_chat_system_prompt(key, text)
    question = await store.add_user_message(
        key, author_id=text, author_name=text, text=text, platform_message_id=ident
    )
    reply = await store.start_reply(question, text)
    await store.save_partial_reply(reply, text[:10])
    await store.finish_reply(
        reply,
        ReplyOutcome(MessageStatus.ERROR, text, model=text, provider=text, error=text),
    )
    await store.set_platform_message_ids(reply, [ident, ident])

    config = await store.chat_config(key)
    assert (config.model, config.system_prompt) == (stored, stored)
    [record] = await store.find_chats(ident, ident)
    assert (record.platform, record.chat_id, record.thread_id) == (stored_ident,) * 3
    user, assistant = await conversation(store, key)
    assert (user.text, user.author_id, user.author_name) == (stored, stored, stored)
    assert user.platform_message_ids == (stored_ident,)
    assert (assistant.text, assistant.model, assistant.provider, assistant.error) == (
        stored,
        stored,
        stored,
        stored,
    )
    assert assistant.platform_message_ids == (stored_ident, stored_ident)
    context = await store.context_messages(question, 10)
    assert [m.text for m in context] == [stored]
    # Nothing was executed: the tables are all still there.
    assert len(await store.find_chats(ident)) == 1


#: Python strings can hold lone surrogates (a JSON "\\ud83d" escape from a platform or a model,
#: stdin read with surrogateescape); UTF-8, and so SQLite, cannot.
SURROGATES = "a\ud800b\udcffc\ud83d\ude00"
#: What is stored instead: each lone one a U+FFFD, a pair that came apart joined again.
SURROGATES_STORED = "a\ufffdb\ufffdc\U0001f600"


async def test_lone_surrogates_are_stored_as_replacement_characters(store: Store) -> None:
    text = SURROGATES
    key = chat(text, platform=text, thread_id=text)
    await store.set_chat_model(key, text)
    await store.set_chat_system_prompt(key, text)
    question = await store.add_user_message(
        key, author_id=text, author_name=text, text=text, platform_message_id=text
    )
    reply = await store.start_reply(question, text)
    await store.save_partial_reply(reply, text)
    assert (await conversation(store, key))[1].text == SURROGATES_STORED
    await store.finish_reply(
        reply, ReplyOutcome(MessageStatus.ERROR, text, model=text, provider=text, error=text)
    )
    await store.set_platform_message_ids(reply, [text])

    config = await store.chat_config(key)
    assert (config.model, config.system_prompt) == (SURROGATES_STORED, SURROGATES_STORED)
    [record] = await store.find_chats(text, text)
    assert record.chat_id == SURROGATES_STORED
    user, assistant = await conversation(store, key)
    assert (user.text, user.author_id, user.author_name) == (SURROGATES_STORED,) * 3
    assert (assistant.text, assistant.model, assistant.provider, assistant.error) == (
        SURROGATES_STORED,
    ) * 4
    assert len(assistant.platform_message_ids) == 1


async def test_interrupt_streaming_can_be_limited_to_one_platform(store: Store) -> None:
    for platform in ("console", "telegram"):
        key = chat("1", platform=platform)
        question = await store.add_user_message(key, author_id="1", author_name="A", text="q")
        await store.start_reply(question, "m")
    assert await store.interrupt_streaming("console") == 1
    statuses = {
        platform: (await conversation(store, chat("1", platform=platform)))[1].status
        for platform in ("console", "telegram")
    }
    assert statuses == {"console": "interrupted", "telegram": "streaming"}
    assert await store.interrupt_streaming() == 1


async def test_a_reply_needs_a_stored_user_message(store: Store) -> None:
    with pytest.raises(StorageError, match="no user message 999"):
        await store.start_reply(999, "m")


def columns_of(path: Path, table: str) -> list[str]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return [row[1] for row in db.execute(f"PRAGMA table_info({table})")]


def version_of(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return db.execute("PRAGMA user_version").fetchone()[0]


def add_step(monkeypatch: pytest.MonkeyPatch, step: Any) -> None:
    """Pretend this Parley release brings one more migration step."""
    monkeypatch.setattr(migrations, "MIGRATIONS", [*MIGRATIONS, step])
    monkeypatch.setattr(migrations, "LATEST_VERSION", LATEST_VERSION + 1)
    monkeypatch.setattr(sqlite_store, "LATEST_VERSION", LATEST_VERSION + 1)


async def test_a_new_step_migrates_an_existing_database_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "parley.db"
    store = await open_store(f"sqlite:///{path}")
    await store.add_user_message(chat(), author_id="1", author_name="A", text="kept")
    await store.close()
    runs = []

    async def m003_chat_language(db: Any) -> None:
        runs.append(True)
        await db.execute("ALTER TABLE chats ADD COLUMN language TEXT")

    add_step(monkeypatch, m003_chat_language)
    for _ in range(2):
        store = await open_store(f"sqlite:///{path}")
        await store.close()
    assert runs == [True]
    assert version_of(path) == LATEST_VERSION + 1
    assert columns_of(path, "chats")[-1] == "language"
    store = await open_store(f"sqlite:///{path}")
    try:
        assert [m.text for m in await conversation(store)] == ["kept"]
    finally:
        await store.close()


async def test_a_failing_step_leaves_the_database_at_the_previous_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "parley.db"
    await (await open_store(f"sqlite:///{path}")).close()

    async def m003_half_done(db: Any) -> None:
        await db.execute("ALTER TABLE chats ADD COLUMN language TEXT")
        await db.execute("ALTER TABLE no_such_table ADD COLUMN x TEXT")

    add_step(monkeypatch, m003_half_done)
    with pytest.raises(StorageError, match="no_such_table"):
        await open_store(f"sqlite:///{path}")
    assert version_of(path) == LATEST_VERSION
    assert "language" not in columns_of(path, "chats")


def test_migration_names_must_carry_their_number() -> None:
    async def m099_out_of_order(db: Any) -> None: ...

    with pytest.raises(RuntimeError, match=f"must be named m{LATEST_VERSION + 1:03d}_"):
        migrations.migration(m099_out_of_order)
    assert len(MIGRATIONS) == LATEST_VERSION
