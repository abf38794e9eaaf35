"""Parley's Telegram bot: aiogram 3 in long polling over the shared conversation service.

`TelegramBot(settings, service).run()` polls until cancelled. The pieces, one job each:
`handlers/` (one Router per module), `filters` (when the bot listens), `middlewares` (access
list), `polling` (getUpdates through outages, and the offset confirmed at a stop), `requests`
(retries on every Bot API call), `surface` (the streaming engine's view of a reply), `drafts`
(private replies streamed as native drafts, STREAM_MODE), `render`
(Markdown to entities), `relay` (message in, reply out).

Decisions:
- Edited messages are ignored: the reply to the original stands, and answering again would
  duplicate the reply and the history. No handler asks for them, so Telegram does not send them.
- Messages from bots (loops) and channels (broadcasts) are ignored; anonymous group admins are
  answered like anyone else.
- A forwarded message is a question in a private chat, and never addresses the bot in a group.
"""

from __future__ import annotations

import logging
from functools import partial

from aiogram import Bot, Dispatcher
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import TelegramAPIError

from bots.backoff import Backoff
from bots.config import Settings
from bots.errors import BotStartupError
from bots.platform_observer import NO_PLATFORM_OBSERVER, PlatformObserver
from bots.repair import repair_replies
from bots.shutdown import Grace, finish_in_flight
from bots.startup import DEFAULT_BACKOFF, Link, connect_with_retries, host_of
from bots.telegram.chats import PLATFORM
from bots.telegram.drafts import StreamMode, TelegramDrafts
from bots.telegram.filters import FromPerson
from bots.telegram.handlers import commands, routers
from bots.telegram.middlewares import AccessMiddleware
from bots.telegram.polling import Poller, confirm_bot, telegram_cause
from bots.telegram.proxy import ProxyFailures, aiogram_proxy
from bots.telegram.requests import RetryRequests
from bots.telegram.surface import TelegramBudgets, TelegramLimits, TelegramSurface
from core.conversation import ConversationService

log = logging.getLogger(__name__)

#: The writes Telegram allows a chat.
TELEGRAM_LIMITS = TelegramLimits()
#: Seconds one getUpdates request waits for news on the server.
POLLING_TIMEOUT = 30

__all__ = ["TelegramBot", "TelegramLimits", "bot_api_session", "build_dispatcher"]


class TelegramBot:
    """The Telegram side of Parley; one per process."""

    def __init__(
        self,
        settings: Settings,
        service: ConversationService,
        *,
        write_limits: TelegramLimits = TELEGRAM_LIMITS,
        polling_timeout: int = POLLING_TIMEOUT,
        backoff: Backoff = DEFAULT_BACKOFF,
        platform_observer: PlatformObserver = NO_PLATFORM_OBSERVER,
    ) -> None:
        """`platform_observer` hears of Telegram's 429s (the metrics). `write_limits` and
        `backoff` exist for tests, which may not want to wait Telegram's
        real pace or a real outage's retries."""
        if settings.telegram_bot_token is None:
            raise BotStartupError("TELEGRAM_BOT_TOKEN is not set.")
        self._settings = settings
        self._service = service
        self._budgets = TelegramBudgets(
            write_limits, TelegramDrafts(StreamMode(settings.stream_mode))
        )
        self._polling_timeout = polling_timeout
        self._backoff = backoff
        self._platform_observer = platform_observer
        self._link = Link("Telegram", host_of(settings.telegram_api_base))
        self._grace = Grace(settings.shutdown_grace_seconds)

    platform = PLATFORM

    @property
    def connected(self) -> bool:
        """True from the moment Telegram confirmed the bot (getMe) until polling stops, except
        while getUpdates fails on the network or the server."""
        return self._link.up

    def hurry(self) -> None:
        """Cut the shutdown grace short: the replies in flight stop now."""
        self._grace.end_now()

    async def run(self) -> None:
        """Confirm the bot (retried while Telegram cannot be reached), then poll until cancelled;
        then stop as `bots.shutdown` says, the updates answered confirmed to Telegram."""
        token = self._settings.telegram_bot_token
        assert token is not None
        session = bot_api_session(self._settings, self._platform_observer)
        bot = Bot(
            token.get_secret_value(),
            session=session,
            default=DefaultBotProperties(link_preview_is_disabled=True),
        )
        dispatcher = build_dispatcher(self._settings, self._service, self._budgets)
        poller = Poller(
            bot,
            dispatcher,
            self._link,
            polling_timeout=self._polling_timeout,
            backoff=self._backoff,
        )
        try:
            me = await connect_with_retries(
                self._link, lambda: confirm_bot(bot), telegram_cause, self._backoff
            )
            self._link.confirmed(me.username or str(me.id))
            await _fill_command_menu(bot)
            # Mark the replies a previous run left cut off; stopped at shutdown like a handler.
            poller.start(
                repair_replies(
                    self._service, PLATFORM, partial(TelegramSurface.resuming, bot, self._budgets)
                )
            )
            await poller.run()
        finally:
            self._link.closed()
            await poller.confirm()
            await finish_in_flight("Telegram", poller.handlers, self._grace)
            await bot.session.close()


def bot_api_session(
    settings: Settings, observer: PlatformObserver = NO_PLATFORM_OBSERVER
) -> AiohttpSession:
    """The session for every Bot API call: retries (429s reported to `observer`), and
    TELEGRAM_PROXY when it is set."""
    api = TelegramAPIServer.from_base(settings.telegram_api_base)
    proxy = settings.telegram_proxy
    if proxy is None:
        session = AiohttpSession(api=api)
    else:
        log.info("Telegram: connecting through the proxy %s", proxy.address)
        session = AiohttpSession(api=api, proxy=aiogram_proxy(proxy))
    session.middleware(RetryRequests(observer))
    if proxy is not None:
        session.middleware(ProxyFailures(proxy))  # inside the retries: they see its errors
    return session


def build_dispatcher(
    settings: Settings,
    service: ConversationService,
    budgets: TelegramBudgets,
) -> Dispatcher:
    """The dispatcher with its routers, filters and middlewares; handlers receive `service`,
    `settings` and `budgets` as arguments (aiogram passes Dispatcher keywords through)."""
    dispatcher = Dispatcher(disable_fsm=True, service=service, settings=settings, budgets=budgets)
    dispatcher.message.filter(FromPerson())
    dispatcher.message.middleware(
        AccessMiddleware(settings.telegram_allowed_ids, settings.allow_guests)
    )
    dispatcher.include_routers(*routers())
    return dispatcher


async def _fill_command_menu(bot: Bot) -> None:
    """The command menu is a convenience: failing to fill it costs a warning, not the start."""
    try:
        await bot.set_my_commands(list(commands.COMMANDS))
    except TelegramAPIError as exc:
        log.warning("Telegram: could not fill the command menu: %s", exc)
