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
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Collection, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import aiosqlite

from storage.base import (
    ALL_GUESTS,
    DERIVED_TABLE,
    HANDLING,
    BudgetOverride,
    ChatConfig,
    ChatKey,
    ChatRecord,
    ChatSummary,
    ConversationRecord,
    HistorySummary,
    InboxEntry,
    MessageImage,
    MessageStatus,
    ReplyOutcome,
    Role,
    Row,
    StoredMessage,
    StoreStatus,
    Totals,
    UndeliveredReply,
    UsageGrouping,
    UsageKey,
    UsageRecord,
    UsageRow,
    WriteObserver,
    period_start,
)
from storage.errors import (
    ForeignDatabaseError,
    SchemaTooNewError,
    StorageError,
    StorageUnavailableError,
)
from storage.sqlite.errors import translate
from storage.sqlite.migrations import LATEST_VERSION, migrate, schema_version
from storage.values import timestamp as _timestamp
from storage.values import utf8 as _utf8

log = logging.getLogger(__name__)

#: How long a statement waits for another process's lock before failing as locked.
BUSY_TIMEOUT_SECONDS = 5.0

#: UTC timestamps as ISO 8601 text: readable in exports and sortable as text.
_NOW = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"
#: Seconds since the epoch, for leases and the inbox (`storage.postgres.store` has the same).
_EPOCH = "((julianday('now') - 2440587.5) * 86400.0)"
#: A reply row's replica is gone: no lease of it is alive.
_DEAD_REPLICA = (
    f"NOT EXISTS (SELECT 1 FROM replicas r WHERE r.id = messages.replica"
    f" AND r.expires_at > {_EPOCH})"
)
_UNFINISHED = "(status = 'streaming' OR (status = 'complete' AND delivery_pending = 1))"
_INBOX_DONE = "UPDATE inbox SET done = 1, body = '' WHERE platform = ? AND update_id = ?"
#: How long a handled update's id is kept against a late second delivery (as on PostgreSQL).
INBOX_KEEP_SECONDS = 2 * 24 * 3600.0

#: In the order of `StoredMessage`'s fields, which `_message` relies on.
_MESSAGE_COLUMNS = (
    "id, conversation, role, text, status, author_id, author_name, reply_to, model, provider, "
    "first_token_ms, total_ms, prompt_tokens, completion_tokens, total_tokens, error, "
    "created_at, updated_at, platform_ids, tokens_estimated, image_count"
)

#: The same, named through the alias `m` for queries that join messages to other tables.
_M_COLUMNS = ", ".join(f"m.{column}" for column in _MESSAGE_COLUMNS.split(", "))

_CHAT_COLUMNS = "id, platform, chat_id, thread_id, model, system_prompt, created_at, title"

#: Titles remembered as written, so the hot path skips the no-op UPDATE; past this many chats
#: the memory starts over (the cost is one UPDATE per chat, not a wrong title).
TITLE_CACHE_SIZE = 10_000

#: `parley history list`: per conversation, its count and newest message id come from
#: `messages_by_turn` alone (rowid rides in every index), so only the chat's newest message row
#: is read; chats are joined through `conversations_newest`. Times are kept to the millisecond,
#: so ties go to the chat with the newest message.
LIST_CHATS_QUERY = (
    "WITH per_chat AS ("
    " SELECT v.chat AS chat, count(*) AS conversations, max(v.created_at) AS started,"
    " sum((SELECT count(*) FROM messages m WHERE m.conversation = v.id)) AS messages,"
    " max((SELECT max(m.id) FROM messages m WHERE m.conversation = v.id)) AS newest"
    " FROM conversations v GROUP BY v.chat)"
    " SELECT c.platform, c.chat_id, c.thread_id, c.title,"
    " coalesce(p.conversations, 0), coalesce(p.messages, 0),"
    " coalesce((SELECT m.updated_at FROM messages m WHERE m.id = p.newest), p.started,"
    " c.created_at) AS last_activity"
    " FROM chats c LEFT JOIN per_chat p ON p.chat = c.id"
    " WHERE ? IS NULL OR c.platform = ?"
    " ORDER BY last_activity DESC, p.newest DESC, c.id DESC"
)

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
    " platform_ids, image_count, parent, created_at, updated_at)"
    f" SELECT v.id, 'user', ?, ?, ?, 'complete', ?, ?, ?, {_NOW}, {_NOW}"
    " FROM chats c JOIN conversations v ON v.chat = c.id"
    " WHERE c.platform = ? AND c.chat_id = ? AND c.thread_id = ? ORDER BY v.id DESC LIMIT 1"
)


