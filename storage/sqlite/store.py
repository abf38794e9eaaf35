"""History on SQLite through aiosqlite: one writer connection, one reader connection, WAL.

Why two connections: with WAL, the reader sees only committed data and never waits for the
writer, so loading a chat's context is not queued behind another chat's write. All writes go
through one connection behind an `asyncio.Lock`, because SQLite allows one writer at a time and
a statement issued on a connection with an open transaction would silently join it.

Cancellation: aiosqlite runs each call on the connection's own thread, in order. A coroutine
cancelled while its statement is queued still has that statement run, and the rollback issued
on the way out is queued after it, so an interrupted transaction never stays open.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from storage.base import (
    ChatConfig,
    ChatKey,
    ChatRecord,
    ConversationRecord,
    MessageStatus,
    ReplyOutcome,
    Role,
    StoredMessage,
    UndeliveredReply,
)
from storage.errors import (
    ForeignDatabaseError,
    SchemaTooNewError,
    StorageError,
    StorageUnavailableError,
)
from storage.sqlite.errors import translate
from storage.sqlite.migrations import LATEST_VERSION, migrate, schema_version

log = logging.getLogger(__name__)

#: How long a statement waits for another process's lock before failing as locked.
BUSY_TIMEOUT_SECONDS = 5.0

#: UTC timestamps as ISO 8601 text: readable in exports and sortable as text.
_NOW = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"

#: In the order of `StoredMessage`'s fields, which `_message` relies on.
_MESSAGE_COLUMNS = (
    "id, conversation, role, text, status, author_id, author_name, reply_to, model, provider, "
    "first_token_ms, total_ms, prompt_tokens, completion_tokens, total_tokens, error, "
    "created_at, updated_at, platform_ids, tokens_estimated"
)

_CHAT_COLUMNS = "id, platform, chat_id, thread_id, model, system_prompt, created_at"

#: The hot read: one backwards range scan of `messages_by_turn` (a test checks the plan).
CONTEXT_QUERY = (
    f"SELECT {_MESSAGE_COLUMNS} FROM messages"
    " WHERE conversation = (SELECT conversation FROM messages WHERE id = ?)"
    " AND coalesce(reply_to, id) <= ? AND coalesce(reply_to, 0) < ?"
    " AND status IN ('complete', 'interrupted') AND (role = 'user' OR text != '')"
    " ORDER BY coalesce(reply_to, id) DESC, id DESC LIMIT ?"
)

_INSERT_USER_MESSAGE = (
    "INSERT INTO messages (conversation, role, author_id, author_name, text, status,"
    " platform_ids, created_at, updated_at)"
    f" SELECT v.id, 'user', ?, ?, ?, 'complete', ?, {_NOW}, {_NOW}"
    " FROM chats c JOIN conversations v ON v.chat = c.id"
    " WHERE c.platform = ? AND c.chat_id = ? AND c.thread_id = ? ORDER BY v.id DESC LIMIT 1"
)


# Enum calls cost a microsecond each; a context load maps 50 rows, so look members up instead.
_ROLES = {role.value: role for role in Role}
_STATUSES = {status.value: status for status in MessageStatus}
_NO_IDS = "[]"


def _message(row: Sequence[Any]) -> StoredMessage:
    return StoredMessage(
        row[0],
        row[1],
        _ROLES[row[2]],
        row[3],
        _STATUSES[row[4]],
        row[5],
        row[6],
        row[7],
        row[8],
        row[9],
        row[10],
        row[11],
        row[12],
        row[13],
        row[14],
        row[15],
        row[16],
        row[17],
        () if row[18] == _NO_IDS else tuple(json.loads(row[18])),
        bool(row[19]),
    )


def _inserted_id(row_id: int | None) -> int:
    """The id of the row a cursor just inserted. `sqlite3` types `lastrowid` as optional, for a
    cursor that has inserted nothing; every caller here has inserted one row first."""
    if row_id is None:
        raise StorageError("SQLite gave no id for the row just inserted.")
    return row_id


def _utf8(text: str) -> str:
    """`text` as SQLite can hold it: UTF-8 has no lone surrogates, yet a Python string can (a
    JSON "\\ud83d" escape from a platform or a model, stdin read with surrogateescape), and
    binding one fails the write. Each lone one becomes U+FFFD; a pair split apart is rejoined."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def _utf8_or_none(text: str | None) -> str | None:
    return None if text is None else _utf8(text)


def _key(chat: ChatKey) -> tuple[str, str, str]:
    return (_utf8(chat.platform), _utf8(chat.chat_id), _utf8(chat.thread_id))


