"""What the bot cannot read: a short answer in private chats, silence in groups."""

from __future__ import annotations

from aiogram import F, Router
from aiogram.enums import ChatType
from aiogram.types import Message

TEXT_ONLY = "I can only read text messages. Please send your question as text."


def make_router() -> Router:
    router = Router(name="other")
    router.message.register(not_text, F.chat.type == ChatType.PRIVATE)
    return router


async def not_text(message: Message) -> None:
    await message.reply(TEXT_ONLY)
