"""One `parley run` among several on one PostgreSQL database: its id, its lease, its sweep.

Each replica names itself at start (`Replica.id`, random) and keeps a lease in the database
(`Store.heartbeat`, renewed every third of `LEASE_SECONDS`). The replies it writes carry its id
(`Store.serve_as`), so another replica can tell a reply being written by a live replica from
one a dead replica left: every third of a lease each replica runs the sweep
(`Store.interrupt_orphaned`), marking `interrupted` the replies whose replica's lease ran out,
and looks for chats with updates waiting that nobody feeds (`SharedInbox.rescan`). A dead
replica's reply is so marked within about a lease and a third of its last heartbeat, and its
chats are taken over within a third of a lease of its death (its chat locks die with it).

The lease outlives the bots: heartbeats go on while the replies in flight get their shutdown
grace, so no other replica marks them meanwhile, and only then does the replica leave (its
chat locks released, its lease removed).

With SQLite there is one process and no replica (`Replica.start` returns None): updates go
straight to the dispatcher and `recover()` is all a start needs.

`PARLEY_LEASE_SECONDS` (a test and operations knob, not a setting: README does not list it)
overrides the lease; every replica of a database should use the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable

from bots.inbox import SharedInbox
from storage import ChatLocks, StorageError, Store, open_chat_locks

log = logging.getLogger(__name__)

#: How long a replica counts as alive after its last heartbeat.
LEASE_SECONDS = 15.0
#: The environment variable that overrides `LEASE_SECONDS` (tests, operations).
LEASE_VARIABLE = "PARLEY_LEASE_SECONDS"


def lease_from_environment() -> float:
    """`PARLEY_LEASE_SECONDS` when set to a positive number, else `LEASE_SECONDS`."""
    raw = os.environ.get(LEASE_VARIABLE, "")
    try:
        lease = float(raw) if raw else LEASE_SECONDS
    except ValueError:
        lease = 0.0
    if lease <= 0:
        log.warning(
            "%s=%r is no positive number of seconds; using %s", LEASE_VARIABLE, raw, LEASE_SECONDS
        )
        return LEASE_SECONDS
    return lease


class Replica:
    """This process as one of the replicas sharing a database."""

    def __init__(self, store: Store, locks: ChatLocks, lease_seconds: float) -> None:
        self.id = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
        self.lease_seconds = lease_seconds
        self._store = store
        self._locks = locks
        self._inboxes: dict[str, SharedInbox] = {}
        #: The heartbeats, and the sweeps with the looks round: apart, so that a slow sweep
        #: never holds a heartbeat back past the lease.
        self._ticking: list[asyncio.Task[None]] = []

    @classmethod
    async def start(
        cls, store: Store, database_url: str, lease_seconds: float = LEASE_SECONDS
    ) -> Replica | None:
        """Join the replicas of `database_url`'s database (None for SQLite): the lease first,
        so `recover()` after it spares this replica's replies as every other live one's; then
        the heartbeats and sweeps, until `leave`."""
        replica: Replica | None = None

        def arrived(platform: str, chat_key: str) -> None:
            if replica is not None:
                replica._arrived(platform, chat_key)

        def lost() -> None:
            if replica is not None:
                for inbox in replica._inboxes.values():
                    inbox.lost()

        locks = await open_chat_locks(database_url, arrived, lost)
        if locks is None:
            return None
        replica = cls(store, locks, lease_seconds)
        try:
            store.serve_as(replica.id)
            await store.heartbeat(replica.id, lease_seconds)
        except BaseException:
            await locks.close()
            raise
        replica._ticking = [
            asyncio.create_task(replica._tick(replica._heartbeat), name="replica lease"),
            asyncio.create_task(replica._tick(replica._beat), name="replica sweep"),
        ]
        log.info("Replica %s: lease %s s", replica.id, f"{lease_seconds:g}")
        return replica

    def inbox(self, platform: str) -> SharedInbox:
        """The platform's inbox, as this replica feeds it."""
        if platform not in self._inboxes:
            self._inboxes[platform] = SharedInbox(self._store, self._locks, platform)
        return self._inboxes[platform]

    async def leave(self) -> None:
        """After the bots stopped and the replies were saved: stop the heartbeats, let the chats
        go and remove the lease."""
        for ticking in self._ticking:
            ticking.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticking
        for inbox in self._inboxes.values():
            await inbox.close()
        await self._locks.close()
        try:
            await self._store.leave(self.id)
        except StorageError as exc:  # its lease runs out by itself
            log.warning("Replica %s: could not remove its lease: %s", self.id, exc)

    def _arrived(self, platform: str, chat_key: str) -> None:
        inbox = self._inboxes.get(platform)
        if inbox is not None:
            inbox.kick(chat_key)

    async def _tick(self, step: Callable[[], Awaitable[None]]) -> None:
        period = self.lease_seconds / 3
        while True:
            await asyncio.sleep(period)
            try:
                await step()
            except StorageError as exc:
                log.warning("Replica %s: %s", self.id, exc)

    async def _heartbeat(self) -> None:
        await self._store.heartbeat(self.id, self.lease_seconds)

    async def _beat(self) -> None:
        """One sweep and look round."""
        if not self._locks.alive:
            await self._locks.reconnect()
        marked = await self._store.interrupt_orphaned()
        if marked:
            log.warning(
                "Replica %s: marked %d reply(ies) of a replica whose lease ran out as interrupted.",
                self.id,
                marked,
            )
        for inbox in self._inboxes.values():
            await inbox.rescan()
