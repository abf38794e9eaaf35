"""The commands: /start /help /reset /model /system /stop, and an answer to unknown ones."""

from __future__ import annotations

import logging

from aiogram import Bot, Router
from aiogram.enums import ChatMemberStatus
from aiogram.exceptions import TelegramAPIError
from aiogram.filters import Command, CommandObject, CommandStart
from aiogram.types import BotCommand, Message

from bots.telegram.chats import chat_ref, is_anonymous_admin, is_group
from bots.telegram.filters import UnknownCommand
from core.config import Settings
from core.conversation import ConversationService
from core.models import MODEL_NAME

log = logging.getLogger(__name__)

#: What setMyCommands registers, so Telegram's menu offers them.
COMMANDS = (
    BotCommand(command="ask", description="Ask a question (in groups)"),
    BotCommand(command="reset", description="Start a new conversation"),
    BotCommand(command="model", description="Show or change the model"),
    BotCommand(command="system", description="Show or change the system prompt"),
    BotCommand(command="stop", description="Stop the reply being written"),
    BotCommand(command="help", description="How to use this bot"),
)
#: Longest system prompt a chat may set, in characters.
MAX_SYSTEM_PROMPT = 4000
#: The argument that puts a setting back to the operator's default.
DEFAULT_WORDS = frozenset({"default", "reset"})
#: A shown system prompt is cut to fit one Telegram message with its label.
SHOWN_PROMPT_CHARS = 3500

HELP = (
    "I answer with an AI model and remember this chat's conversation.\n\n"
    "In a private chat, just write. In a group, mention me, reply to one of my messages, "
    "or use /ask QUESTION.\n\n"
    "/reset: start a new conversation\n"
    "/model [NAME]: show or change the model (default: the operator's)\n"
    "/system [TEXT]: show or change the system prompt\n"
    "/stop: stop the reply being written\n"
    "In groups only admins may change the model or the system prompt."
)
START = "Hello! " + HELP
RESET_DONE = "Started a new conversation."
STOPPED = "Stopped."
NOTHING_TO_STOP = "Nothing to stop."
ADMINS_ONLY = "Only group admins can change this."
MODEL_USAGE = "Usage: /model NAME (one word, e.g. gpt-4o-mini), or /model default."
SYSTEM_TOO_LONG = f"That system prompt is too long (at most {MAX_SYSTEM_PROMPT} characters)."
UNKNOWN = "I don't know that command. /help lists what I can do."


def make_router() -> Router:
    router = Router(name="commands")
    router.message.register(start, CommandStart())
    router.message.register(help_, Command("help"))
    router.message.register(reset, Command("reset"))
    router.message.register(stop, Command("stop"))
    router.message.register(model, Command("model"))
    router.message.register(system, Command("system"))
    known = [command.command for command in COMMANDS] + ["start"]
    router.message.register(unknown, UnknownCommand(known))
    return router


async def start(message: Message) -> None:
    await message.reply(START)


async def help_(message: Message) -> None:
    await message.reply(HELP)


async def reset(message: Message, service: ConversationService) -> None:
    await service.reset(chat_ref(message))
    await message.reply(RESET_DONE)


async def stop(message: Message, service: ConversationService) -> None:
    stopped = await service.stop(chat_ref(message))
    await message.reply(STOPPED if stopped else NOTHING_TO_STOP)


async def model(
    message: Message,
    command: CommandObject,
    bot: Bot,
    service: ConversationService,
    settings: Settings,
) -> None:
    chat = chat_ref(message)
    name = (command.args or "").strip()
    if not name:
        current = (await service.chat_config(chat)).model
        shown = current or f"{settings.default_model} (default)"
        await message.reply(f"Model: {shown}")
        return
    if not MODEL_NAME.fullmatch(name):
        await message.reply(MODEL_USAGE)
        return
    if not await may_configure(message, bot, settings):
        await message.reply(ADMINS_ONLY)
        return
    new = None if name.lower() in DEFAULT_WORDS else name
    await service.set_model(chat, new)
    await message.reply(f"Model set to {new}." if new else "Model back to the default.")


async def system(
    message: Message,
    command: CommandObject,
    bot: Bot,
    service: ConversationService,
    settings: Settings,
) -> None:
    chat = chat_ref(message)
    prompt = (command.args or "").strip()
    if not prompt:
        current = (await service.chat_config(chat)).system_prompt
        shown = current or settings.system_prompt
        label = "System prompt" if current else "System prompt (default)"
        await message.reply(f"{label}:\n{_clip(shown)}")
        return
    if len(prompt) > MAX_SYSTEM_PROMPT:
        await message.reply(SYSTEM_TOO_LONG)
        return
    if not await may_configure(message, bot, settings):
        await message.reply(ADMINS_ONLY)
        return
    new = None if prompt.lower() in DEFAULT_WORDS else prompt
    await service.set_system_prompt(chat, new)
    await message.reply("System prompt set." if new else "System prompt back to the default.")


async def unknown(message: Message) -> None:
    await message.reply(UNKNOWN)


async def may_configure(message: Message, bot: Bot, settings: Settings) -> bool:
    """Anyone in a private chat; in a group, its admins and the operator's ADMIN_IDS."""
    if not is_group(message.chat) or is_anonymous_admin(message):
        return True
    user = message.from_user
    if user is None:
        return False
    if user.id in settings.admin_ids:
        return True
    try:
        member = await bot.get_chat_member(message.chat.id, user.id)
    except TelegramAPIError as exc:
        log.warning("Could not check whether %s is an admin: %s", user.id, exc)
        return False
    return member.status in (ChatMemberStatus.CREATOR, ChatMemberStatus.ADMINISTRATOR)


def _clip(text: str) -> str:
    return text if len(text) <= SHOWN_PROMPT_CHARS else text[:SHOWN_PROMPT_CHARS] + "…"
