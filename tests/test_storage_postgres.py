"""What only the PostgreSQL store has to show: its schema mirrors SQLite's, migrating is
once-only under an advisory lock, foreign or newer databases are refused, an unreachable
server is a clear error without the password, and concurrent first messages make one chat."""

from __future__ import annotations

import asyncio
import socket

import asyncpg
import pytest

from storage import (
    ForeignDatabaseError,
    SchemaTooNewError,
    StorageUnavailableError,
    inspect_store,
    open_store,
)
from storage.postgres import migrations
from storage.postgres.migrations import LATEST_VERSION, MIGRATIONS, VERSION_TABLE
from tests.test_conversation_fakes import chat
from tests.test_storage import EXPECTED_COLUMNS, EXPECTED_INDEXES


async def test_migrations_give_the_sqlite_schema_column_for_column(
    empty_postgres_url: str,
) -> None:
    store = await open_store(empty_postgres_url)
    await store.close()
    conn = await asyncpg.connect(empty_postgres_url)
    try:
        rows = await conn.fetch(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE table_schema = 'public' AND table_name != $1"
            " ORDER BY table_name, ordinal_position",
            VERSION_TABLE,
        )
        indexes = {
            row[0]
            for row in await conn.fetch(
                "SELECT indexname FROM pg_indexes WHERE schemaname = 'public'"
                " AND indexname NOT LIKE '%_pkey' AND indexname NOT LIKE '%_key'"
            )
        }
        version = await conn.fetchval(f"SELECT version FROM {VERSION_TABLE}")
    finally:
        await conn.close()
    columns: dict[str, list[str]] = {}
    for table, column in rows:
        columns.setdefault(table, []).append(column)
    assert columns == EXPECTED_COLUMNS
    assert indexes == EXPECTED_INDEXES
    assert version == LATEST_VERSION == len(MIGRATIONS)
    status = await inspect_store(empty_postgres_url)
    assert (status.exists, status.version, status.latest) == (True, LATEST_VERSION, LATEST_VERSION)


def test_both_engines_have_the_same_steps() -> None:
    from storage.sqlite.migrations import MIGRATIONS as SQLITE_MIGRATIONS

    assert [s.__name__ for s in MIGRATIONS] == [s.__name__ for s in SQLITE_MIGRATIONS]


async def test_an_empty_database_reads_as_version_0_and_is_left_alone(
    empty_postgres_url: str,
) -> None:
    status = await inspect_store(empty_postgres_url)
    assert (status.exists, status.version) == (True, 0)
    conn = await asyncpg.connect(empty_postgres_url)
    try:
        assert (
            await conn.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == 0
        )
    finally:
        await conn.close()


async def test_processes_starting_at_once_migrate_once(
    empty_postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs: list[str] = []
    wrapped = []
    for step in MIGRATIONS:

        async def counted(db: asyncpg.Connection, step=step) -> None:  # type: ignore[no-untyped-def]
            runs.append(step.__name__)
            await step(db)

        counted.__name__ = step.__name__
        wrapped.append(counted)
    monkeypatch.setattr(migrations, "MIGRATIONS", wrapped)
    stores = await asyncio.gather(*(open_store(empty_postgres_url) for _ in range(4)))
    for store in stores:
        await store.close()
    assert runs == [step.__name__ for step in MIGRATIONS]


async def test_a_database_of_someone_else_is_refused_unchanged(empty_postgres_url: str) -> None:
    conn = await asyncpg.connect(empty_postgres_url)
    try:
        await conn.execute("CREATE TABLE invoices (id int)")
        with pytest.raises(ForeignDatabaseError, match="not Parley's"):
            await open_store(empty_postgres_url)
        with pytest.raises(ForeignDatabaseError):
            await inspect_store(empty_postgres_url)
        tables = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        assert [row[0] for row in tables] == ["invoices"]
    finally:
        await conn.close()


async def test_a_newer_schema_is_refused_unchanged(postgres_url: str) -> None:
    conn = await asyncpg.connect(postgres_url)
    try:
        await conn.execute(f"UPDATE {VERSION_TABLE} SET version = {LATEST_VERSION + 1}")
        with pytest.raises(SchemaTooNewError, match="upgrade Parley"):
            await open_store(postgres_url)
        assert await conn.fetchval(f"SELECT version FROM {VERSION_TABLE}") == LATEST_VERSION + 1
    finally:
        await conn.close()


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_an_unreachable_server_names_host_and_port_not_the_password() -> None:
    url = f"postgresql://parley:s3cret-pw@127.0.0.1:{closed_port()}/parley"
    for attempt in (open_store(url), inspect_store(url)):
        with pytest.raises(StorageUnavailableError) as refused:
            await attempt
        message = str(refused.value)
        assert "s3cret-pw" not in message
        assert f"postgresql://parley@127.0.0.1:{url.rsplit(':', 1)[1].split('/')[0]}" in message
        assert "Check that the server is running" in message


async def test_a_password_in_the_query_string_is_not_shown_either() -> None:
    """libpq and asyncpg read `?password=` as well as `user:password@`."""
    port = closed_port()
    url = f"postgresql://parley@127.0.0.1:{port}/parley?sslmode=disable&password=s3cret-pw"
    for attempt in (open_store(url), inspect_store(url)):
        with pytest.raises(StorageUnavailableError) as refused:
            await attempt
        message = str(refused.value)
        assert "s3cret-pw" not in message
        assert f"postgresql://parley@127.0.0.1:{port}/parley?sslmode=disable" in message


async def test_a_missing_database_says_how_to_create_it(postgres_server: str) -> None:
    missing = postgres_server.rsplit("/", 1)[0] + "/no_such_db"
    with pytest.raises(StorageUnavailableError, match=r"does not exist.*createdb"):
        await open_store(missing)


async def test_first_messages_at_once_make_one_chat_and_one_conversation(
    postgres_url: str,
) -> None:
    store = await open_store(postgres_url)
    try:
        ids = await asyncio.gather(
            *(
                store.add_user_message(chat("new"), author_id=str(n), author_name="A", text=str(n))
                for n in range(8)
            ),
            *(store.set_chat_model(chat("new"), "m") for _ in range(4)),
        )
        [record] = await store.find_chats("new")
        [conversation] = await store.conversations(record.id)
        messages = await store.conversation_messages(conversation.id)
        assert sorted(m.id for m in messages) == sorted(ids[:8])
    finally:
        await store.close()


async def test_nul_characters_are_stored_as_replacement_characters(postgres_url: str) -> None:
    store = await open_store(postgres_url)
    try:
        message = await store.add_user_message(
            chat("a\x00b"),
            author_id="1",
            author_name="A\x00",
            text="x\x00y",
            platform_message_id="p\x00",
        )
        [stored] = await store.context_messages(message, 5)
        assert (stored.text, stored.author_name) == ("x\ufffdy", "A\ufffd")
        found = await store.find_message(chat("a\x00b"), "p\x00")
        assert found is not None and found.id == message
    finally:
        await store.close()
