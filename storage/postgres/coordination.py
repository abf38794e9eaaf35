"""Which replica feeds which chat: session-level advisory locks, and LISTEN for new updates.

Why advisory locks: the ownership of a chat is nothing to store, only something to hold, and
it must end by itself when its holder dies. A session-level `pg_try_advisory_lock` is exactly
that: held by one session at a time, never waited for (`try`: a replica that does not get
it leaves the chat to the holder), and released by the server when the session ends, however
it ends (a clean close, a killed process, a cut network once the server notices). So the locks
live on a connection of their own, never returned to the store's pool (a pooled connection
would carry them to whoever borrows it next).

Why LISTEN/NOTIFY: an inbox insert (`PostgresStore.inbox_add`) notifies `parley_inbox` in its
own transaction, so every replica hears of the chat's new update as soon as it is committed,
and whoever holds (or can take) the chat's lock feeds it, without polling the table.

Keys: the lock's two-integer form, a class of Parley's own (so no clash with the one-integer
migration lock) and `hashtext(platform chat_key)`. Two chats hashing alike share a lock: they
are then fed by one replica, which costs nothing but spread.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import asyncpg

from storage.base import ArrivalListener
from storage.errors import StorageUnavailableError
from storage.postgres.errors import DRIVER_ERRORS, translate
from storage.postgres.store import CONNECT_TIMEOUT_SECONDS, INBOX_CHANNEL, location_of

log = logging.getLogger(__name__)

#: The first key of every chat lock: "pa" "rl", Parley's class of advisory locks.
LOCK_CLASS = 0x7061726C
#: TCP keepalives the server sends on the locks' session (idle seconds, seconds between
#: probes, probes): a replica whose host died closes no socket, and by the kernel's defaults
#: the server would keep its session and chat locks for over two hours. With these it ends
#: them about 11 s after the host went silent, within the default lease.
KEEPALIVES = {
    "tcp_keepalives_idle": "5",
    "tcp_keepalives_interval": "2",
    "tcp_keepalives_count": "3",
}


class PostgresChatLocks:
    """`storage.base.ChatLocks` on one dedicated connection. Build it with `await
    PostgresChatLocks.open(url, on_arrival)`."""

    def __init__(
        self, url: str, on_arrival: ArrivalListener, on_lost: Callable[[], None] | None = None
    ) -> None:
        self._url = url
        self._location = location_of(url)
        self._on_arrival = on_arrival
        #: Told at once when the session ends by itself: every lock went with it.
        self._on_lost = on_lost
        self._conn: asyncpg.Connection | None = None
        #: One statement at a time on the connection (asyncpg refuses overlapping ones).
        self._busy = asyncio.Lock()

    @classmethod
    async def open(
        cls, url: str, on_arrival: ArrivalListener, on_lost: Callable[[], None] | None = None
    ) -> PostgresChatLocks:
        locks = cls(url, on_arrival, on_lost)
        await locks.reconnect()
        return locks

    @property
    def alive(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    async def reconnect(self) -> None:
        if self.alive:
            return
        try:
            conn = await asyncpg.connect(self._url, timeout=CONNECT_TIMEOUT_SECONDS)
        except DRIVER_ERRORS as exc:
            raise translate(exc, self._location) from exc
        try:
            # SET, not startup parameters: a pooler in front (PgBouncer) refuses unknown ones.
            for name, value in KEEPALIVES.items():
                await conn.execute(f"SET {name} = {value}")
            await conn.add_listener(INBOX_CHANNEL, self._heard)
        except DRIVER_ERRORS as exc:
            conn.terminate()  # not left open, unused
            raise translate(exc, self._location) from exc
        conn.add_termination_listener(self._lost)
        self._conn = conn

    async def take(self, platform: str, chat_key: str) -> bool:
        return bool(
            await self._ask(
                "SELECT pg_try_advisory_lock($1, hashtext($2 || ' ' || $3))", platform, chat_key
            )
        )

    async def release(self, platform: str, chat_key: str) -> None:
        await self._ask(
            "SELECT pg_advisory_unlock($1, hashtext($2 || ' ' || $3)),"
            f" (SELECT pg_notify('{INBOX_CHANNEL}', $2 || ' ' || $3) WHERE EXISTS"
            " (SELECT 1 FROM inbox WHERE platform = $2 AND chat_key = $3 AND done = 0))",
            platform,
            chat_key,
        )

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            conn.remove_termination_listener(self._lost)  # no loss: a close
            await conn.close(timeout=CONNECT_TIMEOUT_SECONDS)

    async def _ask(self, sql: str, platform: str, chat_key: str) -> Any:
        async with self._busy:
            conn = self._conn
            if conn is None or conn.is_closed():
                raise StorageUnavailableError(
                    f"Database {self._location}: the connection holding the chat locks is lost."
                )
            try:
                return await conn.fetchval(sql, LOCK_CLASS, platform, chat_key)
            except DRIVER_ERRORS as exc:
                raise translate(exc, self._location) from exc

    def _heard(self, _conn: Any, _pid: int, _channel: str, payload: object) -> None:
        platform, _, chat_key = str(payload).partition(" ")
        self._on_arrival(platform, chat_key)

    def _lost(self, _conn: Any) -> None:
        log.error(
            "Database %s: lost the connection holding the chat locks; other replicas may take "
            "this one's chats over. Reconnecting.",
            self._location,
        )
        if self._on_lost is not None:
            self._on_lost()
