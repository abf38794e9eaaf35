"""What the bot cannot read: a short answer in private chats, and in groups when it is addressed
(a photo captioned with its @mention, a sticker replying to it); silence for other group media."""

from __future__ import annotations

from aiogram import F, Router
from aiogram.enums import ChatType
from aiogram.types import Message

from bots.telegram.chats import GROUP_TYPES
from bots.telegram.filters import AddressedToBot

TEXT_ONLY = "I can only read text messages. Please send your question as text."


def make_router() -> Router:
    router = Router(name="other")
    router.message.register(not_text, F.chat.type == ChatType.PRIVATE)
    router.message.register(not_text, F.chat.type.in_(GROUP_TYPES), AddressedToBot())
    return router


async def not_text(message: Message) -> None:
    await message.reply(TEXT_ONLY)
