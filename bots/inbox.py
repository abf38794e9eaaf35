"""Updates shared by several replicas: each taken in once, each chat fed by one replica, in order.

With PostgreSQL (`bots.replica`), a platform's updates do not go straight to the dispatcher of
the replica that received them. `receive` writes each into the database's inbox (a second
delivery of an update is dropped there: its id is the row's key), and the chat's updates are
then fed to a dispatcher by whichever replica holds the chat's lock (`storage.base.ChatLocks`),
oldest first: the one that received the update, or another that already feeds the chat.

A replica feeding a chat keeps it while any of the chat's updates is being handled or waits,
and lets it go once the chat is idle, so a chat's next message may go to any replica, but
never alongside an earlier one still being answered elsewhere. Letting go, it looks once
more: an update that arrived meanwhile (its notification met the lock still held) is taken up
again, here or by whoever is quicker.

An update is done when its user message is stored (`storage.base.HANDLING`: the same
transaction), or, for one that stores none (a command, a button), when its handler returns.
A replica that dies before either leaves the row pending; its lock ended with its session,
and a live replica's periodic look (`rescan`) takes the chat over and feeds what is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from storage import ChatLocks, InboxEntry, StorageError, Store

log = logging.getLogger(__name__)

#: Seconds a feeder waits before reading a chat's inbox again after the database failed.
RETRY_SECONDS = 1.0

#: Starts handling one update (in a task of its own) and returns that task.
Feed = Callable[[InboxEntry], "asyncio.Task[Any]"]


@dataclass
class _Fed:
    """A chat this replica feeds: the updates it handed over, and those still being handled."""

    fed: set[int] = field(default_factory=set)
    running: set[asyncio.Task[Any]] = field(default_factory=set)
    #: Set when the chat may have news: a new update, or a handler ended.
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    #: The session holding the chat's lock ended: the chat may be another replica's now.
    lost: bool = False


class SharedInbox:
    """One platform's inbox as this replica sees it."""

    def __init__(self, store: Store, locks: ChatLocks, platform: str) -> None:
        self._store = store
        self._locks = locks
        self.platform = platform
        self._feed: Feed | None = None
        self._closing = False
        self._owned: dict[str, _Fed] = {}
        #: Chats whose lock this replica is asking for.
        self._taking: set[str] = set()
        self._feeders: set[asyncio.Task[None]] = set()

    def open(self, feed: Feed) -> None:
        """Start feeding: the bot's dispatcher is ready. Chats left waiting (by a replica
        that died, or while none ran) are taken up by the next `rescan`."""
        self._feed = feed

    async def receive(self, update_id: int, chat_key: str, body: str) -> bool:
        """Take an update in; True when it is new. Raises `StorageError` when it could not be
        written: the platform must deliver it again (a webhook answers 500)."""
        added = await self._store.inbox_add(self.platform, update_id, chat_key, body)
        if added:
            self.kick(chat_key)
        return added

    async def done(self, update_id: int) -> None:
        """The update was handled; a failure is logged (the chat's next owner would take it up
        again, which only an update storing no message can suffer)."""
        try:
            await self._store.inbox_done(self.platform, update_id)
        except StorageError as exc:
            log.warning("Could not mark update %d handled: %s", update_id, exc)

    def kick(self, chat_key: str) -> None:
        """The chat may have updates waiting: feed them if it is this replica's, or try to make
        it so (without waiting: another replica holding it feeds them)."""
        if self._feed is None or self._closing:
            return
        fed = self._owned.get(chat_key)
        if fed is not None:
            fed.wake.set()
            return
        if chat_key in self._taking:  # the take under way reads the chat's updates after it
            return
        self._taking.add(chat_key)
        self._spawn(self._take(chat_key), f"inbox {self.platform} {chat_key}")

    async def rescan(self) -> None:
        """Take up the chats with updates waiting that no live replica feeds (their replica
        died, or let go while an update was arriving)."""
        if self._feed is None or self._closing:
            return
        for chat_key in await self._store.inbox_chats(self.platform):
            if chat_key not in self._owned:
                self.kick(chat_key)

    def lost(self) -> None:
        """The session holding this replica's chat locks ended (`ChatLocks.alive`): another
        replica may take any of its chats over at once and feed the updates not answered yet.
        So their handlers here are cut short (an update whose reply had not started stays for
        the new owner, handled once, by it) and the feeders end."""
        for fed in self._owned.values():
            fed.lost = True
            for task in fed.running:
                task.cancel()
            fed.wake.set()

    def stop_feeding(self) -> None:
        """Hand no more updates over (the stop began); the chats are kept until their handlers
        end (`close`), so no other replica answers their next message meanwhile."""
        self._closing = True
        for fed in self._owned.values():
            fed.wake.set()

    async def close(self) -> None:
        """Once the handlers are over: let every chat go (the other replicas are told of those
        with updates still waiting, `ChatLocks.release`)."""
        self.stop_feeding()
        if self._feeders:
            await asyncio.gather(*self._feeders, return_exceptions=True)

    def _spawn(self, work: Any, name: str) -> None:
        task = asyncio.create_task(work, name=name)
        self._feeders.add(task)
        task.add_done_callback(self._feeders.discard)

    async def _take(self, chat_key: str) -> None:
        try:
            taken = await self._locks.take(self.platform, chat_key)
        except StorageError as exc:
            log.warning("Could not take chat %s over: %s", chat_key, exc)
            return
        finally:
            self._taking.discard(chat_key)
        if not taken:
            return
        fed = self._owned[chat_key] = _Fed()
        try:
            await self._drain(chat_key, fed)
        finally:
            del self._owned[chat_key]
            # Letting go tells every replica (this one too) if updates are waiting: one that
            # arrived while the lock was still held here is taken up at once.
            with contextlib.suppress(StorageError):
                await self._locks.release(self.platform, chat_key)

    async def _drain(self, chat_key: str, fed: _Fed) -> None:
        """Feed the chat's updates in order until it is idle (or the stop came and its handlers
        ended)."""
        assert self._feed is not None
        while True:
            fed.wake.clear()
            new = 0
            if fed.lost or not self._locks.alive:  # the lock went with the session
                for task in fed.running:  # seen before `lost` was told, or after
                    task.cancel()
                return
            if not self._closing:
                try:
                    entries = await self._store.inbox_pending(self.platform, chat_key)
                except StorageError as exc:
                    log.warning("Could not read chat %s's updates: %s", chat_key, exc)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(fed.wake.wait(), RETRY_SECONDS)
                    continue
                for entry in entries:
                    if entry.update_id in fed.fed:
                        continue
                    fed.fed.add(entry.update_id)
                    new += 1
                    task = self._feed(entry)
                    fed.running.add(task)
                    task.add_done_callback(partial(_ended, fed))
            if not fed.running and not new and (self._closing or not fed.wake.is_set()):
                return
            await fed.wake.wait()


def _ended(fed: _Fed, task: asyncio.Task[Any]) -> None:
    fed.running.discard(task)
    fed.wake.set()
