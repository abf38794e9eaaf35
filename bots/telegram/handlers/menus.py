"""/persona, and the buttons of the /persona and /model keyboards (`bots.telegram.keyboards`).

A button press is a callback query: the bot must answer it (the client shows a spinner until
then), and it comes from whoever pressed, who in a group need not be the one who asked for the
keyboard. So a press is checked as the command would be: access (TELEGRAM_ALLOWED_IDS), then,
in a group, that the presser may change the chat's settings. A refused press is answered with
an alert and changes nothing; an accepted one replaces the keyboard's message with the
confirmation, so the choice is on record in the chat and the buttons are gone.
"""

from __future__ import annotations

import logging

from aiogram import Bot, F, Router
from aiogram.filters import Command, CommandObject
from aiogram.types import CallbackQuery, Message

from bots.access import Access
from bots.config import Settings
from bots.telegram.chats import chat_ref
from bots.telegram.handlers.commands import ADMINS_ONLY, may_configure, may_configure_as
from bots.telegram.keyboards import Choice, Menu, parse, persona_keyboard
from bots.telegram.middlewares import access_of_ids
from core import chat_settings
from core.conversation import ChatRef, ConversationService
from core.errors import InvalidSettingError
from core.personas import describe_persona, persona_changed

log = logging.getLogger(__name__)

#: A press on a keyboard the bot can no longer read (too old) or did not send.
STALE = "This menu is no longer valid; send the command again."
#: A press from someone not let in (`bots.access`).
NOT_ALLOWED = "You are not allowed to use this bot here."


def make_router() -> Router:
    router = Router(name="menus")
    router.message.register(persona, Command("persona"))
    router.callback_query.register(pressed, F.data)
    return router


async def persona(
    message: Message,
    command: CommandObject,
    bot: Bot,
    service: ConversationService,
    settings: Settings,
) -> None:
    """`/persona` shows the chat's persona with the keyboard; `/persona NAME` chooses one."""
    chat = chat_ref(message)
    if chat_settings.asks_current(command.args):
        chosen = (await service.chat_config(chat)).persona
        text = describe_persona(chosen, service.personas)
        markup = persona_keyboard(service.personas, chosen) if len(service.personas) else None
        await message.reply(text, reply_markup=markup)
        return
    if not await may_configure(message, bot, settings):
        await message.reply(ADMINS_ONLY)
        return
    await message.reply(await _choose_persona(service, chat, command.args or ""))


async def _choose_persona(service: ConversationService, chat: ChatRef, argument: str) -> str:
    try:
        chosen = await service.set_persona(chat, argument)
    except InvalidSettingError as exc:
        return str(exc)
    return persona_changed(chosen, await service.chat_config(chat))


async def pressed(
    query: CallbackQuery, bot: Bot, service: ConversationService, settings: Settings
) -> None:
    """A button of a /persona or /model keyboard: checked as the command, then applied."""
    choice = parse(query.data)
    message = query.message
    if choice is None or not isinstance(message, Message):
        await query.answer(STALE, show_alert=True)
        return
    level = access_of_ids(
        {message.chat.id, query.from_user.id},
        settings.telegram_allowed_ids,
        settings.allow_guests,
    )
    if level is Access.REFUSED:
        await query.answer(NOT_ALLOWED, show_alert=True)
        return
    if not await may_configure_as(message.chat, query.from_user, bot, settings):
        await query.answer(ADMINS_ONLY, show_alert=True)
        return
    text = await _apply(choice, service, chat_ref(message), settings)
    await query.answer()
    await message.edit_text(text)


async def _apply(
    choice: Choice, service: ConversationService, chat: ChatRef, settings: Settings
) -> str:
    if choice.menu is Menu.PERSONA:
        return await _choose_persona(service, chat, choice.value)
    answer = await chat_settings.apply(chat_settings.MODEL, service, chat, choice.value, settings)
    return answer.text
