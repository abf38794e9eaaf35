"""The commands: /start /help /reset /model /system /stop /image /usage /stats /budget, and an
answer to unknown ones (/persona and the menus' buttons: `menus.py`)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiogram import Bot, Router
from aiogram.enums import ChatMemberStatus
from aiogram.exceptions import TelegramAPIError, TelegramBadRequest, TelegramForbiddenError
from aiogram.filters import Command, CommandObject, CommandStart
from aiogram.types import BotCommand, BufferedInputFile, Chat, Message, User
from aiogram.utils.chat_action import ChatActionSender

from bots.config import Settings
from bots.drawing import IMAGE_USAGE, Switch, draw, parse_image_args, switch_image_generation
from bots.telegram.chats import author_of, chat_ref, is_anonymous_admin, is_group
from bots.telegram.filters import UnknownCommand
from bots.telegram.keyboards import model_keyboard
from bots.telegram.middlewares import asker_of
from bots.usage_view import limits_in_force, stats_text, usage_text
from core import budget_command, chat_settings
from core.conversation import ConversationService, describe_reset, describe_stop
from core.errors import InvalidSettingError, ParleyError, describe
from core.usage import utc_now

log = logging.getLogger(__name__)

#: What setMyCommands registers, so Telegram's menu offers them.
COMMANDS = (
    BotCommand(command="ask", description="Ask a question (in groups)"),
    BotCommand(command="reset", description="Start a new conversation"),
    BotCommand(command="model", description="Show or change the model"),
    BotCommand(command="system", description="Show or change the system prompt"),
    BotCommand(command="persona", description="Choose a persona"),
    BotCommand(command="stop", description="Stop the reply being written"),
    BotCommand(command="image", description="Draw an image: /image PROMPT"),
    BotCommand(command="usage", description="Your use and what is left of your budget"),
    BotCommand(command="stats", description="Top users, models and cost (admins)"),
    BotCommand(command="budget", description="Show the budgets here (operators: set them)"),
    BotCommand(command="help", description="How to use this bot"),
)
#: The answer showing a system prompt is cut to this, to fit one Telegram message.
SHOWN_PROMPT_CHARS = 3500

HELP = (
    "I answer with an AI model and remember this chat's conversation.\n\n"
    "In a private chat, just write. In a group, mention me, reply to one of my messages, "
    "or use /ask QUESTION.\n"
    "I also read photos, voice notes and text files: send them with your question as the "
    "caption (in a group, mention me in it, or reply to them with /ask).\n\n"
    "/reset: start a new conversation\n"
    "/model [NAME]: show or change the model (default: the operator's)\n"
    "/system [TEXT]: show or change the system prompt\n"
    "/persona [NAME]: choose a persona (a prompt, and perhaps a model, set up by the operator)\n"
    "/stop: stop your reply being written (group admins: every reply)\n"
    "/image PROMPT: draw an image, if the bot's operator set it up\n"
    "/usage: your use today and this month, and what is left of your budget "
    "(in a group, sent to you privately)\n"
    "/stats: top users, models and cost (group admins and the operator)\n"
    "/budget: the spending limits here (the bot's operators set them)\n"
    "In groups only admins may change the model, the system prompt or the persona, or turn drawing "
    "off and on (/image off, /image on)."
)
START = "Hello! " + HELP
ADMINS_ONLY = "Only group admins can change this."
#: Telegram refused the drawn image (over its 10 MB for photos, or a shape it will not take).
IMAGE_NOT_SENT = "The image was drawn, but Telegram would not take it. Please try again."
UNKNOWN = "I don't know that command. /help lists what I can do."
SENT_PRIVATELY = "I sent you the figures in a private message."
#: In a group, when the bot may not write to the person (they never started it).
NOT_PRIVATE = (
    "I cannot write to you privately (start a chat with me first), so here it is:\n\n{text}"
)
#: /stats from an admin who posts as the group: it could only be answered in the group.
STATS_NOT_ANONYMOUSLY = (
    "Ask for /stats from your own account: the figures name people, and an anonymous admin "
    "can only be answered in the group."
)
STATS_ADMINS_ONLY = "Only group admins and the bot's operator (ADMIN_IDS) can see /stats."


def make_router() -> Router:
    router = Router(name="commands")
    router.message.register(start, CommandStart())
    router.message.register(help_, Command("help"))
    router.message.register(reset, Command("reset"))
    router.message.register(stop, Command("stop"))
    router.message.register(model, Command("model"))
    router.message.register(system, Command("system"))
    router.message.register(image, Command("image"))
    router.message.register(usage, Command("usage"))
    router.message.register(stats, Command("stats"))
    router.message.register(budget, Command("budget"))
    known = [command.command for command in COMMANDS] + ["start"]
    router.message.register(unknown, UnknownCommand(known))
    return router


async def start(message: Message) -> None:
    await message.reply(START)


async def help_(message: Message) -> None:
    await message.reply(HELP)


async def reset(
    message: Message, bot: Bot, service: ConversationService, settings: Settings
) -> None:
    # The admin check is passed, not awaited: the reset takes its place among the chat's
    # messages before that question goes to Telegram.
    report = await service.reset(chat_ref(message), _whose_replies(message, bot, settings))
    await message.reply(describe_reset(report))


async def stop(
    message: Message, bot: Bot, service: ConversationService, settings: Settings
) -> None:
    whose = await _whose_replies(message, bot, settings)
    stopped = await service.stop(chat_ref(message), whose)
    await message.reply(describe_stop(stopped, own_only=whose is not None))


async def _whose_replies(message: Message, bot: Bot, settings: Settings) -> str | None:
    """The author whose replies /stop and /reset act on: in a group, the caller's own, as
    others are waiting for theirs; everyone's (None) for those `may_configure` lets decide
    for the chat."""
    if await may_configure(message, bot, settings):
        return None
    return author_of(message).id


#: A /model or /system handler; aiogram fills in each parameter by its name.
_SettingHandler = Callable[
    [Message, CommandObject, Bot, ConversationService, Settings], Awaitable[None]
]


def _setting_command(setting: chat_settings.Setting) -> _SettingHandler:
    """The handler of `setting`'s command: anyone may ask for the value; `may_configure`
    decides who may change it."""

    async def handle(
        message: Message,
        command: CommandObject,
        bot: Bot,
        service: ConversationService,
        settings: Settings,
    ) -> None:
        argument = command.args
        if not chat_settings.asks_current(argument) and not await may_configure(
            message, bot, settings
        ):
            await message.reply(ADMINS_ONLY)
            return
        chat = chat_ref(message)
        answer = await chat_settings.apply(setting, service, chat, argument, settings)
        if setting is chat_settings.MODEL and chat_settings.asks_current(argument):
            # The configured models as buttons, so nobody needs to know their exact names.
            own = (await service.chat_config(chat)).model
            await message.reply(
                _clip(answer.text), reply_markup=model_keyboard(service.offered_models(), own)
            )
            return
        await message.reply(_clip(answer.text))

    return handle


model = _setting_command(chat_settings.MODEL)
system = _setting_command(chat_settings.SYSTEM_PROMPT)


async def image(
    message: Message,
    command: CommandObject,
    bot: Bot,
    service: ConversationService,
    settings: Settings,
) -> None:
    """`/image PROMPT` sends the drawing as a photo captioned with the prompt; `/image on|off`
    is the chat's switch, for those `may_configure` lets decide."""
    wish = parse_image_args(command.args)
    if wish is None:
        await message.reply(IMAGE_USAGE)
    elif isinstance(wish, Switch):
        if await may_configure(message, bot, settings):
            await message.reply(await switch_image_generation(service, chat_ref(message), wish))
        else:
            await message.reply(ADMINS_ONLY)
    else:
        await _draw(message, wish, bot, service, settings)


