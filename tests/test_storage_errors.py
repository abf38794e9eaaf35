"""Bad databases get a clear StorageError that names the file and the fix; nothing is overwritten."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from storage import (
    ForeignDatabaseError,
    SchemaTooNewError,
    StorageCorruptError,
    StorageError,
    StorageLockedError,
    StorageUnavailableError,
    open_store,
)
from storage.sqlite.migrations import LATEST_VERSION
from tests.test_conversation_fakes import chat

#: Short, so the locked-database tests fail fast instead of waiting the production timeout.
SHORT_BUSY_TIMEOUT = 0.2


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file of `folder` with its bytes, so "nothing overwritten" covers the -wal file too.

    The -shm file is left out: it is SQLite's shared-memory index that every reader updates,
    never data.
    """
    return {
        p.name: p.read_bytes()
        for p in sorted(folder.iterdir())
        if p.is_file() and not p.name.endswith("-shm")
    }


async def make_parley_db(path: Path) -> None:
    store = await open_store(f"sqlite:///{path}")
    await store.add_user_message(chat(), author_id="1", author_name="A", text="precious")
    await store.close()


def test_every_storage_error_is_a_storage_error() -> None:
    for cls in (
        StorageUnavailableError,
        StorageLockedError,
        StorageCorruptError,
        SchemaTooNewError,
        ForeignDatabaseError,
    ):
        assert issubclass(cls, StorageError)


async def test_a_folder_that_cannot_be_created(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the folder should be")
    path = blocker / "parley.db"
    with pytest.raises(StorageUnavailableError) as caught:
        await open_store(f"sqlite:///{path}")
    assert str(path) in str(caught.value)
    assert "DATABASE_URL" in str(caught.value)
    assert blocker.read_text() == "a file where the folder should be"


async def test_a_path_that_is_a_folder(tmp_path: Path) -> None:
    with pytest.raises(StorageUnavailableError, match="is a folder") as caught:
        await open_store(f"sqlite:///{tmp_path}")
    assert str(tmp_path) in str(caught.value)


async def test_a_location_where_no_file_can_be_created() -> None:
    # /proc refuses new files even to root, unlike a chmod-ed folder.
    with pytest.raises(StorageUnavailableError, match=re.escape("/proc/parley.db")) as caught:
        await open_store("sqlite:////proc/parley.db")
    assert "DATABASE_URL" in str(caught.value)


async def test_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "parley.db"
    path.write_bytes(b"These are someone's notes, not a database.\n" * 200)
    before = snapshot(tmp_path)
    with pytest.raises(StorageCorruptError) as caught:
        await open_store(f"sqlite:///{path}")
    assert str(path) in str(caught.value)
    assert "backup" in str(caught.value)
    assert snapshot(tmp_path) == before


async def test_a_database_with_a_damaged_schema_page(tmp_path: Path) -> None:
    path = tmp_path / "parley.db"
    await make_parley_db(path)
    data = bytearray(path.read_bytes())
    data[100:4096] = bytes(range(256)) * 15 + bytes(range(156))  # page 1 after the header
    path.write_bytes(bytes(data))
    before = snapshot(tmp_path)
    with pytest.raises(StorageCorruptError, match="malformed") as caught:
        await open_store(f"sqlite:///{path}")
    assert str(path) in str(caught.value)
    assert snapshot(tmp_path) == before


async def test_damaged_data_pages_fail_the_read_clearly(tmp_path: Path) -> None:
    path = tmp_path / "parley.db"
    await make_parley_db(path)
    # The pages of the chats table and its indexes, which the read below needs; the schema
    # (sqlite_master, over more than the first page since m007) stays intact.
    with sqlite3.connect(path) as db:
        size = db.execute("PRAGMA page_size").fetchone()[0]
        pages = [
            row[0]
            for row in db.execute("SELECT rootpage FROM sqlite_master WHERE tbl_name = 'chats'")
        ]
    data = bytearray(path.read_bytes())
    for page in pages:
        data[(page - 1) * size : page * size] = b"\xff" * size
    path.write_bytes(bytes(data))
    store = await open_store(f"sqlite:///{path}")
    try:
        with pytest.raises(StorageCorruptError, match=re.escape(str(path))):
            await store.find_chats("1")
    finally:
        await store.close()


async def test_a_database_from_a_newer_parley(tmp_path: Path) -> None:
    path = tmp_path / "parley.db"
    await make_parley_db(path)
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {LATEST_VERSION + 1}")
    before = snapshot(tmp_path)
    with pytest.raises(SchemaTooNewError) as caught:
        await open_store(f"sqlite:///{path}")
    message = str(caught.value)
    assert str(path) in message
    assert f"version {LATEST_VERSION + 1}" in message
    assert "upgrade Parley" in message
    assert snapshot(tmp_path) == before


async def test_another_programs_database(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
        db.execute("INSERT INTO invoices (total) VALUES (9.5)")
    before = snapshot(tmp_path)
    with pytest.raises(ForeignDatabaseError, match="not Parley's") as caught:
        await open_store(f"sqlite:///{path}")
    assert str(path) in str(caught.value)
    assert snapshot(tmp_path) == before


async def test_a_database_locked_while_opening(tmp_path: Path) -> None:
    path = tmp_path / "parley.db"
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("CREATE TABLE placeholder (x)")  # a rollback-journal database
        holder.execute("DROP TABLE placeholder")
        holder.execute("BEGIN EXCLUSIVE")
        with pytest.raises(StorageLockedError) as caught:
            await open_store(f"sqlite:///{path}", busy_timeout=SHORT_BUSY_TIMEOUT)
        assert str(path) in str(caught.value)
        assert "another process" in str(caught.value)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    store = await open_store(f"sqlite:///{path}")  # free again: it opens and migrates
    await store.close()


async def test_a_write_while_another_process_holds_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "parley.db"
    await make_parley_db(path)
    store = await open_store(f"sqlite:///{path}", busy_timeout=SHORT_BUSY_TIMEOUT)
    try:
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(StorageLockedError, match=re.escape(str(path))):
                await store.add_user_message(chat(), author_id="1", author_name="A", text="x")
            with pytest.raises(StorageLockedError):
                await store.set_chat_model(chat(), "m")
            assert len(await store.find_chats("1")) == 1  # WAL: reading still works
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        # The failed transactions were rolled back: the store writes normally again.
        await store.add_user_message(chat(), author_id="1", author_name="A", text="ok")
        conversation = await store.current_conversation(chat())
        assert conversation is not None
        texts = [m.text for m in await store.conversation_messages(conversation)]
        assert texts == ["precious", "ok"]
    finally:
        await store.close()
