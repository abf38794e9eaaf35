"""Parley's Telegram bot: aiogram 3 in long polling over the shared conversation service.

`TelegramBot(settings, service).run()` polls until cancelled. The pieces, one job each:
`handlers/` (one Router per module), `filters` (when the bot listens), `middlewares` (access
list, handler tracking), `requests` (retries on every Bot API call), `surface` (the streaming
engine's view of a reply), `render` (Markdown to entities), `relay` (message in, reply out).

Decisions:
- Edited messages are ignored: the reply to the original stands, and answering again would
  duplicate the reply and the history. No handler asks for them, so Telegram does not send them.
- Messages from bots (loops) and channels (broadcasts) are ignored; anonymous group admins are
  answered like anyone else.
- A forwarded message is a question in a private chat, and never addresses the bot in a group.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from functools import partial

from aiogram import Bot, Dispatcher
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramNetworkError,
    TelegramServerError,
    TelegramUnauthorizedError,
)

from bots.config import Settings
from bots.errors import BotStartupError
from bots.repair import repair_replies
from bots.telegram.chats import PLATFORM
from bots.telegram.filters import FromPerson
from bots.telegram.handlers import commands, routers
from bots.telegram.middlewares import AccessMiddleware, HandlerTasks
from bots.telegram.requests import RetryRequests
from bots.telegram.surface import EditIntervals, TelegramSurface
from core.conversation import ConversationService

log = logging.getLogger(__name__)

#: Telegram's own pace for editing a message.
TELEGRAM_PACE = EditIntervals()
#: Seconds one getUpdates request waits for news on the server.
POLLING_TIMEOUT = 30
#: Seconds the replies in progress get to make their last edit when the bot stops.
SHUTDOWN_GRACE = 5.0

BAD_TOKEN_HELP = (
    "Telegram rejected TELEGRAM_BOT_TOKEN. Copy the token again from @BotFather "
    "(/mybots -> your bot -> API Token)."
)

__all__ = ["EditIntervals", "TelegramBot", "build_dispatcher"]


class TelegramBot:
    """The Telegram side of Parley; one per process."""

    def __init__(
        self,
        settings: Settings,
        service: ConversationService,
        *,
        edit_intervals: EditIntervals = TELEGRAM_PACE,
        polling_timeout: int = POLLING_TIMEOUT,
    ) -> None:
        """`edit_intervals` exists for tests, which may not want to wait Telegram's real pace."""
        if settings.telegram_bot_token is None:
            raise BotStartupError("TELEGRAM_BOT_TOKEN is not set.")
        self._settings = settings
        self._service = service
        self._intervals = edit_intervals
        self._polling_timeout = polling_timeout
        self._connected = False

    platform = PLATFORM

    @property
    def connected(self) -> bool:
        """True from the moment Telegram accepted the token until polling stops."""
        return self._connected

    async def run(self) -> None:
        """Poll for updates until cancelled; then stop the replies in progress and close."""
        token = self._settings.telegram_bot_token
        assert token is not None
        session = AiohttpSession(api=TelegramAPIServer.from_base(self._settings.telegram_api_base))
        session.middleware(RetryRequests())
        bot = Bot(
            token.get_secret_value(),
            session=session,
            default=DefaultBotProperties(link_preview_is_disabled=True),
        )
        tasks = HandlerTasks()
        dispatcher = build_dispatcher(self._settings, self._service, self._intervals, tasks)
        polling: asyncio.Task[None] | None = None
        try:
            await _prepare(bot)
            self._connected = True
            tasks.start(
                repair_replies(self._service, PLATFORM, partial(TelegramSurface.resuming, bot))
            )
            polling = asyncio.create_task(
                dispatcher.start_polling(
                    bot,
                    polling_timeout=self._polling_timeout,
                    handle_signals=False,
                    close_bot_session=False,
                )
            )
            await asyncio.shield(polling)
        finally:
            self._connected = False
            if polling is not None:
                await _stop_polling(dispatcher, polling)
            await tasks.cancel_all(SHUTDOWN_GRACE)
            await bot.session.close()


def build_dispatcher(
    settings: Settings,
    service: ConversationService,
    intervals: EditIntervals,
    tasks: HandlerTasks,
) -> Dispatcher:
    """The dispatcher with its routers, filters and middlewares; handlers receive `service`,
    `settings` and `intervals` as arguments (aiogram passes Dispatcher keywords through)."""
    dispatcher = Dispatcher(
        disable_fsm=True, service=service, settings=settings, intervals=intervals
    )
    dispatcher.update.outer_middleware(tasks)
    dispatcher.message.filter(FromPerson())
    dispatcher.message.middleware(AccessMiddleware(settings.telegram_allowed_ids))
    dispatcher.include_routers(*routers())
    return dispatcher


async def _prepare(bot: Bot) -> None:
    """Drop a webhook (Telegram refuses long polling while one is set) and fill the command
    menu. Transient failures only cost a warning: polling retries the connection by itself. A
    rejected token ends the start, as polling could never work."""
    try:
        await bot.delete_webhook()
        await bot.set_my_commands(list(commands.COMMANDS))
    except TelegramUnauthorizedError:
        raise BotStartupError(BAD_TOKEN_HELP) from None
    except (TelegramNetworkError, TelegramServerError, TelegramBadRequest) as exc:
        log.warning("Could not prepare the bot (webhook, command menu): %s", exc)


async def _stop_polling(dispatcher: Dispatcher, polling: asyncio.Task[None]) -> None:
    """Stop aiogram's polling the way it expects: its stop signal cancels its own polling task,
    which cancelling `start_polling` from outside would leave running."""
    if not polling.done():
        try:
            await dispatcher.stop_polling()
        except RuntimeError:  # not started yet: nothing of its own to clean up
            polling.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await polling
