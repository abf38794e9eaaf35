"""Questions: every text in a private chat; in groups `/ask`, an @mention or a reply to the bot."""

from __future__ import annotations

from aiogram import Bot, F, Router
from aiogram.enums import ChatType
from aiogram.filters import Command, CommandObject
from aiogram.types import Message

from bots.config import Settings
from bots.relay import relay
from bots.telegram.chats import GROUP_TYPES, author_of, chat_ref, chat_title, is_group
from bots.telegram.filters import AddressedToBot
from bots.telegram.handlers.other import TEXT_ONLY
from bots.telegram.surface import TelegramBudgets, TelegramSurface
from core.conversation import ConversationService

ASK_USAGE = "Usage: /ask QUESTION"
EMPTY_MENTION = "Yes? Write your question after the mention, or reply to one of my messages."
EMPTY_TEXT = "Send me a question as text."


async def answer(
    message: Message,
    text: str,
    bot: Bot,
    service: ConversationService,
    budgets: TelegramBudgets,
    settings: Settings,
) -> None:
    """Stream the model's answer to `text` as a reply to `message`."""
    await relay(
        service,
        TelegramSurface.answering(bot, message, budgets),
        chat_ref(message),
        author_of(message),
        text,
        group=is_group(message.chat),
        platform_message_id=str(message.message_id),
        chat_title=chat_title(message),
        delivery_timeout=settings.delivery_timeout_seconds,
    )


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
    if message.text is None:  # a media caption: the model would guess at what it cannot see
        await message.reply(TEXT_ONLY)
        return
    question = (command.args or "").strip()
    if not question:
        await message.reply(ASK_USAGE)
        return
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
    if not prompt:
        await message.reply(EMPTY_MENTION)
        return
    await answer(message, prompt, bot, service, budgets, settings)