async def _connect(path: Path, busy_timeout: float, *, reader: bool) -> aiosqlite.Connection:
    # `timeout` is SQLite's busy timeout; isolation_level=None leaves transactions to us.
    db = await aiosqlite.connect(path, isolation_level=None, timeout=busy_timeout)
    try:
        await db.execute("PRAGMA foreign_keys = ON")
        # With WAL, NORMAL survives any process crash (SIGKILL included); only an OS crash or
        # power cut can lose the last commits, never consistency. FULL would fsync every write.
        await db.execute("PRAGMA synchronous = NORMAL")
        if reader:
            await db.execute("PRAGMA query_only = ON")
    except BaseException:
        await db.close()
        raise
    return db


def _prepare_folder(path: Path, must_exist: bool) -> str:
    """Create the database's folder; return the absolute path that error messages name."""
    location = str(path.absolute())
    if must_exist and not path.is_file():
        raise StorageUnavailableError(
            f"Database {location} does not exist. Check DATABASE_URL (and the folder it is "
            "relative to)."
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageUnavailableError(
            f"Cannot create the folder of database {location} ({exc.strerror or exc}). "
            "Point DATABASE_URL at a folder this user can write to."
        ) from exc
    if path.is_dir():
        raise StorageUnavailableError(
            f"Database path {location} is a folder. Point DATABASE_URL at a file inside it, "
            "e.g. sqlite:///data/parley.db."
        )
    return location


class SQLiteStore:
    """The SQLite backend of `storage.base.Store`. Build it with `await SQLiteStore.open(path)`."""

    def __init__(
        self, location: str, writer: aiosqlite.Connection, reader: aiosqlite.Connection
    ) -> None:
        self._location = location
        self._writer = writer
        self._reader = reader
        self._write_lock = asyncio.Lock()

    @classmethod
    async def open(
        cls, path: Path, *, busy_timeout: float = BUSY_TIMEOUT_SECONDS, must_exist: bool = False
    ) -> SQLiteStore:
        """Open (creating if needed, unless `must_exist`) and migrate the database at `path`.

        Checks come before any write: a file that is not a database, holds someone else's
        tables, or was migrated by a newer Parley raises and is left byte-for-byte unchanged.
        """
        location = await asyncio.to_thread(_prepare_folder, path, must_exist)
        try:
            writer = await _connect(path, busy_timeout, reader=False)
        except sqlite3.Error as exc:
            raise translate(exc, location) from exc
        try:
            await cls._check_before_writing(writer, location)
            await writer.execute("PRAGMA journal_mode = WAL")
            applied = await migrate(writer)
            if applied:
                log.info("Migrated database %s: %s", location, ", ".join(applied))
            reader = await _connect(path, busy_timeout, reader=True)
        except sqlite3.Error as exc:
            await writer.close()
            raise translate(exc, location) from exc
        except BaseException:
            await writer.close()
            raise
        return cls(location, writer, reader)

    @staticmethod
    async def _check_before_writing(db: aiosqlite.Connection, location: str) -> None:
        version = await schema_version(db)
        if version > LATEST_VERSION:
            raise SchemaTooNewError(
                f"Database {location} has schema version {version}, newer than this Parley "
                f"knows ({LATEST_VERSION}). It was left unchanged: upgrade Parley, or point "
                "DATABASE_URL at another file."
            )
        if version == 0:
            rows = await db.execute_fetchall(
                "SELECT count(*) FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"
            )
            if next(iter(rows))[0]:
                raise ForeignDatabaseError(
                    f"Database {location} already holds tables that are not Parley's. It was "
                    "left unchanged: point DATABASE_URL at a new or a Parley database file."
                )

    @property
    def location(self) -> str:
        return self._location

    async def close(self) -> None:
        await self._reader.close()
        await self._writer.close()

    # Plumbing.

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction, taken with the write lock so no other write joins it."""
        async with self._write_lock:
            try:
                await self._writer.execute("BEGIN IMMEDIATE")
                yield self._writer
                await self._writer.commit()
            except BaseException as exc:
                await asyncio.shield(self._writer.rollback())
                if isinstance(exc, sqlite3.Error):
                    raise translate(exc, self._location) from exc
                raise

    async def _write(self, sql: str, parameters: Iterable[Any]) -> aiosqlite.Cursor:
        """A one-statement change: atomic on its own, so it skips BEGIN/COMMIT round trips."""
        async with self._write_lock:
            try:
                return await self._writer.execute(sql, parameters)
            except sqlite3.Error as exc:
                raise translate(exc, self._location) from exc

    async def _fetch(self, sql: str, parameters: Iterable[Any] = ()) -> list[sqlite3.Row]:
        try:
            return list(await self._reader.execute_fetchall(sql, parameters))
        except sqlite3.Error as exc:
            raise translate(exc, self._location) from exc

    async def _ensure_chat(self, db: aiosqlite.Connection, chat: ChatKey) -> tuple[int, int, bool]:
        """(chat row, current conversation, created now); a new chat gets its first conversation."""
        rows = await db.execute_fetchall(
            "SELECT c.id, (SELECT v.id FROM conversations v WHERE v.chat = c.id"
            " ORDER BY v.id DESC LIMIT 1)"
            " FROM chats c WHERE c.platform = ? AND c.chat_id = ? AND c.thread_id = ?",
            _key(chat),
        )
        for chat_row, conversation in rows:
            if conversation is not None:
                return chat_row, conversation, False
            return chat_row, await self._insert_conversation(db, chat_row), False
        cursor = await db.execute(
            f"INSERT INTO chats (platform, chat_id, thread_id, created_at) VALUES (?, ?, ?, {_NOW})",
            _key(chat),
        )
        chat_row = _inserted_id(cursor.lastrowid)
        return chat_row, await self._insert_conversation(db, chat_row), True

    @staticmethod
    async def _insert_conversation(db: aiosqlite.Connection, chat_row: int) -> int:
        cursor = await db.execute(
            f"INSERT INTO conversations (chat, created_at) VALUES (?, {_NOW})", (chat_row,)
        )
        return _inserted_id(cursor.lastrowid)

    # Chats and their settings.

    async def chat_config(self, chat: ChatKey) -> ChatConfig:
        rows = await self._fetch(
            "SELECT model, system_prompt FROM chats"
            " WHERE platform = ? AND chat_id = ? AND thread_id = ?",
            _key(chat),
        )
        for model, system_prompt in rows:
            return ChatConfig(model=model, system_prompt=system_prompt)
        return ChatConfig()

    async def set_chat_model(self, chat: ChatKey, model: str | None) -> None:
        async with self._transaction() as db:
            chat_row, _, _ = await self._ensure_chat(db, chat)
            await db.execute(
                "UPDATE chats SET model = ? WHERE id = ?", (_utf8_or_none(model), chat_row)
            )

    async def set_chat_system_prompt(self, chat: ChatKey, prompt: str | None) -> None:
        async with self._transaction() as db:
            chat_row, _, _ = await self._ensure_chat(db, chat)
            await db.execute(
                "UPDATE chats SET system_prompt = ? WHERE id = ?", (_utf8_or_none(prompt), chat_row)
            )

    async def new_conversation(self, chat: ChatKey) -> int:
        async with self._transaction() as db:
            chat_row, conversation, created = await self._ensure_chat(db, chat)
            if created:
                return conversation
            return await self._insert_conversation(db, chat_row)

    async def current_conversation(self, chat: ChatKey) -> int | None:
        rows = await self._fetch(
            "SELECT v.id FROM chats c JOIN conversations v ON v.chat = c.id"
            " WHERE c.platform = ? AND c.chat_id = ? AND c.thread_id = ?"
            " ORDER BY v.id DESC LIMIT 1",
            _key(chat),
        )
        return rows[0][0] if rows else None

    # Writing a turn.

    async def add_user_message(
        self,
        chat: ChatKey,
        *,
        author_id: str,
        author_name: str,
        text: str,
        platform_message_id: str | None = None,
    ) -> int:
        ids = json.dumps([] if platform_message_id is None else [platform_message_id])
        values = (_utf8(author_id), _utf8(author_name), _utf8(text), ids, *_key(chat))
        # One statement into the chat's newest conversation: the hot path, one round trip.
        cursor = await self._write(_INSERT_USER_MESSAGE, values)
        if cursor.rowcount:
            return _inserted_id(cursor.lastrowid)
        async with self._transaction() as db:  # a chat's first message creates the chat
            await self._ensure_chat(db, chat)
            cursor = await db.execute(_INSERT_USER_MESSAGE, values)
            return _inserted_id(cursor.lastrowid)

    async def start_reply(self, reply_to: int, model: str | None) -> int:
        cursor = await self._write(
            "INSERT INTO messages (conversation, reply_to, role, status, model, created_at,"
            f" updated_at) SELECT conversation, id, 'assistant', 'streaming', ?, {_NOW}, {_NOW}"
            " FROM messages WHERE id = ? AND role = 'user'",
            (_utf8_or_none(model), reply_to),
        )
        if not cursor.rowcount:
            raise StorageError(f"Database {self._location}: no user message {reply_to} to answer.")
        return _inserted_id(cursor.lastrowid)

    async def save_partial_reply(self, message_id: int, text: str) -> None:
        await self._write(
            f"UPDATE messages SET text = ?, updated_at = {_NOW}"
            " WHERE id = ? AND status = 'streaming'",
            (_utf8(text), message_id),
        )

    async def finish_reply(self, message_id: int, outcome: ReplyOutcome) -> None:
        await self._write(
            "UPDATE messages SET status = ?, text = ?, model = coalesce(?, model), provider = ?,"
            " first_token_ms = ?, total_ms = ?, prompt_tokens = ?, completion_tokens = ?,"
            f" total_tokens = ?, tokens_estimated = ?, error = ?, updated_at = {_NOW}"
            " WHERE id = ?",
            (
                outcome.status.value,
                _utf8(outcome.text),
                _utf8_or_none(outcome.model),
                _utf8_or_none(outcome.provider),
                outcome.first_token_ms,
                outcome.total_ms,
                outcome.prompt_tokens,
                outcome.completion_tokens,
                outcome.total_tokens,
                outcome.tokens_estimated,
                _utf8_or_none(outcome.error),
                message_id,
            ),
        )

    async def set_platform_message_ids(
        self, message_id: int, ids: Sequence[str], *, delivery_pending: bool = False
    ) -> None:
        await self._write(
            "UPDATE messages SET platform_ids = ?, delivery_pending = ? WHERE id = ?",
            (json.dumps([str(value) for value in ids]), delivery_pending, message_id),
        )

    async def interrupt_reply(self, message_id: int) -> None:
        await self._write(
            f"UPDATE messages SET status = 'interrupted', updated_at = {_NOW}"
            " WHERE id = ? AND status = 'complete'",
            (message_id,),
        )

    async def interrupt_streaming(self, platform: str | None = None) -> int:
        cursor = await self._write(
            f"UPDATE messages SET status = 'interrupted', updated_at = {_NOW}"
            " WHERE (status = 'streaming' OR (status = 'complete' AND delivery_pending = 1))"
            " AND (? IS NULL OR conversation IN"
            " (SELECT v.id FROM conversations v JOIN chats c ON c.id = v.chat"
            " WHERE c.platform = ?))",
            (platform, platform),
        )
        return cursor.rowcount

    async def undelivered_replies(self, platform: str) -> list[UndeliveredReply]:
        rows = await self._fetch(
            "SELECT m.id, c.platform, c.chat_id, c.thread_id, m.text, m.platform_ids"
            " FROM messages m JOIN conversations v ON v.id = m.conversation"
            " JOIN chats c ON c.id = v.chat"
            " WHERE m.delivery_pending = 1 AND c.platform = ? ORDER BY m.id",
            (_utf8(platform),),
        )
        return [
            UndeliveredReply(id_, platform_, chat_id, thread_id, text, tuple(json.loads(ids)))
            for id_, platform_, chat_id, thread_id, text, ids in rows
        ]

    # Reading.

    async def context_messages(self, up_to: int, limit: int) -> list[StoredMessage]:
        rows = await self._fetch(CONTEXT_QUERY, (up_to, up_to, up_to, limit))
        return [_message(row) for row in reversed(rows)]

    async def find_chats(self, chat_id: str, platform: str | None = None) -> list[ChatRecord]:
        rows = await self._fetch(
            f"SELECT {_CHAT_COLUMNS} FROM chats WHERE chat_id = ? AND (? IS NULL OR platform = ?)"
            " ORDER BY platform, thread_id",
            (_utf8(chat_id), _utf8_or_none(platform), _utf8_or_none(platform)),
        )
        return [ChatRecord(*row) for row in rows]

    async def conversations(self, chat: int) -> list[ConversationRecord]:
        rows = await self._fetch(
            "SELECT id, chat, created_at FROM conversations WHERE chat = ? ORDER BY id", (chat,)
        )
        return [ConversationRecord(*row) for row in rows]

    async def conversation_messages(self, conversation_id: int) -> list[StoredMessage]:
        rows = await self._fetch(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE conversation = ?"
            " ORDER BY coalesce(reply_to, id), id",
            (conversation_id,),
        )
        return [_message(row) for row in rows]
