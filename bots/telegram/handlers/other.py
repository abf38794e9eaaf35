"""What the bot cannot read (stickers, videos, locations, polls...): a short answer in private
chats, and in groups when it is addressed (a sticker replying to the bot); silence for other
group media. Photos, voice notes, audio and files are read (`handlers.media`)."""

from __future__ import annotations

from aiogram import F, Router
from aiogram.enums import ChatType
from aiogram.types import Message

from bots.telegram.chats import GROUP_TYPES
from bots.telegram.filters import AddressedToBot

UNREADABLE = (
    "I can't read this kind of message. Send me text, a photo, a voice note or a text file."
)


def make_router() -> Router:
    router = Router(name="other")
    router.message.register(not_readable, F.chat.type == ChatType.PRIVATE)
    router.message.register(not_readable, F.chat.type.in_(GROUP_TYPES), AddressedToBot())
    return router


async def not_readable(message: Message) -> None:
    await message.reply(UNREADABLE)
