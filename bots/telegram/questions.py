"""A question to answer, with whatever files it carries: the shared rules in Telegram's terms.

The order is the shared one (`bots.with_files`): read the files (the chat sees "typing"
meanwhile), show what a voice note said as a reply to it, say what was left out, then answer,
or, when nothing is left to answer, store the message so the history has it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

from aiogram import Bot
from aiogram.exceptions import TelegramAPIError
from aiogram.types import Message
from aiogram.utils.chat_action import ChatActionSender

from bots import with_files
from bots.attachments import Kind
from bots.config import Settings
from bots.relay import relay
from bots.telegram.chats import author_of, chat_ref, chat_title, is_group
from bots.telegram.media import attachments_of
from bots.telegram.middlewares import asker_of
from bots.telegram.surface import TelegramBudgets, TelegramSurface, defuse_mentions
from core.conversation import Arrival, ConversationService
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
    arrival: Arrival | None = None,
) -> None:
    """Stream the model's answer to `text` (and `images`) as a reply to `message`, in the
    place `arrival` took in the chat's order (None: now); a reply to an older answer of the
    bot continues from it (`continued`)."""
    await relay(
        service,
        TelegramSurface.answering(bot, message, budgets),
        chat_ref(message),
        asker_of(message, settings),
        text,
        images=images,
        group=is_group(message.chat),
        platform_message_id=str(message.message_id),
        chat_title=chat_title(message),
        delivery_timeout=settings.delivery_timeout_seconds,
        arrival=arrival,
        show_reasoning=settings.show_reasoning,
        continue_from=continued(message, bot.id),
    )


def continued(message: Message, bot_id: int) -> str | None:
    """The id of the bot's message that `message` replies to, whose point in the conversation
    the answer continues from (a branch, rebuilt from the store: the Bot API tells only this
    one level of the chain); None for a reply to anyone else, or to nothing. In a forum topic
    every message "replies" to the topic's first (service) message, which is no answer."""
    target = message.reply_to_message
    if target is None or target.forum_topic_created is not None or target.from_user is None:
        return None
    return str(target.message_id) if target.from_user.id == bot_id else None


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
    itself, an album's items, or the message it replies to (`bots.with_files`)."""
    found = [(source, a) for source in sources for a in attachments_of(source, bot, settings)]
    if not found:
        await answer(message, text, bot, service, budgets, settings)
        return
    heard = next((source for source, a in found if a.sort is Kind.AUDIO), message)
    reply = _FilesReply(message, heard, bot, service, budgets, settings)
    await with_files.answer_with_files(reply, text, [a for _, a in found], settings)


@dataclass(frozen=True, slots=True)
class _FilesReply:
    """Telegram's side of `bots.with_files`: "typing" while the files are read, the quote as a
    reply to the voice message (`heard`), the rest as replies to the question."""

    message: Message
    heard: Message
    bot: Bot
    service: ConversationService
    budgets: TelegramBudgets
    settings: Settings

    def working(self) -> AbstractAsyncContextManager[object]:
        return ChatActionSender.typing(
            bot=self.bot, chat_id=self.message.chat.id, message_thread_id=_topic(self.message)
        )

    async def quote(self, line: str) -> None:
        await _tell(self.heard, defuse_mentions(line))

    async def note(self, line: str) -> None:
        await _tell(self.message, line)

    def arrive(self) -> Arrival:
        return self.service.arrive(chat_ref(self.message))

    async def answer(self, text: str, images: Sequence[MessageImage], arrival: Arrival) -> None:
        await answer(
            self.message,
            text,
            self.bot,
            self.service,
            self.budgets,
            self.settings,
            images=images,
            arrival=arrival,
        )

    def remember(self, record: str, arrival: Arrival) -> Awaitable[None]:
        return self.service.remember(
            chat_ref(self.message),
            author_of(self.message),
            record,
            platform_message_id=str(self.message.message_id),
            chat_title=chat_title(self.message),
            arrival=arrival,
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
