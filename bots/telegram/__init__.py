"""Parley's Telegram bot: aiogram 3 over the shared conversation service.

`TelegramBot(settings, service).run()` takes updates until cancelled, by long polling or, with
TELEGRAM_WEBHOOK_URL, as a webhook. The pieces, one job each:
`handlers/` (one Router per module), `filters` (when the bot listens), `middlewares` (access
list), `intake` (where every update enters the dispatcher, and the handlers the stop waits for),
`polling` (getUpdates through outages, and the offset confirmed at a stop), `webhook` (the
server Telegram posts updates to, its secret and answers), `requests`
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
from typing import Protocol

from aiogram import Bot, Dispatcher
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import TelegramAPIError
from aiogram.types import User

from bots.backoff import Backoff
from bots.config import Settings
from bots.errors import BotStartupError
from bots.platform_observer import NO_PLATFORM_OBSERVER, PlatformObserver
from bots.repair import repair_replies
from bots.replica import Replica
from bots.shutdown import Grace, finish_in_flight
from bots.startup import DEFAULT_BACKOFF, Link, connect_with_retries, host_of
from bots.telegram.chats import PLATFORM
from bots.telegram.drafts import StreamMode, TelegramDrafts
from bots.telegram.filters import FromPerson
from bots.telegram.handlers import commands, routers
from bots.telegram.intake import UpdateIntake
from bots.telegram.middlewares import AccessMiddleware
from bots.telegram.polling import Poller, telegram_cause
from bots.telegram.proxy import ProxyFailures, aiogram_proxy
from bots.telegram.requests import RetryRequests
from bots.telegram.surface import TelegramBudgets, TelegramLimits, TelegramSurface
from bots.telegram.webhook import Webhook
from core.conversation import ConversationService

log = logging.getLogger(__name__)

#: The writes Telegram allows a chat.
TELEGRAM_LIMITS = TelegramLimits()
#: Seconds one getUpdates request waits for news on the server.
POLLING_TIMEOUT = 30

__all__ = ["TelegramBot", "TelegramLimits", "bot_api_session", "build_dispatcher"]


class Receiver(Protocol):
    """How updates reach the intake: `Poller` (getUpdates) or `Webhook` (Telegram posts them)."""

    async def connect(self) -> User:
        """Confirm the bot and get Telegram ready to send updates; retried while it cannot be
        reached."""
        ...

    async def run(self) -> None:
        """Take updates until cancelled."""
        ...

    async def close(self) -> None:
        """Take no more updates; bounded, and never raises."""
        ...


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
        replica: Replica | None = None,
    ) -> None:
        """`platform_observer` hears of Telegram's 429s (the metrics). `replica`: this process
        shares the database with other replicas (PostgreSQL): updates go through its inbox.
        `write_limits` and `backoff` exist for tests, which may not want to wait Telegram's
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
        self._replica = replica

    platform = PLATFORM

    @property
    def connected(self) -> bool:
        """True from the moment Telegram confirmed the bot (getMe, and setWebhook in webhook
        mode) until it takes no more updates, except while getUpdates fails on the network or
        the server."""
        return self._link.up

    def hurry(self) -> None:
        """Cut the shutdown grace short: the replies in flight stop now."""
        self._grace.end_now()

    async def run(self) -> None:
        """Confirm the bot (retried while Telegram cannot be reached), then take updates until
        cancelled; then stop as `bots.shutdown` says (polling: the updates answered confirmed to
        Telegram; webhook: the server closed first)."""
        token = self._settings.telegram_bot_token
        assert token is not None
        session = bot_api_session(self._settings, self._platform_observer)
        bot = Bot(
            token.get_secret_value(),
            session=session,
            default=DefaultBotProperties(link_preview_is_disabled=True),
        )
        dispatcher = build_dispatcher(self._settings, self._service, self._budgets)
        inbox = None if self._replica is None else self._replica.inbox(PLATFORM)
        intake = UpdateIntake(bot, dispatcher, inbox)
        receiver = self._receiver(bot, intake)
        try:
            me = await connect_with_retries(
                self._link, receiver.connect, telegram_cause, self._backoff
            )
            self._link.confirmed(me.username or str(me.id))
            await _fill_command_menu(bot)
            # Mark the replies a previous run left cut off; stopped at shutdown like a handler.
            intake.start(
                repair_replies(
                    self._service, PLATFORM, partial(TelegramSurface.resuming, bot, self._budgets)
                )
            )
            await receiver.run()
        finally:
            self._link.closed()
            await receiver.close()
            intake.stop_feeding()
            await finish_in_flight("Telegram", intake.handlers, self._grace)
            await intake.close()
            await bot.session.close()

    def _receiver(self, bot: Bot, intake: UpdateIntake) -> Receiver:
        """A webhook when TELEGRAM_WEBHOOK_URL is set, else long polling."""
        if self._settings.telegram_webhook_url is not None:
            return Webhook(bot, intake, self._settings)
        return Poller(
            bot,
            intake,
            self._link,
            polling_timeout=self._polling_timeout,
            backoff=self._backoff,
        )


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