#: A branch, newest turn first: from user message ?, each step goes to the reply its `parent`
#: names and the user message that reply answers, at most ? steps. `root` is the deepest user
#: message; its parent is NULL unless the cap stopped the walk (or the parent is no reply).
BRANCH_QUERY = (
    "WITH RECURSIVE chain (question, answer, depth) AS ("
    " SELECT id, NULL, 0 FROM messages WHERE id = ? AND role = 'user'"
    " UNION ALL"
    " SELECT a.reply_to, a.id, chain.depth + 1 FROM chain"
    " JOIN messages u ON u.id = chain.question"
    " JOIN messages a ON a.id = u.parent AND a.role = 'assistant' AND a.reply_to IS NOT NULL"
    " WHERE chain.depth < ?)"
    f" SELECT chain.depth, m.parent, {_M_COLUMNS}"
    " FROM chain JOIN messages m ON m.id IN (chain.question, chain.answer)"
    " ORDER BY chain.depth DESC, m.role DESC"
)

#: The newest message of a chat that a platform message carries (`platform_messages`, m011).
FIND_BY_PLATFORM_ID = (
    f"SELECT {_M_COLUMNS}"
    " FROM platform_messages p JOIN messages m ON m.id = p.message"
    " JOIN conversations v ON v.id = m.conversation JOIN chats c ON c.id = v.chat"
    " WHERE p.platform_id = ? AND c.platform = ? AND c.chat_id = ? AND c.thread_id = ?"
    " ORDER BY m.id DESC LIMIT 1"
)

#: Rows of a branch that go to the model (as `CONTEXT_QUERY` keeps them).
_SENDABLE = frozenset({MessageStatus.COMPLETE, MessageStatus.INTERRUPTED})

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
        row[20],
    )


#: `usage_report`'s groupings: the SQL of each group's key, and of what a person reads for it
#: (the newest name a user had; the chat's title, kept by `_keep_title`; the model; the date).
_REPORT_GROUPS = {
    "user": ("u.platform || ':' || u.user_id", "max(u.user_name)"),
    "chat": (
        "u.platform || ':' || u.chat_id || ':' || u.thread_id",
        "(SELECT c.title FROM chats c WHERE c.platform = u.platform AND c.chat_id = u.chat_id"
        " AND c.thread_id = u.thread_id)",
    ),
    "model": ("coalesce(u.model, '(unknown)')", "NULL"),
    "day": ("substr(u.at, 1, 10)", "NULL"),
}


def _inserted_id(row_id: int | None) -> int:
    """The id of the row a cursor just inserted. `sqlite3` types `lastrowid` as optional, for a
    cursor that has inserted nothing; every caller here has inserted one row first."""
    if row_id is None:
        raise StorageError("SQLite gave no id for the row just inserted.")
    return row_id


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


