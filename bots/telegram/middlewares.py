"""Cross-cutting concerns of the dispatcher: who may use the bot, and as what (`bots.access`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from typing import Any

from aiogram import BaseMiddleware
from aiogram.types import Message, TelegramObject

from bots.access import Access, access, standing
from bots.config import Settings
from bots.telegram.chats import author_of
from core.conversation import Author

REFUSAL = (
    "Sorry, this bot is private. Ask its operator to add your id ({user_id}) or this chat's id "
    "({chat_id}) to TELEGRAM_ALLOWED_IDS."
)

Handler = Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]]


class AccessMiddleware(BaseMiddleware):
    """Only members and guests get answers (`bots.access`: an empty list lets everyone in, as
    guests; ALLOW_GUESTS=true does too beside a list).

    Registered as an inner middleware, so it runs only once a handler has matched: a group
    hears the refusal when someone addresses the bot, not on every message.
    """

    def __init__(self, allowed_ids: Collection[int], allow_guests: bool = False) -> None:
        self._allowed = frozenset(allowed_ids)
        self._allow_guests = allow_guests

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        if not isinstance(event, Message):
            return await handler(event, data)
        if access_of(event, self._allowed, self._allow_guests) is not Access.REFUSED:
            return await handler(event, data)
        user_id = event.from_user.id if event.from_user else event.chat.id
        await event.reply(REFUSAL.format(user_id=user_id, chat_id=event.chat.id))
        return None


def access_of(message: Message, allowed_ids: Collection[int], allow_guests: bool) -> Access:
    """Whether the message's sender, or its chat, is listed, in `bots.access` terms."""
    ids = {message.chat.id}
    if message.from_user is not None:
        ids.add(message.from_user.id)
    if message.sender_chat is not None:
        ids.add(message.sender_chat.id)
    return access_of_ids(ids, allowed_ids, allow_guests)


def access_of_ids(ids: Collection[int], allowed_ids: Collection[int], allow_guests: bool) -> Access:
    """The access of a person or chat known by `ids` (a button's presser and its chat)."""
    listed = not set(ids).isdisjoint(allowed_ids)
    return access(listed=listed, allowed_ids=allowed_ids, allow_guests=allow_guests)


def asker_of(message: Message, settings: Settings) -> Author:
    """The author of a question to answer, marked as guest or admin for the budgets."""
    level = access_of(message, settings.telegram_allowed_ids, settings.allow_guests)
    user_id = message.from_user.id if message.from_user is not None else None
    if message.sender_chat is not None:  # an anonymous admin or a channel speaks as the chat
        user_id = None
    return standing(author_of(message), user_id, level, settings.admin_ids)
