"""`parley run`: every bot whose token is set, on one event loop.

The bots share one store, one conversation service (so a chat's order and `/stop` hold
across them) and the core's one HTTP pool. Start-up problems that the operator must fix
(no token, a refused intent, an unusable database) end the run with their own message; a
platform that cannot be reached is retried (`bots.startup`), and a signal stops the bots
gracefully (`_Stopper`, `bots.shutdown`). On PostgreSQL the process is one replica among any
number (`bots.replica`): its lease is kept from before `recover()` until every reply is saved.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from typing import Protocol

from bots.config import Settings
from bots.doctor import preflight
from bots.errors import BotStartupError
from bots.monitoring import Monitoring
from bots.open_access import open_platforms
from bots.platform_observer import NO_PLATFORM_OBSERVER, PlatformObserver
from bots.replica import Replica, lease_from_environment
from bots.startup import seconds
from core.client import AsyncClient, client_for
from core.conversation import ConversationService
from core.providers.http import close_shared_client
from storage import open_store

log = logging.getLogger(__name__)

#: Streaming allocates several short-lived objects per chunk; at the default gen-0 threshold
#: (700) the collector runs hundreds of times a second under load, each run a loop pause.
GC_THRESHOLDS = (50_000, 20, 100)


def tune_gc_for_streaming() -> None:
    """Collect less often, and never re-scan what start-up loaded (modules, settings)."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


class Bot(Protocol):
    """What `parley run` (and its health endpoint) needs of a platform's bot."""

    #: The platform's name as stored in the history ("telegram", "discord").
    platform: str

    @property
    def connected(self) -> bool:
        """True once the platform confirmed the bot, and while its connection is up."""
        ...

    def hurry(self) -> None:
        """Cut the shutdown grace short (a second signal): the replies in flight stop now."""
        ...

    async def run(self) -> None:
        """Serve until cancelled."""
        ...


def build_bots(
    settings: Settings,
    service: ConversationService,
    platform_observer: PlatformObserver = NO_PLATFORM_OBSERVER,
    replica: Replica | None = None,
) -> list[Bot]:
    """One bot per platform with a token; the platform libraries load only when used.
    `replica`: this process is one of several on a PostgreSQL database (Telegram's updates
    then go through the shared inbox; Discord's are split by shard)."""
    bots: list[Bot] = []
    if settings.telegram_bot_token is not None:
        from bots.telegram import TelegramBot

        bots.append(
            TelegramBot(settings, service, platform_observer=platform_observer, replica=replica)
        )
    if settings.discord_bot_token is not None:
        from bots.discord import DiscordBot

        bots.append(DiscordBot(settings, service, platform_observer=platform_observer))
    return bots


def _warn_if_no_default_provider(client: AsyncClient) -> None:
    """Say at start-up, not at the first message, that replies cannot work as configured."""
    default = client.registry.default if client.registry else None
    if default is not None and not default.working:
        log.warning(
            "The default provider (%s) has no API key: set OPENAI_API_KEY, or point "
            "OPENAI_BASE_URL at a local server. Until then replies fail unless a chat's model "
            "is routed to another working provider.",
            default.base_url,
        )


def _warn_if_open(settings: Settings) -> None:
    """One warning per bot that anyone may use: said at every start, not only in the docs."""
    for platform in open_platforms(settings):
        log.warning("%s", platform.warning)


class _Stopper:
    """SIGTERM (systemd, docker stop) and SIGINT (Ctrl-C) stop the run, in two steps.

    The first cancels the run: each bot takes no new message and gives its replies in flight
    SHUTDOWN_GRACE_SECONDS (`bots.shutdown`), then the run ends and `parley` exits with 0. A
    second signal ends that grace at once (`Bot.hurry`); the rest of the stop still happens.
    """

    def __init__(self, grace: float) -> None:
        self._grace = grace
        self._run = asyncio.current_task()
        self._bots: list[Bot] = []
        self._stopping = False

    def install(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            # Not possible outside the main thread or on Windows; Ctrl-C still works there.
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._received, sig)

    def watch(self, bot: Bot) -> None:
        self._bots.append(bot)

    def _received(self, sig: signal.Signals) -> None:
        if not self._stopping:
            self._stopping = True
            log.info(
                "%s: stopping; replies in flight get up to %s (send it again to stop at once)",
                sig.name,
                seconds(self._grace),
            )
            if self._run is not None:
                self._run.cancel()
            return
        log.warning("%s again: cutting the replies in flight short", sig.name)
        for bot in self._bots:
            bot.hurry()


async def run_bots(settings: Settings) -> None:
    """Run until cancelled; the first bot to fail for good ends the run with its error."""
    if settings.telegram_bot_token is None and settings.discord_bot_token is None:
        raise BotStartupError(
            "No bot token is set: put TELEGRAM_BOT_TOKEN and/or DISCORD_BOT_TOKEN in .env "
            "(see README, 'Platform set-up')."
        )
    stopper = _Stopper(settings.shutdown_grace_seconds)
    stopper.install()
    await preflight(settings)  # a rejected token or a missing intent stops here, with its fix
    _warn_if_open(settings)
    tune_gc_for_streaming()
    monitoring = Monitoring(settings)
    store = await open_store(settings.database_url, on_write=monitoring.on_write)
    try:
        # Before recover(): with its lease alive, this replica's replies are spared like every
        # other live replica's (None with SQLite: one process, no replicas).
        replica = await Replica.start(store, settings.database_url, lease_from_environment())
    except BaseException:
        await store.close()
        raise
    client = client_for(settings)
    _warn_if_no_default_provider(client)
    service = ConversationService(store, client, settings, observer=monitoring.observer)
    try:
        bots = build_bots(settings, service, monitoring.platform_observer, replica)
        await monitoring.start(bots, store)  # before the bots: 503 while they connect
        # Only the chats of the bots this process runs: a `parley chat` beside it, or another
        # `parley run` serving the other platform from the same database, keeps its replies.
        for bot in bots:
            await service.recover(bot.platform)
        # Each bot says "running as @name" once its platform has confirmed it.
        log.info("Starting: %s", ", ".join(type(bot).__name__ for bot in bots))
        try:
            async with asyncio.TaskGroup() as group:
                for bot in bots:
                    stopper.watch(bot)
                    group.create_task(bot.run())
        except* Exception as failures:
            raise failures.exceptions[0] from None
    finally:
        await monitoring.stop()
        await service.aclose()
        if replica is not None:  # its heartbeats went on until every reply was saved
            await replica.leave()
        await store.close()
        await close_shared_client()
