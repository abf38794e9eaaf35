"""A question to answer, with whatever files it carries: the shared rules in Telegram's terms.

The order is the shared layer's (`bots.attachments`): read the files (the chat sees "typing"
meanwhile), show what a voice note said as a reply to it, say what was left out, then answer,
or, when nothing is left to answer, store the message so the history has it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from aiogram import Bot
from aiogram.exceptions import TelegramAPIError
from aiogram.types import Message
from aiogram.utils.chat_action import ChatActionSender

from bots.attachments import Attachment, Kind, gather, notes_text, transcript_quote
from bots.config import Settings
from bots.relay import relay
from bots.telegram.chats import author_of, chat_ref, chat_title, is_group
from bots.telegram.media import attachments_of
from bots.telegram.surface import TelegramBudgets, TelegramSurface, defuse_mentions
from core.conversation import ConversationService
from storage import MessageImage

log = logging.getLogger(__name__)


async def answer(
    message: Message,
    text: str,
    bot: Bot,
    service: ConversationService,
    budgets: TelegramBudgets,
    settings: Settings,
    *,
    images: Sequence[MessageImage] = (),
) -> None:
    """Stream the model's answer to `text` (and `images`) as a reply to `message`."""
    await relay(
        service,
        TelegramSurface.answering(bot, message, budgets),
        chat_ref(message),
        author_of(message),
        text,
        images=images,
        group=is_group(message.chat),
        platform_message_id=str(message.message_id),
        chat_title=chat_title(message),
        delivery_timeout=settings.delivery_timeout_seconds,
    )


async def answer_with_files(
    message: Message,
    text: str,
    sources: Sequence[Message],
    bot: Bot,
    service: ConversationService,
    budgets: TelegramBudgets,
    settings: Settings,
) -> None:
    """Answer `message` (whose question is `text`) with the files of `sources`: the message
    itself, an album's items, or the message it replies to."""
    found = [(source, a) for source in sources for a in attachments_of(source, bot, settings)]
    if not found:
        await answer(message, text, bot, service, budgets, settings)
        return
    attachments: list[Attachment] = [attachment for _, attachment in found]
    async with ChatActionSender.typing(
        bot=bot, chat_id=message.chat.id, message_thread_id=_topic(message)
    ):
        gathered = await gather(text, attachments, settings)
    if gathered.transcript is not None:
        heard = next(source for source, a in found if a.sort is Kind.AUDIO)
        await _tell(heard, defuse_mentions(transcript_quote(gathered.transcript)))
    if gathered.notes:
        await _tell(message, notes_text(gathered.notes))
    if gathered.answerable:
        await answer(
            message, gathered.text, bot, service, budgets, settings, images=gathered.images
        )
        return
    await service.remember(  # stored in the chat's order; StorageError to the error handler
        chat_ref(message),
        author_of(message),
        gathered.record,
        platform_message_id=str(message.message_id),
        chat_title=chat_title(message),
    )


async def _tell(message: Message, text: str) -> None:
    """A line before the answer, as a reply to `message` (sent anyway if it was deleted
    meanwhile); one that cannot be sent costs only itself, never the answer."""
    try:
        await message.reply(text, allow_sending_without_reply=True)
    except TelegramAPIError as exc:
        log.warning("Could not send a line to chat %s: %s", message.chat.id, exc)


def _topic(message: Message) -> int | None:
    return message.message_thread_id if message.is_topic_message else None