async def _draw(
    message: Message, prompt: str, bot: Bot, service: ConversationService, settings: Settings
) -> None:
    topic = message.message_thread_id if message.is_topic_message else None
    try:
        async with ChatActionSender.upload_photo(
            bot=bot, chat_id=message.chat.id, message_thread_id=topic
        ):
            drawing = await draw(
                service, settings, chat_ref(message), prompt, asker_of(message, settings)
            )
    except ParleyError as exc:
        log.info("/image in %s: %s", message.chat.id, exc)
        await message.reply(describe(exc))
        return
    photo = BufferedInputFile(drawing.data, drawing.file_name)
    try:
        await message.reply_photo(photo, caption=drawing.caption)
    except TelegramBadRequest as exc:
        log.warning("/image in %s: Telegram refused the photo: %s", message.chat.id, exc.message)
        await message.reply(IMAGE_NOT_SENT)


async def usage(
    message: Message, bot: Bot, service: ConversationService, settings: Settings
) -> None:
    """`/usage`: the caller's own use and budgets, and the chat's; privately in a group."""
    caller, chat = asker_of(message, settings), chat_ref(message)
    text = await usage_text(
        service.store,
        chat,
        caller.id,
        await limits_in_force(service.gate.budgets, chat, caller),
        utc_now(),
        in_private=not is_group(message.chat),
    )
    await _tell_privately(message, bot, text)


