"""Photos, files, voice notes, audio and video notes: questions too, in a private chat always,
in a group when they are addressed to the bot (`filters.MediaQuestion`). An album is one
question, asked once all its items arrived (`albums`); unaddressed media stay unread."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiogram import Bot, F, Router
from aiogram.types import Message

from bots.config import Settings
from bots.telegram.albums import AlbumCollector
from bots.telegram.filters import MediaQuestion, media_question
from bots.telegram.media import has_attachments
from bots.telegram.questions import answer_with_files
from bots.telegram.surface import TelegramBudgets
from core.conversation import ConversationService

#: An album item's handler; aiogram fills in each parameter by its name.
AlbumHandler = Callable[
    [Message, Bot, ConversationService, TelegramBudgets, Settings], Awaitable[None]
]


def make_router() -> Router:
    router = Router(name="media")
    with_files = F.func(has_attachments)
    # One collector per router, so per dispatcher: albums never mix across bots.
    router.message.register(_album_handler(AlbumCollector()), with_files, F.media_group_id)
    router.message.register(one_message, with_files, MediaQuestion())
    return router


async def one_message(
    message: Message,
    prompt: str,
    bot: Bot,
    service: ConversationService,
    budgets: TelegramBudgets,
    settings: Settings,
) -> None:
    await answer_with_files(message, prompt, [message], bot, service, budgets, settings)


def _album_handler(albums: AlbumCollector[Message]) -> AlbumHandler:
    async def album_item(
        message: Message,
        bot: Bot,
        service: ConversationService,
        budgets: TelegramBudgets,
        settings: Settings,
    ) -> None:
        """The album is answered as a reply to the item carrying the question (the caption;
        the first item when none has one); in a group, only if one of the items is addressed
        to the bot."""
        items = await albums.collect((message.chat.id, message.media_group_id), message)
        if items is None:
            return  # the first item's handler answers the album
        items.sort(key=lambda item: item.message_id)
        questions = [(item, await media_question(item, bot)) for item in items]
        asked = [(item, prompt) for item, prompt in questions if prompt is not None]
        if not asked:
            return
        target, prompt = next(((i, p) for i, p in asked if p), asked[0])
        await answer_with_files(target, prompt, items, bot, service, budgets, settings)

    return album_item
