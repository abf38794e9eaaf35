"""Questions: every text in a private chat; in groups `/ask`, an @mention or a reply to the bot.

`/ask` (anywhere) or a mention (in a group) sent as a reply to a message with files asks about
those files: the replied-to message's photo, voice note or file is read with the question."""

from __future__ import annotations

from aiogram import Bot, F, Router
from aiogram.enums import ChatType
from aiogram.filters import Command, CommandObject
from aiogram.types import Message

from bots.config import Settings
from bots.telegram.chats import GROUP_TYPES
from bots.telegram.filters import AddressedToBot
from bots.telegram.handlers.other import UNREADABLE
from bots.telegram.media import has_attachments
from bots.telegram.questions import answer, answer_with_files
from bots.telegram.surface import TelegramBudgets
from core.conversation import ConversationService

ASK_USAGE = "Usage: /ask QUESTION"
EMPTY_MENTION = "Yes? Write your question after the mention, or reply to one of my messages."
EMPTY_TEXT = "Send me a question as text."


def make_router() -> Router:
    """A fresh router (a router joins one dispatcher only, and tests build many)."""
    router = Router(name="chat")
    router.message.register(ask, Command("ask"))
    router.message.register(private_text, F.chat.type == ChatType.PRIVATE, F.text.is_not(None))
    router.message.register(group_text, F.chat.type.in_(GROUP_TYPES), F.text, AddressedToBot())
    return router


async def ask(
    message: Message,
    command: CommandObject,
    bot: Bot,
    service: ConversationService,
    budgets: TelegramBudgets,
    settings: Settings,
) -> None:
    if message.text is None:  # the caption of media the bot does not read
        await message.reply(UNREADABLE)
        return
    question = (command.args or "").strip()
    replied = _with_files(message)
    if replied is not None:
        await answer_with_files(message, question, [replied], bot, service, budgets, settings)
    elif not question:
        await message.reply(ASK_USAGE)
    else:
        await answer(message, question, bot, service, budgets, settings)


async def private_text(
    message: Message,
    bot: Bot,
    service: ConversationService,
    budgets: TelegramBudgets,
    settings: Settings,
) -> None:
    text = message.text or ""
    if not text.strip():
        await message.reply(EMPTY_TEXT)
        return
    await answer(message, text, bot, service, budgets, settings)


async def group_text(
    message: Message,
    prompt: str,
    bot: Bot,
    service: ConversationService,
    budgets: TelegramBudgets,
    settings: Settings,
) -> None:
    replied = _with_files(message)
    if replied is not None:
        await answer_with_files(message, prompt, [replied], bot, service, budgets, settings)
    elif not prompt:
        await message.reply(EMPTY_MENTION)
    else:
        await answer(message, prompt, bot, service, budgets, settings)


def _with_files(message: Message) -> Message | None:
    """The message `message` replies to, when it carries files the bot reads."""
    target = message.reply_to_message
    return target if target is not None and has_attachments(target) else None