async def stats(
    message: Message, bot: Bot, service: ConversationService, settings: Settings
) -> None:
    """`/stats`: ADMIN_IDS see the whole bot, anywhere; a group's admins see that group."""
    user = message.from_user
    operator = user is not None and user.id in settings.admin_ids
    if not operator and not (
        is_group(message.chat) and await may_configure(message, bot, settings)
    ):
        await message.reply(STATS_ADMINS_ONLY)
        return
    if is_anonymous_admin(message):  # no one to write to privately: the figures name people
        await message.reply(STATS_NOT_ANONYMOUSLY)
        return
    chat = None if operator else chat_ref(message)
    text = await stats_text(service.store, utc_now(), chat=chat)
    await _tell_privately(message, bot, text)


async def _tell_privately(message: Message, bot: Bot, text: str) -> None:
    """`text` as a reply in a private chat; in a group, to the person privately when the bot
    may write to them (Telegram refuses until they started it), else as a reply saying so."""
    user = message.from_user
    if not is_group(message.chat) or user is None or message.sender_chat is not None:
        await message.reply(_clip(text))
        return
    try:
        await bot.send_message(user.id, _clip(text))
    except (TelegramForbiddenError, TelegramBadRequest) as exc:
        log.info("Could not write to %s privately: %s", user.id, exc.message)
        await message.reply(_clip(NOT_PRIVATE.format(text=text)))
        return
    await message.reply(SENT_PRIVATELY)


async def budget(
    message: Message, command: CommandObject, service: ConversationService, settings: Settings
) -> None:
    """`/budget` shows the budgets here; ADMIN_IDS set or clear one for the chat, or for a user
    by id or as a reply to their message (`core.budget_command`)."""
    replied = message.reply_to_message
    target = replied.from_user if replied is not None and replied.from_user is not None else None
    asker = message.from_user
    try:
        wish = budget_command.parse(command.args, None if target is None else str(target.id))
    except InvalidSettingError as exc:
        await message.reply(str(exc))
        return
    if isinstance(wish, budget_command.Change) and (
        asker is None or asker.id not in settings.admin_ids
    ):
        await message.reply(budget_command.ADMINS_ONLY)
        return
    asker_id = author_of(message).id
    await message.reply(
        await budget_command.apply(service.gate.budgets, chat_ref(message), wish, asker_id)
    )


async def unknown(message: Message) -> None:
    await message.reply(UNKNOWN)


async def may_configure(message: Message, bot: Bot, settings: Settings) -> bool:
    """Anyone in a private chat; in a group, its admins and the operator's ADMIN_IDS."""
    if is_anonymous_admin(message):
        return True
    return await may_configure_as(message.chat, message.from_user, bot, settings)


async def may_configure_as(chat: Chat, user: User | None, bot: Bot, settings: Settings) -> bool:
    """`may_configure` for `user` in `chat`: also who pressed a menu's button."""
    if not is_group(chat):
        return True
    if user is None:
        return False
    if user.id in settings.admin_ids:
        return True
    try:
        member = await bot.get_chat_member(chat.id, user.id)
    except TelegramAPIError as exc:
        log.warning("Could not check whether %s is an admin: %s", user.id, exc)
        return False
    return member.status in (ChatMemberStatus.CREATOR, ChatMemberStatus.ADMINISTRATOR)


def _clip(text: str) -> str:
    """Fit `text` in one message (a long system prompt is shown in part)."""
    return text if len(text) <= SHOWN_PROMPT_CHARS else text[:SHOWN_PROMPT_CHARS] + "…"