def _writable(path: Path) -> tuple[Path, bool]:
    """Raise unless this user could create or write the database file: the file if it is
    there, else the nearest folder above it that exists (the first start creates the rest).
    Returns the absolute path and whether the file exists."""
    location = str(path.absolute())
    if path.is_dir():
        raise StorageUnavailableError(
            f"Database path {location} is a folder. Point DATABASE_URL at a file inside it, "
            "e.g. sqlite:///data/parley.db."
        )
    folder = path.absolute().parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    exists = path.exists()
    if not os.access(folder, os.W_OK | os.X_OK) or (exists and not os.access(path, os.W_OK)):
        raise StorageUnavailableError(
            f"Database {location} cannot be written by this user ({folder} is not writable). "
            "Point DATABASE_URL at a folder this user can write to, or fix its owner."
        )
    return path.absolute(), exists


async def inspect_database(path: Path) -> StoreStatus:
    """What `SQLiteStore.open` would find at `path`, learnt without creating or migrating it.

    Raises the storage error `open` would raise: the path is a folder or cannot be written,
    the file is no database or a foreign one, or its schema is newer than this Parley's.
    """
    absolute, exists = await asyncio.to_thread(_writable, path)
    location = str(absolute)
    if not exists:
        return StoreStatus(location, exists=False, version=0, latest=LATEST_VERSION)
    try:
        async with aiosqlite.connect(f"{absolute.as_uri()}?mode=ro", uri=True) as db:
            await SQLiteStore.check_before_writing(db, location)
            version = await schema_version(db)
    except sqlite3.Error as exc:
        raise translate(exc, location) from exc
    return StoreStatus(location, exists=True, version=version, latest=LATEST_VERSION)


