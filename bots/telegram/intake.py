"""Where every Telegram update enters the dispatcher, however it arrived (polling or webhook).

Each update is handled in its own task, kept in `handlers` so the shutdown (`bots.shutdown`) can
give the replies in flight their grace and then cut them short. `accept` is the one door in,
and a webhook answers Telegram only once it returned.

With several replicas on PostgreSQL (an `inbox`, `bots.inbox`), `accept` only writes the update
into the shared inbox (committed when it returns; a second delivery is dropped there), and the
replica feeding the update's chat hands it to its dispatcher, in update id order (`_handle_entry`).
Without one (SQLite: one process), the update goes to the dispatcher at once, as it came.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from aiogram import Bot, Dispatcher
from aiogram.dispatcher.middlewares.user_context import UserContextMiddleware
from aiogram.types import Update

from bots.inbox import SharedInbox
from storage import HANDLING, InboxEntry, UpdateRef

log = logging.getLogger(__name__)


class UpdateIntake:
    """The handlers running for one bot, each started from one update."""

    def __init__(self, bot: Bot, dispatcher: Dispatcher, inbox: SharedInbox | None = None) -> None:
        self._bot = bot
        self.dispatcher = dispatcher
        self._inbox = inbox
        #: The handlers still running, for the shutdown to wait for.
        self.handlers: set[asyncio.Task[Any]] = set()
        if inbox is not None:
            inbox.open(self._feed)

    async def accept(self, update: Update) -> None:
        """Take `update` in: from here on it is answered (by this process, or with an inbox by
        the replica feeding its chat). Returns as soon as the handler is started, not when it
        finishes; with an inbox, once the update is in it, raising `StorageError` when it
        could not be written (it is not taken in: Telegram must deliver it again)."""
        if self._inbox is None:
            self._spawn(self._handle(update), f"telegram update {update.update_id}")
            return
        body = update.model_dump_json(by_alias=True, exclude_unset=True)
        await self._inbox.receive(update.update_id, chat_key_of(update), body)

    def stop_feeding(self) -> None:
        """At a stop, before the handlers' grace: no update is handed over any more."""
        if self._inbox is not None:
            self._inbox.stop_feeding()

    async def close(self) -> None:
        """After the handlers ended: the chats this replica fed are let go."""
        if self._inbox is not None:
            await self._inbox.close()

    def start(self, work: Coroutine[Any, Any, Any]) -> None:
        """Run `work` (the start-up repair) in a task the shutdown treats like a handler's."""
        self._spawn(work, None)

    def _spawn(self, work: Coroutine[Any, Any, Any], name: str | None) -> None:
        task = asyncio.create_task(work, name=name)
        self.handlers.add(task)
        task.add_done_callback(self.handlers.discard)

    def _feed(self, entry: InboxEntry) -> asyncio.Task[Any]:
        task = asyncio.create_task(
            self._handle_entry(entry), name=f"telegram update {entry.update_id}"
        )
        self.handlers.add(task)
        task.add_done_callback(self.handlers.discard)
        return task

    async def _handle_entry(self, entry: InboxEntry) -> None:
        """Handle an update from the inbox, then mark it done. The message it stores marks it
        done first, in the same transaction (`HANDLING`, set in this task's own context); cut
        short by the stop before that, it stays for the chat's next owner."""
        assert self._inbox is not None
        HANDLING.set(UpdateRef(self._inbox.platform, entry.update_id))
        try:
            update = Update.model_validate_json(entry.body, context={"bot": self._bot})
        except ValueError:
            log.exception("Telegram update %d in the inbox is no Update", entry.update_id)
        else:
            await self._handle(update)
        await self._inbox.done(entry.update_id)

    async def _handle(self, update: Update) -> None:
        # The errors router answers a failing handler; this catches what escapes even that.
        try:
            await self.dispatcher.feed_update(self._bot, update)
        except Exception:
            log.exception("Telegram update %d failed", update.update_id)


def chat_key_of(update: Update) -> str:
    """The chat whose order `update` takes its place in: its chat's id, else (an update of no
    chat) its sender's, else its own id (an update nothing else shares an order with)."""
    context = UserContextMiddleware.resolve_event_context(update)
    if context.chat is not None:
        return str(context.chat.id)
    if context.user is not None:
        return f"user {context.user.id}"
    return f"update {update.update_id}"
