"""History on PostgreSQL through asyncpg: the same `Store` as `storage.sqlite.store`, on a pool.

Why a pool and no write lock: PostgreSQL runs many writers at once, each statement on a
connection of its own, so one chat's write never waits for another's (SQLite's one writer is
why the SQLite store queues writes behind a lock). Where the SQLite store relied on that lock
for a read-then-write, this one asks the database instead: a new chat is inserted with
ON CONFLICT DO NOTHING and an existing one locked with FOR UPDATE before a conversation is
added, so two first messages at once make one chat and one conversation.

The SQL mirrors the SQLite store's statement for statement (same columns, same order of
turns), so both pass one test suite; the differences are PostgreSQL's spelling ($n, casts of
parameters in select lists, `sum()` cast back from numeric, IS DISTINCT FROM).

Text: PostgreSQL cannot hold NUL characters in `text` (SQLite can), so besides the lone
surrogates both stores replace, this one stores a NUL as U+FFFD too (`_text`).

Cancellation: a coroutine cancelled mid-transaction leaves through `conn.transaction()`'s
exit, which rolls back; asyncpg resets a connection before the pool hands it out again.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Collection, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

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
from storage.errors import ForeignDatabaseError, SchemaTooNewError, StorageError
from storage.postgres.errors import DRIVER_ERRORS, translate
from storage.postgres.migrations import LATEST_VERSION, VERSION_TABLE, migrate, schema_version
from storage.values import timestamp as _timestamp
from storage.values import utf8 as _utf8

log = logging.getLogger(__name__)

if TYPE_CHECKING:  # generic in the stubs only
    from asyncpg.pool import PoolConnectionProxy

    #: A connection borrowed from the pool.
    Pooled = PoolConnectionProxy[asyncpg.Record]

#: Connections the pool keeps open at most. A reply holds one for a statement or a short
#: transaction, never while the model streams, so ten serve hundreds of chats; a server's
#: default max_connections (100) leaves room for several replicas and an operator's psql.
POOL_SIZE = 10
#: How long connecting (and each pooled connection's first handshake) may take.
CONNECT_TIMEOUT_SECONDS = 10.0
#: How long a statement waits for another session's row lock before failing as locked
#: (the busy timeout's counterpart).
LOCK_TIMEOUT_SECONDS = 5.0

#: Query parameters of a PostgreSQL URL that hold a secret (libpq's names).
_SECRETS = frozenset({"password", "sslpassword"})
#: The channel an inbox insert NOTIFYs, with "platform chat_key" as payload
#: (`storage.postgres.coordination` LISTENs on it).
INBOX_CHANNEL = "parley_inbox"
#: How long a handled update's id is kept against a late second delivery: Telegram keeps an
#: update it could not deliver for 24 hours.
INBOX_KEEP_SECONDS = 2 * 24 * 3600.0
#: Seconds since the epoch by the database's clock: leases compare times of several hosts.
_EPOCH = "extract(epoch from clock_timestamp())"
#: A reply row's replica is gone: no lease of it is alive.
_DEAD_REPLICA = (
    f"NOT EXISTS (SELECT 1 FROM replicas r WHERE r.id = m.replica AND r.expires_at > {_EPOCH})"
)
_UNFINISHED = "(m.status = 'streaming' OR (m.status = 'complete' AND m.delivery_pending = 1))"

#: UTC timestamps as ISO 8601 text, exactly the SQLite store's form (`_NOW` there).
_NOW = "to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"

_MESSAGE_COLUMNS = (
    "id, conversation, role, text, status, author_id, author_name, reply_to, model, provider, "
    "first_token_ms, total_ms, prompt_tokens, completion_tokens, total_tokens, error, "
    "created_at, updated_at, platform_ids, tokens_estimated, image_count"
)
_M_COLUMNS = ", ".join(f"m.{column}" for column in _MESSAGE_COLUMNS.split(", "))
_CHAT_COLUMNS = "id, platform, chat_id, thread_id, model, system_prompt, created_at, title"
TITLE_CACHE_SIZE = 10_000

LIST_CHATS_QUERY = (
    "WITH per_chat AS ("
    " SELECT v.chat AS chat, count(*) AS conversations, max(v.created_at) AS started,"
    " sum((SELECT count(*) FROM messages m WHERE m.conversation = v.id))::bigint AS messages,"
    " max((SELECT max(m.id) FROM messages m WHERE m.conversation = v.id)) AS newest"
    " FROM conversations v GROUP BY v.chat)"
    " SELECT c.platform, c.chat_id, c.thread_id, c.title,"
    " coalesce(p.conversations, 0), coalesce(p.messages, 0),"
    " coalesce((SELECT m.updated_at FROM messages m WHERE m.id = p.newest), p.started,"
    " c.created_at) AS last_activity"
    " FROM chats c LEFT JOIN per_chat p ON p.chat = c.id"
    " WHERE $1::text IS NULL OR c.platform = $1"
    " ORDER BY last_activity DESC, p.newest DESC NULLS LAST, c.id DESC"
)

#: The hot read, as the SQLite store's: one backwards range scan of `messages_by_turn`.
CONTEXT_QUERY = (
    f"SELECT {_MESSAGE_COLUMNS} FROM messages"
    " WHERE conversation = (SELECT conversation FROM messages WHERE id = $1)"
    " AND coalesce(reply_to, id) <= $1 AND coalesce(reply_to, 0) < $1"
    " AND status IN ('complete', 'interrupted') AND (role = 'user' OR text != '')"
    " ORDER BY coalesce(reply_to, id) DESC, id DESC LIMIT $2"
)

_INSERT_USER_MESSAGE = (
    "INSERT INTO messages (conversation, role, author_id, author_name, text, status,"
    " platform_ids, image_count, parent, created_at, updated_at)"
    f" SELECT v.id, 'user', $1::text, $2::text, $3::text, 'complete', $4::text, $5::int,"
    f" $6::bigint, {_NOW}, {_NOW}"
    " FROM chats c JOIN conversations v ON v.chat = c.id"
    " WHERE c.platform = $7 AND c.chat_id = $8 AND c.thread_id = $9 ORDER BY v.id DESC LIMIT 1"
    " RETURNING id"
)

_INBOX_DONE_AT = (
    "UPDATE inbox SET done = 1, body = '' WHERE platform = ${} AND update_id = ${}::bigint"
)
_INBOX_DONE = _INBOX_DONE_AT.format(1, 2)

BRANCH_QUERY = (
    "WITH RECURSIVE chain (question, answer, depth) AS ("
    " SELECT id, NULL::bigint, 0 FROM messages WHERE id = $1 AND role = 'user'"
    " UNION ALL"
    " SELECT a.reply_to, a.id, chain.depth + 1 FROM chain"
    " JOIN messages u ON u.id = chain.question"
    " JOIN messages a ON a.id = u.parent AND a.role = 'assistant' AND a.reply_to IS NOT NULL"
    " WHERE chain.depth < $2)"
    f" SELECT chain.depth, m.parent, {_M_COLUMNS}"
    " FROM chain JOIN messages m ON m.id IN (chain.question, chain.answer)"
    " ORDER BY chain.depth DESC, m.role DESC"
)

FIND_BY_PLATFORM_ID = (
    f"SELECT {_M_COLUMNS}"
    " FROM platform_messages p JOIN messages m ON m.id = p.message"
    " JOIN conversations v ON v.id = m.conversation JOIN chats c ON c.id = v.chat"
    " WHERE p.platform_id = $1 AND c.platform = $2 AND c.chat_id = $3 AND c.thread_id = $4"
    " ORDER BY m.id DESC LIMIT 1"
)

_SENDABLE = frozenset({MessageStatus.COMPLETE, MessageStatus.INTERRUPTED})
_ROLES = {role.value: role for role in Role}
_STATUSES = {status.value: status for status in MessageStatus}
_NO_IDS = "[]"

#: `usage_report`'s groupings: each group's key, what a person reads for it, and what to
#: GROUP BY (PostgreSQL, unlike SQLite, wants the columns a label's subquery reads grouped).
_REPORT_GROUPS = {
    "user": ("u.platform || ':' || u.user_id", "max(u.user_name)", "k"),
    "chat": (
        "u.platform || ':' || u.chat_id || ':' || u.thread_id",
        "(SELECT c.title FROM chats c WHERE c.platform = u.platform AND c.chat_id = u.chat_id"
        " AND c.thread_id = u.thread_id)",
        "k, u.platform, u.chat_id, u.thread_id",
    ),
    "model": ("coalesce(u.model, '(unknown)')", "NULL", "k"),
    "day": ("substr(u.at, 1, 10)", "NULL", "k"),
}


def _message(row: Sequence[Any] | asyncpg.Record) -> StoredMessage:
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


def _text(text: str) -> str:
    """`text` as PostgreSQL can hold it: valid UTF-8 (as `_utf8` makes it) without NUL."""
    text = _utf8(text)
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


def _text_or_none(text: str | None) -> str | None:
    return None if text is None else _text(text)


def _key(chat: ChatKey) -> tuple[str, str, str]:
    return (_text(chat.platform), _text(chat.chat_id), _text(chat.thread_id))


def _changed(status: str) -> int:
    """The row count of an asyncpg command status ("UPDATE 3", "INSERT 0 1")."""
    return int(status.rsplit(" ", 1)[-1])


def location_of(url: str) -> str:
    """The URL as messages and logs show it: everything but the password (in `user:password@`
    or in the query, `?password=`, which libpq and asyncpg read too)."""
    parts = urlsplit(url)
    query = urlencode(
        [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in _SECRETS]
    )
    if query != parts.query:
        parts = parts._replace(query=query)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if at and ":" in userinfo:
        parts = parts._replace(netloc=f"{userinfo.partition(':')[0]}@{hostport}")
    return urlunsplit(parts)


async def _setup(conn: asyncpg.Connection) -> None:
    """Each pooled connection's session: row locks wait at most LOCK_TIMEOUT_SECONDS."""
    await conn.execute(f"SET lock_timeout = '{int(LOCK_TIMEOUT_SECONDS * 1000)}ms'")


