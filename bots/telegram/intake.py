"""Where every Telegram update enters the dispatcher, however it arrived (polling or webhook).

Each update is handled in its own task, kept in `handlers` so the shutdown (`bots.shutdown`) can
give the replies in flight their grace and then cut them short. `accept` is the one door in:
whatever must hold before an update counts as received (recording its id, so a second delivery
of it is dropped) belongs there, and a webhook answers Telegram only once it returned.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from aiogram import Bot, Dispatcher
from aiogram.types import Update

log = logging.getLogger(__name__)


class UpdateIntake:
    """The handlers running for one bot, each started from one update."""

    def __init__(self, bot: Bot, dispatcher: Dispatcher) -> None:
        self._bot = bot
        self.dispatcher = dispatcher
        #: The handlers still running, for the shutdown to wait for.
        self.handlers: set[asyncio.Task[Any]] = set()

    async def accept(self, update: Update) -> None:
        """Take `update` in: from here on it is this process's to answer. Returns as soon as the
        handler is started, not when it finishes."""
        self._spawn(self._handle(update), f"telegram update {update.update_id}")

    def start(self, work: Coroutine[Any, Any, Any]) -> None:
        """Run `work` (the start-up repair) in a task the shutdown treats like a handler's."""
        self._spawn(work, None)

    def _spawn(self, work: Coroutine[Any, Any, Any], name: str | None) -> None:
        task = asyncio.create_task(work, name=name)
        self.handlers.add(task)
        task.add_done_callback(self.handlers.discard)

    async def _handle(self, update: Update) -> None:
        # The errors router answers a failing handler; this catches what escapes even that.
        try:
            await self.dispatcher.feed_update(self._bot, update)
        except Exception:
            log.exception("Telegram update %d failed", update.update_id)