class SQLiteStore:
    """The SQLite backend of `storage.base.Store`. Build it with `await SQLiteStore.open(path)`."""

    def __init__(
        self,
        location: str,
        writer: aiosqlite.Connection,
        reader: aiosqlite.Connection,
        on_write: WriteObserver | None = None,
    ) -> None:
        self._location = location
        self._writer = writer
        self._reader = reader
        self._write_lock = asyncio.Lock()
        self._on_write = on_write
        self._titles: dict[tuple[str, str, str], str] = {}
        #: The replica the replies started here are written by (`serve_as`); None: none.
        self._replica: str | None = None

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        busy_timeout: float = BUSY_TIMEOUT_SECONDS,
        must_exist: bool = False,
        on_write: WriteObserver | None = None,
    ) -> SQLiteStore:
        """Open (creating if needed, unless `must_exist`) and migrate the database at `path`.

        Checks come before any write: a file that is not a database, holds someone else's
        tables, or was migrated by a newer Parley raises and is left byte-for-byte unchanged.
        `on_write` is told how long each later write took (the migration's are not timed).
        """
        location = await asyncio.to_thread(_prepare_folder, path, must_exist)
        try:
            writer = await _connect(path, busy_timeout, reader=False)
        except sqlite3.Error as exc:
            raise translate(exc, location) from exc
        try:
            await cls.check_before_writing(writer, location)
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
        return cls(location, writer, reader, on_write)

    @staticmethod
    async def check_before_writing(db: aiosqlite.Connection, location: str) -> None:
        """Refuse a database this Parley must not write: migrated by a newer one, or not
        Parley's at all (a version of 0 with tables in it)."""
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

    async def ping(self) -> None:
        """A read of the schema table on the reader connection: the file is open and readable
        and aiosqlite's thread answers. The writer is left alone, so a long write in progress
        does not read as a database that is down."""
        try:
            await self._reader.execute_fetchall("SELECT count(*) FROM sqlite_master")
        except sqlite3.Error as exc:
            raise translate(exc, self._location) from exc
        except ValueError as exc:  # aiosqlite's "Connection closed"
            raise StorageUnavailableError(f"Database {self._location} is closed.") from exc

    # Plumbing.

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction, taken with the write lock so no other write joins it."""
        started = time.perf_counter()
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
            finally:
                self._timed(started)

    async def _write(self, sql: str, parameters: Iterable[Any]) -> aiosqlite.Cursor:
        """A one-statement change: atomic on its own, so it skips BEGIN/COMMIT round trips."""
        started = time.perf_counter()
        async with self._write_lock:
            try:
                return await self._writer.execute(sql, parameters)
            except sqlite3.Error as exc:
                raise translate(exc, self._location) from exc
            finally:
                self._timed(started)

    def _timed(self, started: float) -> None:
        """Tell `on_write` how long a write took, from asking for the lock to the end (the
        wait is part of what a reply feels), failed writes included: they took time too."""
        if self._on_write is not None:
            self._on_write(time.perf_counter() - started)

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
            "SELECT model, system_prompt, image_generation, persona FROM chats"
            " WHERE platform = ? AND chat_id = ? AND thread_id = ?",
            _key(chat),
        )
        for model, system_prompt, image_generation, persona in rows:
            return ChatConfig(
                model=model,
                system_prompt=system_prompt,
                image_generation=None if image_generation is None else bool(image_generation),
                persona=persona,
            )
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

    async def set_chat_image_generation(self, chat: ChatKey, enabled: bool | None) -> None:
        async with self._transaction() as db:
            chat_row, _, _ = await self._ensure_chat(db, chat)
            await db.execute(
                "UPDATE chats SET image_generation = ? WHERE id = ?",
                (None if enabled is None else int(enabled), chat_row),
            )

    async def set_chat_persona(self, chat: ChatKey, persona: str | None) -> None:
        async with self._transaction() as db:
            chat_row, _, _ = await self._ensure_chat(db, chat)
            await db.execute(
                "UPDATE chats SET persona = ? WHERE id = ?", (_utf8_or_none(persona), chat_row)
            )

    # Usage.

    async def record_usage(self, record: UsageRecord) -> None:
        keys = [("user", f"{record.platform}:{record.user_id}")]
        keys.append(("chat", f"{record.platform}:{record.chat_id}:{record.thread_id}"))
        if record.guest:
            keys += [("guests", ALL_GUESTS), ("guests", record.platform)]
        periods = (period_start(record.at, "day"), period_start(record.at, "month"))
        cost = record.cost_micros or 0
        async with self._transaction() as db:
            await db.execute(
                "INSERT INTO usage (at, kind, platform, chat_id, thread_id, user_id, user_name,"
                " model, provider, prompt_tokens, completion_tokens, estimated, images_in,"
                " audio_seconds, images_out, cost_micros, guest, message)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    _timestamp(record.at),
                    record.kind.value,
                    _utf8(record.platform),
                    _utf8(record.chat_id),
                    _utf8(record.thread_id),
                    _utf8(record.user_id),
                    _utf8_or_none(record.user_name),
                    _utf8_or_none(record.model),
                    _utf8_or_none(record.provider),
                    record.prompt_tokens,
                    record.completion_tokens,
                    int(record.estimated),
                    record.images_in,
                    record.audio_seconds,
                    record.images_out,
                    record.cost_micros,
                    int(record.guest),
                    record.message_id,
                ),
            )
            await db.executemany(
                "INSERT INTO usage_totals (scope, key, period, tokens, cost_micros)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (scope, key, period) DO UPDATE SET"
                " tokens = tokens + excluded.tokens, cost_micros = cost_micros + excluded.cost_micros",
                [
                    (scope, _utf8(key), period, record.tokens, cost)
                    for scope, key in keys
                    for period in periods
                ],
            )

    async def usage_totals(self, keys: Sequence[UsageKey], now: datetime) -> dict[UsageKey, Totals]:
        wanted = {(k.scope, k.key, period_start(now, k.period)): k for k in keys}
        totals = {key: Totals() for key in keys}
        if not wanted:
            return totals
        clause = " OR ".join(["(scope = ? AND key = ? AND period = ?)"] * len(wanted))
        rows = await self._fetch(
            f"SELECT scope, key, period, tokens, cost_micros FROM usage_totals WHERE {clause}",
            [value for triple in wanted for value in triple],
        )
        for scope, key, period, tokens, cost in rows:
            totals[wanted[(scope, key, period)]] = Totals(tokens, cost)
        return totals

    async def usage_report(
        self,
        since: datetime | None,
        by: UsageGrouping,
        *,
        limit: int | None = None,
        platform: str | None = None,
        chat_id: str | None = None,
        user_id: str | None = None,
    ) -> list[UsageRow]:
        key, label = _REPORT_GROUPS[by]
        conditions: list[str] = []
        values: list[object] = []
        for column, value in (
            ("u.at >= ?", None if since is None else _timestamp(since)),
            ("u.platform = ?", platform),
            ("u.chat_id = ?", chat_id),
            ("u.user_id = ?", user_id),
        ):
            if value is not None:
                conditions.append(column)
                values.append(value)
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        rows = await self._fetch(
            f"SELECT {key} AS k, {label}, count(*), sum(u.prompt_tokens),"
            " sum(u.completion_tokens), coalesce(sum(u.cost_micros), 0),"
            " sum(CASE WHEN u.estimated THEN u.prompt_tokens + u.completion_tokens ELSE 0 END),"
            " sum(u.cost_micros IS NULL)"
            f" FROM usage u{where} GROUP BY k"
            " ORDER BY 6 DESC, sum(u.prompt_tokens + u.completion_tokens) DESC, k"
            + ("" if limit is None else f" LIMIT {int(limit)}"),
            values,
        )
        return [
            UsageRow(
                key=str(k),
                label=str(shown or k),
                calls=calls,
                prompt_tokens=prompt,
                completion_tokens=completion,
                cost_micros=cost,
                estimated_share=(estimated / (prompt + completion)) if prompt + completion else 0.0,
                unpriced=unpriced,
            )
            for k, shown, calls, prompt, completion, cost, estimated, unpriced in rows
        ]

    # Budget overrides.

    async def set_budget_override(
        self, scope: Literal["user", "chat"], key: str, name: str, value: int | None
    ) -> None:
        async with self._transaction() as db:
            if value is None:
                await db.execute(
                    "DELETE FROM budget_overrides WHERE scope = ? AND key = ? AND name = ?",
                    (scope, _utf8(key), name),
                )
            else:
                await db.execute(
                    "INSERT INTO budget_overrides (scope, key, name, value) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (scope, key, name) DO UPDATE SET value = excluded.value",
                    (scope, _utf8(key), name, value),
                )

    async def budget_overrides(self) -> list[BudgetOverride]:
        rows = await self._fetch("SELECT scope, key, name, value FROM budget_overrides")
        return [BudgetOverride(scope, key, name, value) for scope, key, name, value in rows]

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
        chat_title: str | None = None,
        images: Sequence[MessageImage] = (),
        parent: int | None = None,
    ) -> int:
        ids = json.dumps([] if platform_message_id is None else [platform_message_id])
        values = (
            _utf8(author_id),
            _utf8(author_name),
            _utf8(text),
            ids,
            len(images),
            parent,
            *_key(chat),
        )
        message_id = None
        handling = HANDLING.get()
        if not images and handling is None:
            # One statement into the chat's newest conversation: the hot path, one round trip.
            cursor = await self._write(_INSERT_USER_MESSAGE, values)
            message_id = _inserted_id(cursor.lastrowid) if cursor.rowcount else None
        if message_id is None:
            # Hashed before the write lock is taken: other chats' writes need not wait on it.
            named = [(image.sha256, image) for image in images]
            async with self._transaction() as db:
                if handling is not None:  # handled before, by a replica that died since
                    rows = await db.execute_fetchall(
                        "SELECT message FROM inbox WHERE platform = ? AND update_id = ?",
                        (handling.platform, handling.update_id),
                    )
                    stored = next(iter(rows), (None,))[0]
                    if stored is not None:
                        return int(stored)
                cursor = await db.execute(_INSERT_USER_MESSAGE, values)
                if not cursor.rowcount:  # a chat's first message creates the chat
                    await self._ensure_chat(db, chat)
                    cursor = await db.execute(_INSERT_USER_MESSAGE, values)
                message_id = _inserted_id(cursor.lastrowid)
                for position, (sha256, image) in enumerate(named):
                    await self._attach_image(db, message_id, position, sha256, image)
                if handling is not None:
                    await db.execute(
                        "UPDATE inbox SET message = ? WHERE platform = ? AND update_id = ?",
                        (message_id, handling.platform, handling.update_id),
                    )
        if chat_title:
            await self._keep_title(chat, chat_title)
        return message_id

    @staticmethod
    async def _attach_image(
        db: aiosqlite.Connection, message_id: int, position: int, sha256: str, image: MessageImage
    ) -> None:
        """Store `image` once under its hash (a second message carrying it reuses the row) and
        name it as the message's `position`-th."""
        await db.execute(
            "INSERT INTO images (sha256, media_type, width, height, data, created_at)"
            f" VALUES (?, ?, ?, ?, ?, {_NOW}) ON CONFLICT (sha256) DO NOTHING",
            (sha256, _utf8(image.media_type), image.width, image.height, image.data),
        )
        await db.execute(
            "INSERT INTO message_images (message, position, image)"
            " SELECT ?, ?, id FROM images WHERE sha256 = ?",
            (message_id, position, sha256),
        )

    async def _keep_title(self, chat: ChatKey, title: str) -> None:
        """Write the chat's title if it changed since this process last wrote it."""
        key, title = _key(chat), _utf8(title)
        if self._titles.get(key) == title:
            return
        await self._write(
            "UPDATE chats SET title = ? WHERE platform = ? AND chat_id = ? AND thread_id = ?"
            " AND title IS NOT ?",
            (title, *key, title),
        )
        if len(self._titles) >= TITLE_CACHE_SIZE:
            self._titles.clear()
        self._titles[key] = title

    async def start_reply(self, reply_to: int, model: str | None) -> int:
        insert = (
            "INSERT INTO messages (conversation, reply_to, role, status, model, replica,"
            f" created_at, updated_at) SELECT conversation, id, 'assistant', 'streaming', ?, ?,"
            f" {_NOW}, {_NOW} FROM messages WHERE id = ? AND role = 'user'",
            (_utf8_or_none(model), self._replica, reply_to),
        )
        handling = HANDLING.get()
        if handling is None:
            cursor = await self._write(*insert)
        else:  # the update is answered from here on: its row is done with the reply's
            async with self._transaction() as db:
                cursor = await db.execute(*insert)
                if cursor.rowcount:
                    await db.execute(_INBOX_DONE, (handling.platform, handling.update_id))
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
        if outcome.reasoning:
            async with self._transaction() as db:
                await db.execute(*self._finish_statement(message_id, outcome))
                await db.execute(
                    "INSERT OR REPLACE INTO reply_reasoning (message, text) VALUES (?, ?)",
                    (message_id, _utf8(outcome.reasoning)),
                )
            return
        await self._write(*self._finish_statement(message_id, outcome))

    async def reply_reasoning(self, message_id: int) -> str | None:
        rows = await self._fetch(
            "SELECT text FROM reply_reasoning WHERE message = ?", (message_id,)
        )
        return str(rows[0][0]) if rows else None

    @staticmethod
    def _finish_statement(message_id: int, outcome: ReplyOutcome) -> tuple[str, tuple[Any, ...]]:
        return (
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
            f" WHERE {_UNFINISHED} AND (replica IS NULL OR {_DEAD_REPLICA})"
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
            " WHERE m.delivery_pending = 1 AND c.platform = ?"
            " AND (m.replica IS NULL OR NOT EXISTS (SELECT 1 FROM replicas r"
            f" WHERE r.id = m.replica AND r.expires_at > {_EPOCH})) ORDER BY m.id",
            (_utf8(platform),),
        )
        return [
            UndeliveredReply(id_, platform_, chat_id, thread_id, text, tuple(json.loads(ids)))
            for id_, platform_, chat_id, thread_id, text, ids in rows
        ]

    # Replicas (m013): kept as on PostgreSQL, though one SQLite process has no other replica.

    def serve_as(self, replica: str) -> None:
        self._replica = replica

    async def heartbeat(self, replica: str, lease_seconds: float) -> None:
        await self._write(
            f"INSERT INTO replicas (id, started_at, expires_at) VALUES (?, {_NOW}, {_EPOCH} + ?)"
            " ON CONFLICT (id) DO UPDATE SET expires_at = excluded.expires_at",
            (replica, lease_seconds),
        )

    async def leave(self, replica: str) -> None:
        await self._write("DELETE FROM replicas WHERE id = ?", (replica,))

    async def interrupt_orphaned(self) -> int:
        async with self._transaction() as db:  # the write lock: one sweeper at a time
            cursor = await db.execute(
                f"UPDATE messages SET status = 'interrupted', updated_at = {_NOW}"
                f" WHERE replica IS NOT NULL AND {_UNFINISHED} AND {_DEAD_REPLICA}"
            )
            await db.execute(f"DELETE FROM replicas WHERE expires_at <= {_EPOCH}")
            await db.execute(
                f"DELETE FROM inbox WHERE done = 1 AND received_at < {_EPOCH} - ?",
                (INBOX_KEEP_SECONDS,),
            )
        return cursor.rowcount

    async def inbox_add(self, platform: str, update_id: int, chat_key: str, body: str) -> bool:
        cursor = await self._write(
            "INSERT INTO inbox (platform, update_id, chat_key, body, received_at)"
            f" VALUES (?, ?, ?, ?, {_EPOCH}) ON CONFLICT DO NOTHING",
            (_utf8(platform), update_id, _utf8(chat_key), _utf8(body)),
        )
        return bool(cursor.rowcount)

    async def inbox_pending(self, platform: str, chat_key: str) -> list[InboxEntry]:
        rows = await self._fetch(
            "SELECT update_id, body FROM inbox WHERE platform = ? AND chat_key = ? AND done = 0"
            " ORDER BY update_id",
            (_utf8(platform), _utf8(chat_key)),
        )
        return [InboxEntry(update_id, body) for update_id, body in rows]

    async def inbox_chats(self, platform: str) -> list[str]:
        rows = await self._fetch(
            "SELECT DISTINCT chat_key FROM inbox WHERE platform = ? AND done = 0",
            (_utf8(platform),),
        )
        return [row[0] for row in rows]

    async def inbox_done(self, platform: str, update_id: int) -> None:
        await self._write(_INBOX_DONE, (_utf8(platform), update_id))

    # Reading.

    async def context_messages(self, up_to: int, limit: int) -> list[StoredMessage]:
        rows = await self._fetch(CONTEXT_QUERY, (up_to, up_to, up_to, limit))
        return [_message(row) for row in reversed(rows)]

    async def branch_messages(self, up_to: int, limit: int, max_turns: int) -> list[StoredMessage]:
        rows = await self._fetch(BRANCH_QUERY, (up_to, min(limit, max_turns)))
        if not rows:
            return []
        root_depth, root_parent = rows[0][0], rows[0][1]
        branch = [_message(row[2:]) for row in rows]
        # The question and answer a branch is made of are kept as CONTEXT_QUERY keeps them.
        branch = [m for m in branch if m.status in _SENDABLE and (m.role is Role.USER or m.text)]
        earlier: list[StoredMessage] = []
        room = limit - len(branch)
        if root_parent is None and root_depth < max_turns and room > 0:
            # The root followed its conversation's newest turn: that history comes before it.
            earlier = await self.context_messages(rows[0][2], room + 1)
            earlier = earlier[:-1]  # the root itself is the branch's first message
        return (earlier + branch)[-limit:]

    async def find_message(self, chat: ChatKey, platform_message_id: str) -> StoredMessage | None:
        rows = await self._fetch(FIND_BY_PLATFORM_ID, (_utf8(platform_message_id), *_key(chat)))
        return _message(rows[0]) if rows else None

    async def message_images(self, message_ids: Collection[int]) -> dict[int, list[MessageImage]]:
        found: dict[int, list[MessageImage]] = {}
        if not message_ids:
            return found
        # json_each takes any number of ids as one parameter (SQLite caps bound parameters).
        rows = await self._fetch(
            "SELECT m.message, i.data, i.media_type, i.width, i.height"
            " FROM message_images m JOIN images i ON i.id = m.image"
            " WHERE m.message IN (SELECT value FROM json_each(?))"
            " ORDER BY m.message, m.position",
            (json.dumps(sorted(set(message_ids))),),
        )
        for message_id, data, media_type, width, height in rows:
            found.setdefault(message_id, []).append(MessageImage(data, media_type, width, height))
        return found

    async def history_summary(self, conversation_id: int) -> HistorySummary | None:
        rows = await self._fetch(
            "SELECT text, through, model FROM history_summaries WHERE conversation = ?",
            (conversation_id,),
        )
        return next((HistorySummary(*row) for row in rows), None)

    async def save_history_summary(self, conversation_id: int, summary: HistorySummary) -> None:
        await self._write(
            "INSERT INTO history_summaries (conversation, through, text, model, updated_at)"
            f" VALUES (?, ?, ?, ?, {_NOW}) ON CONFLICT (conversation) DO UPDATE SET"
            " through = excluded.through, text = excluded.text, model = excluded.model,"
            " updated_at = excluded.updated_at",
            (conversation_id, summary.through, _utf8(summary.text), _utf8(summary.model)),
        )

    async def find_chats(self, chat_id: str, platform: str | None = None) -> list[ChatRecord]:
        rows = await self._fetch(
            f"SELECT {_CHAT_COLUMNS} FROM chats WHERE chat_id = ? AND (? IS NULL OR platform = ?)"
            " ORDER BY platform, thread_id",
            (_utf8(chat_id), _utf8_or_none(platform), _utf8_or_none(platform)),
        )
        return [ChatRecord(*row) for row in rows]

    async def list_chats(self, platform: str | None = None) -> list[ChatSummary]:
        platform = _utf8_or_none(platform)
        rows = await self._fetch(LIST_CHATS_QUERY, (platform, platform))
        return [ChatSummary(*row) for row in rows]

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

    # Whole tables (`storage.base.TableCopy`, for `parley history copy`).

    async def tables(self) -> dict[str, list[str]]:
        names = await self._fetch(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
        found: dict[str, list[str]] = {}
        for (name,) in names:
            columns = await self._fetch(f'PRAGMA table_info("{name}")')
            found[name] = [column[1] for column in columns]
        return found

    async def table_rows(self, table: str, columns: Sequence[str]) -> list[Row]:
        listed = ", ".join(f'"{column}"' for column in columns)
        return [tuple(row) for row in await self._fetch(f'SELECT {listed} FROM "{table}"')]

    async def load_tables(self, tables: Sequence[tuple[str, Sequence[str], Sequence[Row]]]) -> None:
        async with self._transaction() as db:
            for table, columns, rows in tables:
                listed = ", ".join(f'"{column}"' for column in columns)
                marks = ", ".join("?" * len(columns))
                # A trigger fills platform_messages from messages.platform_ids (m011).
                verb = "INSERT OR IGNORE" if table == DERIVED_TABLE else "INSERT"
                await db.executemany(
                    f'{verb} INTO "{table}" ({listed}) VALUES ({marks})',
                    [tuple(self.as_stored(value) for value in row) for row in rows],
                )

    def as_stored(self, value: object) -> object:
        return _utf8(value) if isinstance(value, str) else value