async def _connect(url: str, location: str) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(url, timeout=CONNECT_TIMEOUT_SECONDS)
    except DRIVER_ERRORS as exc:
        raise translate(exc, location) from exc


async def inspect_database(url: str) -> StoreStatus:
    """What `PostgresStore.open` would find at `url`, learnt without changing anything.

    A PostgreSQL database exists before Parley first connects (the server creates none), so
    `exists` is always True; a new one reads as version 0."""
    location = location_of(url)
    conn = await _connect(url, location)
    try:
        await PostgresStore.check_before_writing(conn, location)
        version = await schema_version(conn)
    except DRIVER_ERRORS as exc:
        raise translate(exc, location) from exc
    finally:
        await conn.close()
    return StoreStatus(location, exists=True, version=version, latest=LATEST_VERSION)


class PostgresStore:
    """The PostgreSQL backend of `storage.base.Store`. Build it with `await
    PostgresStore.open(url)`."""

    def __init__(
        self, location: str, pool: asyncpg.Pool, on_write: WriteObserver | None = None
    ) -> None:
        self._location = location
        self._pool = pool
        self._on_write = on_write
        self._titles: dict[tuple[str, str, str], str] = {}
        #: The replica the replies started here are written by (`serve_as`); None: none.
        self._replica: str | None = None

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        pool_size: int = POOL_SIZE,
        on_write: WriteObserver | None = None,
    ) -> PostgresStore:
        """Connect to the database `url` names and migrate it.

        Checks come before any write: a database holding someone else's tables, or migrated
        by a newer Parley, raises and is left unchanged. Migrating happens on one connection
        under an advisory lock (`storage.postgres.migrations`), before the pool opens."""
        location = location_of(url)
        conn = await _connect(url, location)
        try:
            await cls.check_before_writing(conn, location)
            applied = await migrate(conn)
            if applied:
                log.info("Migrated database %s: %s", location, ", ".join(applied))
        except DRIVER_ERRORS as exc:
            raise translate(exc, location) from exc
        finally:
            await conn.close()
        try:
            pool = await asyncpg.create_pool(
                url,
                min_size=1,
                max_size=pool_size,
                timeout=CONNECT_TIMEOUT_SECONDS,
                init=_setup,
            )
        except DRIVER_ERRORS as exc:
            raise translate(exc, location) from exc
        return cls(location, pool, on_write)

    @staticmethod
    async def check_before_writing(conn: asyncpg.Connection, location: str) -> None:
        """Refuse a database this Parley must not write: migrated by a newer one, or not
        Parley's at all (no version table, yet tables in its schema)."""
        version = await schema_version(conn)
        if version > LATEST_VERSION:
            raise SchemaTooNewError(
                f"Database {location} has schema version {version}, newer than this Parley "
                f"knows ({LATEST_VERSION}). It was left unchanged: upgrade Parley, or point "
                "DATABASE_URL at another database."
            )
        if version == 0:
            others = await conn.fetchval(
                "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()"
                " AND tablename != $1",
                VERSION_TABLE,
            )
            if others:
                raise ForeignDatabaseError(
                    f"Database {location} already holds tables that are not Parley's. It was "
                    "left unchanged: point DATABASE_URL at a new (empty) or a Parley database."
                )

    @property
    def location(self) -> str:
        return self._location

    async def close(self) -> None:
        await self._pool.close()

    async def ping(self) -> None:
        """A trivial query on a pooled connection: the server answers and a connection is free."""
        await self._fetch("SELECT 1")

    # Plumbing.

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[Pooled]:
        """One write transaction on a connection of its own."""
        with self._writing():
            async with self._pool.acquire() as conn, conn.transaction():
                yield conn

    async def _write(self, sql: str, *parameters: Any) -> str:
        """A one-statement change (atomic on its own); returns its command status."""
        with self._writing():
            return str(await self._pool.execute(sql, *parameters))

    async def _write_returning(self, sql: str, *parameters: Any) -> Any:
        """A one-statement change whose RETURNING value is wanted (None: no row changed)."""
        with self._writing():
            return await self._pool.fetchval(sql, *parameters)

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """Around every write: the driver's errors as storage errors, the time to `on_write`."""
        started = time.perf_counter()
        try:
            yield
        except DRIVER_ERRORS as exc:
            raise translate(exc, self._location) from exc
        finally:
            self._timed(started)

    def _timed(self, started: float) -> None:
        if self._on_write is not None:
            self._on_write(time.perf_counter() - started)

    async def _fetch(self, sql: str, *parameters: Any) -> list[asyncpg.Record]:
        try:
            return list(await self._pool.fetch(sql, *parameters))
        except DRIVER_ERRORS as exc:
            raise translate(exc, self._location) from exc

    async def _ensure_chat(self, conn: Pooled, chat: ChatKey) -> tuple[int, int, bool]:
        """(chat row, current conversation, created now); a new chat gets its first
        conversation. An existing chat's row stays locked until the transaction ends, so a
        concurrent caller cannot add a second first conversation."""
        key = _key(chat)
        chat_row = await conn.fetchval(
            "INSERT INTO chats (platform, chat_id, thread_id, created_at)"
            f" VALUES ($1, $2, $3, {_NOW}) ON CONFLICT (platform, chat_id, thread_id) DO NOTHING"
            " RETURNING id",
            *key,
        )
        if chat_row is not None:
            return chat_row, await self._insert_conversation(conn, chat_row), True
        row = await conn.fetchrow(
            "SELECT c.id FROM chats c WHERE c.platform = $1 AND c.chat_id = $2"
            " AND c.thread_id = $3 FOR UPDATE",
            *key,
        )
        if row is None:  # deleted between the two statements
            raise StorageError(f"Database {self._location}: chat {key} vanished; try again.")
        chat_row = row[0]
        conversation = await conn.fetchval(
            "SELECT id FROM conversations WHERE chat = $1 ORDER BY id DESC LIMIT 1", chat_row
        )
        if conversation is not None:
            return chat_row, conversation, False
        return chat_row, await self._insert_conversation(conn, chat_row), False

    @staticmethod
    async def _insert_conversation(conn: Pooled, chat_row: int) -> int:
        return int(
            await conn.fetchval(
                f"INSERT INTO conversations (chat, created_at) VALUES ($1, {_NOW}) RETURNING id",
                chat_row,
            )
        )

    # Chats and their settings.

    async def chat_config(self, chat: ChatKey) -> ChatConfig:
        rows = await self._fetch(
            "SELECT model, system_prompt, image_generation, persona FROM chats"
            " WHERE platform = $1 AND chat_id = $2 AND thread_id = $3",
            *_key(chat),
        )
        for model, system_prompt, image_generation, persona in rows:
            return ChatConfig(
                model=model,
                system_prompt=system_prompt,
                image_generation=None if image_generation is None else bool(image_generation),
                persona=persona,
            )
        return ChatConfig()

    async def _set_chat_column(self, chat: ChatKey, column: str, value: object) -> None:
        async with self._transaction() as conn:
            chat_row, _, _ = await self._ensure_chat(conn, chat)
            await conn.execute(f"UPDATE chats SET {column} = $1 WHERE id = $2", value, chat_row)

    async def set_chat_model(self, chat: ChatKey, model: str | None) -> None:
        await self._set_chat_column(chat, "model", _text_or_none(model))

    async def set_chat_system_prompt(self, chat: ChatKey, prompt: str | None) -> None:
        await self._set_chat_column(chat, "system_prompt", _text_or_none(prompt))

    async def set_chat_image_generation(self, chat: ChatKey, enabled: bool | None) -> None:
        await self._set_chat_column(
            chat, "image_generation", None if enabled is None else int(enabled)
        )

    async def set_chat_persona(self, chat: ChatKey, persona: str | None) -> None:
        await self._set_chat_column(chat, "persona", _text_or_none(persona))

    # Usage.

    async def record_usage(self, record: UsageRecord) -> None:
        keys = [("user", f"{record.platform}:{record.user_id}")]
        keys.append(("chat", f"{record.platform}:{record.chat_id}:{record.thread_id}"))
        if record.guest:
            keys += [("guests", ALL_GUESTS), ("guests", record.platform)]
        periods = (period_start(record.at, "day"), period_start(record.at, "month"))
        cost = record.cost_micros or 0
        async with self._transaction() as conn:
            await conn.execute(
                "INSERT INTO usage (at, kind, platform, chat_id, thread_id, user_id, user_name,"
                " model, provider, prompt_tokens, completion_tokens, estimated, images_in,"
                " audio_seconds, images_out, cost_micros, guest, message)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15,"
                " $16, $17, $18)",
                _timestamp(record.at),
                record.kind.value,
                _text(record.platform),
                _text(record.chat_id),
                _text(record.thread_id),
                _text(record.user_id),
                _text_or_none(record.user_name),
                _text_or_none(record.model),
                _text_or_none(record.provider),
                record.prompt_tokens,
                record.completion_tokens,
                int(record.estimated),
                record.images_in,
                float(record.audio_seconds),
                record.images_out,
                record.cost_micros,
                int(record.guest),
                record.message_id,
            )
            await conn.executemany(
                "INSERT INTO usage_totals (scope, key, period, tokens, cost_micros)"
                " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (scope, key, period) DO UPDATE SET"
                " tokens = usage_totals.tokens + excluded.tokens,"
                " cost_micros = usage_totals.cost_micros + excluded.cost_micros",
                [
                    (scope, _text(key), period, record.tokens, cost)
                    for scope, key in keys
                    for period in periods
                ],
            )

    async def usage_totals(self, keys: Sequence[UsageKey], now: datetime) -> dict[UsageKey, Totals]:
        wanted = {(k.scope, _text(k.key), period_start(now, k.period)): k for k in keys}
        totals = {key: Totals() for key in keys}
        if not wanted:
            return totals
        scopes, names, periods = (list(column) for column in zip(*wanted, strict=True))
        rows = await self._fetch(
            "SELECT t.scope, t.key, t.period, t.tokens, t.cost_micros FROM usage_totals t"
            " JOIN unnest($1::text[], $2::text[], $3::text[]) AS w (scope, key, period)"
            " USING (scope, key, period)",
            scopes,
            names,
            periods,
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
        key, label, grouping = _REPORT_GROUPS[by]
        conditions: list[str] = []
        values: list[object] = []
        for column, value in (
            ("u.at >= ", None if since is None else _timestamp(since)),
            ("u.platform = ", _text_or_none(platform)),
            ("u.chat_id = ", _text_or_none(chat_id)),
            ("u.user_id = ", _text_or_none(user_id)),
        ):
            if value is not None:
                values.append(value)
                conditions.append(f"{column}${len(values)}")
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        rows = await self._fetch(
            f"SELECT {key} AS k, {label}, count(*), sum(u.prompt_tokens)::bigint,"
            " sum(u.completion_tokens)::bigint, coalesce(sum(u.cost_micros), 0)::bigint,"
            " sum(CASE WHEN u.estimated = 1 THEN u.prompt_tokens + u.completion_tokens"
            " ELSE 0 END)::bigint,"
            " count(*) FILTER (WHERE u.cost_micros IS NULL)"
            f" FROM usage u{where} GROUP BY {grouping}"
            " ORDER BY 6 DESC, sum(u.prompt_tokens + u.completion_tokens) DESC, k"
            + ("" if limit is None else f" LIMIT {int(limit)}"),
            *values,
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
        if value is None:
            await self._write(
                "DELETE FROM budget_overrides WHERE scope = $1 AND key = $2 AND name = $3",
                scope,
                _text(key),
                name,
            )
            return
        await self._write(
            "INSERT INTO budget_overrides (scope, key, name, value) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (scope, key, name) DO UPDATE SET value = excluded.value",
            scope,
            _text(key),
            name,
            value,
        )

    async def budget_overrides(self) -> list[BudgetOverride]:
        rows = await self._fetch("SELECT scope, key, name, value FROM budget_overrides")
        return [BudgetOverride(scope, key, name, value) for scope, key, name, value in rows]

    async def new_conversation(self, chat: ChatKey) -> int:
        async with self._transaction() as conn:
            chat_row, conversation, created = await self._ensure_chat(conn, chat)
            if created:
                return conversation
            return await self._insert_conversation(conn, chat_row)

    async def current_conversation(self, chat: ChatKey) -> int | None:
        rows = await self._fetch(
            "SELECT v.id FROM chats c JOIN conversations v ON v.chat = c.id"
            " WHERE c.platform = $1 AND c.chat_id = $2 AND c.thread_id = $3"
            " ORDER BY v.id DESC LIMIT 1",
            *_key(chat),
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
        ids = json.dumps([] if platform_message_id is None else [_text(platform_message_id)])
        values = (
            _text(author_id),
            _text(author_name),
            _text(text),
            ids,
            len(images),
            parent,
            *_key(chat),
        )
        message_id = None
        handling = HANDLING.get()
        if not images and handling is None:
            # One statement into the chat's newest conversation: the hot path, one round trip.
            message_id = await self._write_returning(_INSERT_USER_MESSAGE, *values)
        if message_id is None:
            named = [(image.sha256, image) for image in images]
            async with self._transaction() as conn:
                if handling is not None:  # handled before, by a replica that died since
                    stored = await conn.fetchval(
                        "SELECT message FROM inbox WHERE platform = $1 AND update_id = $2"
                        " FOR UPDATE",
                        handling.platform,
                        handling.update_id,
                    )
                    if stored is not None:
                        return int(stored)
                message_id = await conn.fetchval(_INSERT_USER_MESSAGE, *values)
                if message_id is None:  # a chat's first message creates the chat
                    await self._ensure_chat(conn, chat)
                    message_id = await conn.fetchval(_INSERT_USER_MESSAGE, *values)
                for position, (sha256, image) in enumerate(named):
                    await self._attach_image(conn, message_id, position, sha256, image)
                if handling is not None:
                    await conn.execute(
                        "UPDATE inbox SET message = $3 WHERE platform = $1 AND update_id = $2",
                        handling.platform,
                        handling.update_id,
                        message_id,
                    )
        if chat_title:
            await self._keep_title(chat, chat_title)
        return int(message_id)

    @staticmethod
    async def _attach_image(
        conn: Pooled, message_id: int, position: int, sha256: str, image: MessageImage
    ) -> None:
        """Store `image` once under its hash (a second message carrying it reuses the row) and
        name it as the message's `position`-th."""
        await conn.execute(
            "INSERT INTO images (sha256, media_type, width, height, data, created_at)"
            f" VALUES ($1, $2, $3, $4, $5, {_NOW}) ON CONFLICT (sha256) DO NOTHING",
            sha256,
            _text(image.media_type),
            image.width,
            image.height,
            image.data,
        )
        await conn.execute(
            "INSERT INTO message_images (message, position, image)"
            " SELECT $1::bigint, $2::int, id FROM images WHERE sha256 = $3",
            message_id,
            position,
            sha256,
        )

    async def _keep_title(self, chat: ChatKey, title: str) -> None:
        """Write the chat's title if it changed since this process last wrote it."""
        key, title = _key(chat), _text(title)
        if self._titles.get(key) == title:
            return
        await self._write(
            "UPDATE chats SET title = $1 WHERE platform = $2 AND chat_id = $3 AND thread_id = $4"
            " AND title IS DISTINCT FROM $1",
            title,
            *key,
        )
        if len(self._titles) >= TITLE_CACHE_SIZE:
            self._titles.clear()
        self._titles[key] = title

    async def start_reply(self, reply_to: int, model: str | None) -> int:
        handling = HANDLING.get()
        # The update is answered from here on: its row is done with the reply's (one statement,
        # a data-modifying WITH always runs).
        done = "" if handling is None else f"WITH done AS ({_INBOX_DONE_AT.format(4, 5)}) "
        extra = () if handling is None else (handling.platform, handling.update_id)
        message_id = await self._write_returning(
            f"{done}INSERT INTO messages (conversation, reply_to, role, status, model, replica,"
            " created_at, updated_at) SELECT conversation, id, 'assistant', 'streaming',"
            f" $1::text, $3::text, {_NOW}, {_NOW} FROM messages WHERE id = $2 AND role = 'user'"
            " RETURNING id",
            _text_or_none(model),
            reply_to,
            self._replica,
            *extra,
        )
        if message_id is None:
            raise StorageError(f"Database {self._location}: no user message {reply_to} to answer.")
        return int(message_id)

    async def save_partial_reply(self, message_id: int, text: str) -> None:
        await self._write(
            f"UPDATE messages SET text = $1, updated_at = {_NOW}"
            " WHERE id = $2 AND status = 'streaming'",
            _text(text),
            message_id,
        )

    async def finish_reply(self, message_id: int, outcome: ReplyOutcome) -> None:
        if outcome.reasoning:
            async with self._transaction() as conn:
                await conn.execute(*self._finish_statement(message_id, outcome))
                await conn.execute(
                    "INSERT INTO reply_reasoning (message, text) VALUES ($1, $2)"
                    " ON CONFLICT (message) DO UPDATE SET text = excluded.text",
                    message_id,
                    _text(outcome.reasoning),
                )
            return
        await self._write(*self._finish_statement(message_id, outcome))

    async def reply_reasoning(self, message_id: int) -> str | None:
        rows = await self._fetch("SELECT text FROM reply_reasoning WHERE message = $1", message_id)
        return str(rows[0][0]) if rows else None

    @staticmethod
    def _finish_statement(message_id: int, outcome: ReplyOutcome) -> tuple[Any, ...]:
        return (
            "UPDATE messages SET status = $1, text = $2, model = coalesce($3, model),"
            " provider = $4, first_token_ms = $5, total_ms = $6, prompt_tokens = $7,"
            " completion_tokens = $8, total_tokens = $9, tokens_estimated = $10, error = $11,"
            f" updated_at = {_NOW} WHERE id = $12",
            outcome.status.value,
            _text(outcome.text),
            _text_or_none(outcome.model),
            _text_or_none(outcome.provider),
            outcome.first_token_ms,
            outcome.total_ms,
            outcome.prompt_tokens,
            outcome.completion_tokens,
            outcome.total_tokens,
            int(outcome.tokens_estimated),
            _text_or_none(outcome.error),
            message_id,
        )

    async def set_platform_message_ids(
        self, message_id: int, ids: Sequence[str], *, delivery_pending: bool = False
    ) -> None:
        await self._write(
            "UPDATE messages SET platform_ids = $1, delivery_pending = $2 WHERE id = $3",
            json.dumps([_text(str(value)) for value in ids]),
            int(delivery_pending),
            message_id,
        )

    async def interrupt_reply(self, message_id: int) -> None:
        await self._write(
            f"UPDATE messages SET status = 'interrupted', updated_at = {_NOW}"
            " WHERE id = $1 AND status = 'complete'",
            message_id,
        )

    async def interrupt_streaming(self, platform: str | None = None) -> int:
        status = await self._write(
            f"UPDATE messages m SET status = 'interrupted', updated_at = {_NOW}"
            f" WHERE {_UNFINISHED} AND (m.replica IS NULL OR {_DEAD_REPLICA})"
            " AND ($1::text IS NULL OR m.conversation IN"
            " (SELECT v.id FROM conversations v JOIN chats c ON c.id = v.chat"
            " WHERE c.platform = $1))",
            _text_or_none(platform),
        )
        return _changed(status)

    async def undelivered_replies(self, platform: str) -> list[UndeliveredReply]:
        rows = await self._fetch(
            "SELECT m.id, c.platform, c.chat_id, c.thread_id, m.text, m.platform_ids"
            " FROM messages m JOIN conversations v ON v.id = m.conversation"
            " JOIN chats c ON c.id = v.chat"
            f" WHERE m.delivery_pending = 1 AND c.platform = $1"
            f" AND (m.replica IS NULL OR {_DEAD_REPLICA}) ORDER BY m.id",
            _text(platform),
        )
        return [
            UndeliveredReply(id_, platform_, chat_id, thread_id, text, tuple(json.loads(ids)))
            for id_, platform_, chat_id, thread_id, text, ids in rows
        ]

    # Replicas (m013): leases, the sweep, the inbox.

    def serve_as(self, replica: str) -> None:
        self._replica = replica

    async def heartbeat(self, replica: str, lease_seconds: float) -> None:
        await self._write(
            f"INSERT INTO replicas (id, started_at, expires_at) VALUES ($1, {_NOW},"
            f" {_EPOCH} + $2::float8) ON CONFLICT (id) DO UPDATE SET"
            " expires_at = excluded.expires_at",
            replica,
            lease_seconds,
        )

    async def leave(self, replica: str) -> None:
        await self._write("DELETE FROM replicas WHERE id = $1", replica)

    async def interrupt_orphaned(self) -> int:
        async with self._transaction() as conn:
            # Claimed row by row: a second sweeper skips what the first holds, and finds it
            # no longer unfinished once the first commits.
            status = await conn.execute(
                f"UPDATE messages SET status = 'interrupted', updated_at = {_NOW}"
                " WHERE id IN (SELECT m.id FROM messages m WHERE m.replica IS NOT NULL"
                f" AND {_UNFINISHED} AND {_DEAD_REPLICA} FOR UPDATE OF m SKIP LOCKED)"
            )
            await conn.execute(f"DELETE FROM replicas WHERE expires_at <= {_EPOCH}")
            await conn.execute(
                f"DELETE FROM inbox WHERE done = 1 AND received_at < {_EPOCH} - $1::float8",
                INBOX_KEEP_SECONDS,
            )
        return _changed(status)

    async def inbox_add(self, platform: str, update_id: int, chat_key: str, body: str) -> bool:
        # One statement: the row and the notification commit together (a NOTIFY is sent at
        # commit), and a second delivery of the update inserts nothing and notifies nobody.
        added = await self._write_returning(
            "WITH added AS (INSERT INTO inbox (platform, update_id, chat_key, body, received_at)"
            f" VALUES ($1, $2, $3, $4, {_EPOCH}) ON CONFLICT DO NOTHING RETURNING chat_key)"
            " SELECT count(*) FROM"
            f" (SELECT pg_notify('{INBOX_CHANNEL}', $1 || ' ' || chat_key) FROM added) told",
            _text(platform),
            update_id,
            _text(chat_key),
            _text(body),
        )
        return bool(added)

    async def inbox_pending(self, platform: str, chat_key: str) -> list[InboxEntry]:
        rows = await self._fetch(
            "SELECT update_id, body FROM inbox WHERE platform = $1 AND chat_key = $2"
            " AND done = 0 ORDER BY update_id",
            _text(platform),
            _text(chat_key),
        )
        return [InboxEntry(update_id, body) for update_id, body in rows]

    async def inbox_chats(self, platform: str) -> list[str]:
        rows = await self._fetch(
            "SELECT DISTINCT chat_key FROM inbox WHERE platform = $1 AND done = 0", _text(platform)
        )
        return [row[0] for row in rows]

    async def inbox_done(self, platform: str, update_id: int) -> None:
        await self._write(_INBOX_DONE, _text(platform), update_id)

    # Reading.

    async def context_messages(self, up_to: int, limit: int) -> list[StoredMessage]:
        rows = await self._fetch(CONTEXT_QUERY, up_to, limit)
        return [_message(row) for row in reversed(rows)]

    async def branch_messages(self, up_to: int, limit: int, max_turns: int) -> list[StoredMessage]:
        rows = await self._fetch(BRANCH_QUERY, up_to, min(limit, max_turns))
        if not rows:
            return []
        root_depth, root_parent = rows[0][0], rows[0][1]
        branch = [_message(row[2:]) for row in rows]
        branch = [m for m in branch if m.status in _SENDABLE and (m.role is Role.USER or m.text)]
        earlier: list[StoredMessage] = []
        room = limit - len(branch)
        if root_parent is None and root_depth < max_turns and room > 0:
            earlier = await self.context_messages(rows[0][2], room + 1)
            earlier = earlier[:-1]  # the root itself is the branch's first message
        return (earlier + branch)[-limit:]

    async def find_message(self, chat: ChatKey, platform_message_id: str) -> StoredMessage | None:
        rows = await self._fetch(FIND_BY_PLATFORM_ID, _text(platform_message_id), *_key(chat))
        return _message(rows[0]) if rows else None

    async def message_images(self, message_ids: Collection[int]) -> dict[int, list[MessageImage]]:
        found: dict[int, list[MessageImage]] = {}
        if not message_ids:
            return found
        rows = await self._fetch(
            "SELECT m.message, i.data, i.media_type, i.width, i.height"
            " FROM message_images m JOIN images i ON i.id = m.image"
            " WHERE m.message = ANY($1::bigint[])"
            " ORDER BY m.message, m.position",
            sorted(set(message_ids)),
        )
        for message_id, data, media_type, width, height in rows:
            found.setdefault(message_id, []).append(MessageImage(data, media_type, width, height))
        return found

    async def history_summary(self, conversation_id: int) -> HistorySummary | None:
        rows = await self._fetch(
            "SELECT text, through, model FROM history_summaries WHERE conversation = $1",
            conversation_id,
        )
        return next((HistorySummary(*row) for row in rows), None)

    async def save_history_summary(self, conversation_id: int, summary: HistorySummary) -> None:
        await self._write(
            "INSERT INTO history_summaries (conversation, through, text, model, updated_at)"
            f" VALUES ($1, $2, $3, $4, {_NOW}) ON CONFLICT (conversation) DO UPDATE SET"
            " through = excluded.through, text = excluded.text, model = excluded.model,"
            " updated_at = excluded.updated_at",
            conversation_id,
            summary.through,
            _text(summary.text),
            _text(summary.model),
        )

    async def find_chats(self, chat_id: str, platform: str | None = None) -> list[ChatRecord]:
        rows = await self._fetch(
            f"SELECT {_CHAT_COLUMNS} FROM chats WHERE chat_id = $1"
            " AND ($2::text IS NULL OR platform = $2) ORDER BY platform, thread_id",
            _text(chat_id),
            _text_or_none(platform),
        )
        return [ChatRecord(*row) for row in rows]

    async def list_chats(self, platform: str | None = None) -> list[ChatSummary]:
        rows = await self._fetch(LIST_CHATS_QUERY, _text_or_none(platform))
        return [ChatSummary(*row) for row in rows]

    async def conversations(self, chat: int) -> list[ConversationRecord]:
        rows = await self._fetch(
            "SELECT id, chat, created_at FROM conversations WHERE chat = $1 ORDER BY id", chat
        )
        return [ConversationRecord(*row) for row in rows]

    async def conversation_messages(self, conversation_id: int) -> list[StoredMessage]:
        rows = await self._fetch(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE conversation = $1"
            " ORDER BY coalesce(reply_to, id), id",
            conversation_id,
        )
        return [_message(row) for row in rows]

    # Whole tables (`storage.base.TableCopy`, for `parley history copy`).

    async def tables(self) -> dict[str, list[str]]:
        rows = await self._fetch(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name != $1"
            " ORDER BY table_name, ordinal_position",
            VERSION_TABLE,
        )
        found: dict[str, list[str]] = {}
        for table, column in rows:
            found.setdefault(table, []).append(column)
        return found

    async def table_rows(self, table: str, columns: Sequence[str]) -> list[Row]:
        listed = ", ".join(f'"{column}"' for column in columns)
        return [tuple(row) for row in await self._fetch(f'SELECT {listed} FROM "{table}"')]

    async def load_tables(self, tables: Sequence[tuple[str, Sequence[str], Sequence[Row]]]) -> None:
        async with self._transaction() as conn:
            for table, columns, rows in tables:
                stored = [tuple(self.as_stored(value) for value in row) for row in rows]
                if table == DERIVED_TABLE:  # filled by a trigger as messages arrive (m011)
                    listed = ", ".join(f'"{column}"' for column in columns)
                    marks = ", ".join(f"${n}" for n in range(1, len(columns) + 1))
                    await conn.executemany(
                        f'INSERT INTO "{table}" ({listed}) VALUES ({marks}) ON CONFLICT DO NOTHING',
                        stored,
                    )
                elif stored:
                    # COPY: one round trip for the whole table, however many rows.
                    await conn.copy_records_to_table(table, records=stored, columns=list(columns))
                if "id" in columns:
                    await conn.execute(
                        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"
                        f' coalesce(max(id), 0) + 1, false) FROM "{table}"'
                    )

    def as_stored(self, value: object) -> object:
        return _text(value) if isinstance(value, str) else value
