"""Cross-cutting concerns of the dispatcher: who may use the bot, and which handlers are running."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any

from aiogram import BaseMiddleware
from aiogram.types import Message, TelegramObject

REFUSAL = (
    "Sorry, this bot is private. Ask its operator to add your id ({user_id}) or this chat's id "
    "({chat_id}) to TELEGRAM_ALLOWED_IDS."
)

Handler = Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]]


class AccessMiddleware(BaseMiddleware):
    """Only listed users or chats get answers (an empty list lets everyone in).

    Registered as an inner middleware, so it runs only once a handler has matched: a group
    hears the refusal when someone addresses the bot, not on every message.
    """

    def __init__(self, allowed_ids: Iterable[int]) -> None:
        self._allowed = frozenset(allowed_ids)

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        if not isinstance(event, Message) or not self._allowed or self._permits(event):
            return await handler(event, data)
        user_id = event.from_user.id if event.from_user else event.chat.id
        await event.reply(REFUSAL.format(user_id=user_id, chat_id=event.chat.id))
        return None

    def _permits(self, message: Message) -> bool:
        ids = {message.chat.id}
        if message.from_user is not None:
            ids.add(message.from_user.id)
        if message.sender_chat is not None:
            ids.add(message.sender_chat.id)
        return not ids.isdisjoint(self._allowed)


class HandlerTasks(BaseMiddleware):
    """Keeps the tasks aiogram runs handlers in, so shutdown can stop them before the session
    closes (aiogram's polling leaves them running, and they would reopen the session)."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        task = asyncio.current_task()
        if task is None:
            return await handler(event, data)
        self._tasks.add(task)
        try:
            return await handler(event, data)
        finally:
            self._tasks.discard(task)

    def start(self, work: Coroutine[Any, Any, Any]) -> None:
        """Run `work` (start-up repair, say) in a task that shutdown stops like a handler."""
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def cancel_all(self, grace: float) -> None:
        """Cancel every running handler and give them `grace` seconds to finish their replies
        (the streaming engine makes a last edit with the text so far)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=grace)
