"""The shared start-up retries (`bots.startup`), discord.py's reconnect line, and `connected`.

Units for the backoff, the causes and the log lines; then each bot in this process against its
fake going away and coming back, to check what `connected` (read by the health endpoint) says
during and after the outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import discord.client
import pytest
from aiogram.exceptions import TelegramNetworkError, TelegramServerError
from aiogram.methods import GetMe

from bots.app import Bot
from bots.backoff import Backoff
from bots.config import Settings
from bots.discord import DiscordBot, reconnect
from bots.discord.reconnect import RECONNECT_MESSAGE, ReconnectLines
from bots.errors import BotStartupError
from bots.startup import Link, connect_with_retries, network_cause
from bots.telegram import TelegramBot
from bots.telegram.polling import telegram_cause
from core.client import AsyncClient
from core.conversation import ConversationService
from storage import open_store
from tests.core_support import LogLines
from tests.fakes.discord_api import FakeDiscord
from tests.fakes.telegram_api import ApiError, FakeTelegramAPI

WAIT = 10.0
FAST = Backoff(first=0.05, cap=0.2)


def refused() -> aiohttp.ClientConnectorError:
    """What aiohttp raises for a closed port."""
    key = aiohttp.client_reqrep.ConnectionKey("127.0.0.1", 1, False, True, None, None, None)
    return aiohttp.ClientConnectorError(key, ConnectionRefusedError(errno.ECONNREFUSED, "refused"))


def wrapped(cause: BaseException) -> TelegramNetworkError:
    """aiogram's wrapping of an aiohttp error, chained as aiogram chains it."""
    try:
        raise TelegramNetworkError(GetMe(), f"{type(cause).__name__}: {cause}") from cause
    except TelegramNetworkError as exc:
        return exc


class Status(Exception):
    status = 502


def test_backoff_doubles_up_to_its_cap() -> None:
    delays = Backoff(first=1, cap=60).delays()
    assert [next(delays) for _ in range(9)] == [1, 2, 4, 8, 16, 32, 60, 60, 60]


@pytest.mark.parametrize(
    ("failure", "cause"),
    [
        (refused(), "connection refused"),
        (wrapped(refused()), "connection refused"),
        (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), "name not resolved"),
        (ConnectionResetError(errno.ECONNRESET, "reset"), "connection reset"),
        (wrapped(aiohttp.ServerDisconnectedError()), "server disconnected"),
        (TimeoutError(), "timed out"),
        (Status(), "server error 502"),
        (ValueError("a bug"), None),
        (BotStartupError("fix it"), None),
    ],
)
def test_network_cause_names_the_failure_in_a_few_words(
    failure: BaseException, cause: str | None
) -> None:
    assert network_cause(failure) == cause


def test_telegram_cause_covers_the_bot_apis_own_failures() -> None:
    assert (
        telegram_cause(TelegramServerError(GetMe(), "Bad Gateway")) == "server error: Bad Gateway"
    )
    assert telegram_cause(wrapped(refused())) == "connection refused"
    assert telegram_cause(ValueError()) is None


def startup_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "bots.startup"]


async def test_retries_log_one_line_each_then_return(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    failures: list[BaseException] = [refused(), TimeoutError()]

    async def attempt() -> str:
        if failures:
            raise failures.pop(0)
        return "me"

    link = Link("Telegram", "api.example:443")
    assert await connect_with_retries(link, attempt, network_cause, FAST) == "me"
    assert startup_lines(caplog) == [
        "Telegram: cannot reach api.example:443 (connection refused); retrying in 0.05 s",
        "Telegram: cannot reach api.example:443 (timed out); retrying in 0.1 s",
    ]
    assert not link.up  # only the platform's confirmation makes it so
    link.confirmed("parley_bot")
    assert link.up
    assert startup_lines(caplog)[-1] == "Telegram: running as @parley_bot"


@pytest.mark.parametrize("failure", [BotStartupError("fix the token"), ValueError("a bug")])
async def test_what_is_no_outage_is_not_retried(
    failure: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    tries = 0

    async def attempt() -> None:
        nonlocal tries
        tries += 1
        raise failure

    with pytest.raises(type(failure)):
        await connect_with_retries(Link("Discord", "h"), attempt, network_cause, FAST)
    assert tries == 1 and not startup_lines(caplog)


def test_link_reports_an_outage_once_it_is_over(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    link = Link("Discord", "gateway.example")
    link.failed("connection refused", 1)  # before the start: no outage to report later
    link.confirmed("Parley")
    link.answered()
    assert startup_lines(caplog)[1:] == ["Discord: running as @Parley"]
    link.lost()
    assert not link.up
    link.answered()
    assert link.up
    assert startup_lines(caplog)[-1].startswith("Discord: connected again after ")
    link.closed()
    assert not link.up


def test_discord_reconnect_traceback_becomes_one_warning_line() -> None:
    try:
        raise refused()
    except aiohttp.ClientConnectorError:
        exc_info = sys.exc_info()
    record = logging.LogRecord(
        "discord.client", logging.ERROR, __file__, 1, RECONNECT_MESSAGE, (3.21,), exc_info
    )
    assert ReconnectLines("gateway.example").filter(record)
    assert record.getMessage() == (
        "Discord: cannot reach gateway.example (connection refused); reconnecting in 3.21 s"
    )
    assert record.levelno == logging.WARNING and record.exc_info is None
    other = logging.LogRecord("discord.client", logging.INFO, __file__, 1, "hello", (), None)
    assert ReconnectLines("gateway.example").filter(other) and other.getMessage() == "hello"


def test_discord_reconnects_at_most_about_a_minute_apart() -> None:
    reconnect.use_capped_backoff()
    backoff = discord.client.ExponentialBackoff()
    assert isinstance(backoff, reconnect.CappedBackoff)
    waits = [backoff.delay() for _ in range(30)]
    assert max(waits) <= 2**reconnect.RECONNECT_MAX_EXPONENT
    assert max(waits[10:]) > 2**5  # still exponential: the ceiling is reached, with jitter


# `connected` through an outage, each bot in this process against its fake.


@contextlib.asynccontextmanager
async def running(
    make_bot: Callable[[Settings, ConversationService], Bot], settings: Settings
) -> AsyncIterator[Bot]:
    store = await open_store(settings.database_url)
    service = ConversationService(store, AsyncClient(), settings)
    bot = make_bot(settings, service)
    task = asyncio.create_task(bot.run())
    try:
        yield bot
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, WAIT)
        await service.aclose()
        await store.close()


async def test_telegram_connected_follows_an_outage(tmp_path: Path, lines: LogLines) -> None:
    async with FakeTelegramAPI() as tg:
        settings = Settings(
            _env_file=None,
            telegram_bot_token=tg.token,
            telegram_api_base=tg.base_url,
            database_url=f"sqlite:///{tmp_path}/p.db",
        )

        def make(settings: Settings, service: ConversationService) -> Bot:
            return TelegramBot(settings, service, polling_timeout=1, backoff=FAST)

        async with running(make, settings) as bot:
            await lines.wait("Telegram: running as")
            assert bot.connected
            await tg.go_away()
            await lines.wait("Telegram: cannot reach")
            assert not bot.connected
            await tg.come_back()
            await lines.wait("Telegram: connected again")
            assert bot.connected
        assert not bot.connected


async def test_discord_connected_follows_an_outage(tmp_path: Path, lines: LogLines) -> None:
    async with FakeDiscord() as discord:
        settings = Settings(
            _env_file=None,
            discord_bot_token=discord.token,
            discord_api_base=discord.api_base,
            discord_gateway_url=discord.gateway_url,
            database_url=f"sqlite:///{tmp_path}/p.db",
        )

        def make(settings: Settings, service: ConversationService) -> Bot:
            return DiscordBot(settings, service, backoff=FAST)

        async with running(make, settings) as bot:
            await lines.wait("Discord: running as")
            assert bot.connected
            await discord.go_away()
            await lines.wait("Discord: cannot reach")
            assert not bot.connected
            await discord.come_back()
            await lines.wait("Discord: connected again")
            assert bot.connected and discord.resumed == 1
        assert not bot.connected


async def test_an_address_that_is_no_bot_api_stops_with_its_fix(tmp_path: Path) -> None:
    async with FakeTelegramAPI() as tg:
        tg.inject_error("getMe", ApiError(404, "Not Found"))
        settings = Settings(
            _env_file=None,
            telegram_bot_token=tg.token,
            telegram_api_base=tg.base_url,
            database_url=f"sqlite:///{tmp_path}/p.db",
        )
        service = ConversationService(None, None, settings)  # type: ignore[arg-type]  # unused
        with pytest.raises(BotStartupError, match="TELEGRAM_API_BASE") as stopped:
            await asyncio.wait_for(TelegramBot(settings, service, backoff=FAST).run(), WAIT)
    assert tg.base_url in str(stopped.value)


async def test_an_address_that_is_no_discord_api_stops_with_its_fix(tmp_path: Path) -> None:
    async with FakeDiscord() as discord:
        settings = Settings(
            _env_file=None,
            discord_bot_token=discord.token,
            discord_api_base=discord.api_base.replace("/v10", "/v1"),
            discord_gateway_url=discord.gateway_url,
        )
        service = ConversationService(None, None, settings)  # type: ignore[arg-type]  # unused
        with pytest.raises(BotStartupError, match="DISCORD_API_BASE"):
            await asyncio.wait_for(DiscordBot(settings, service, backoff=FAST).run(), WAIT)


def test_one_backoff_rule_with_and_without_jitter() -> None:
    plain = Backoff(first=1, cap=8)
    assert [plain.delay(n) for n in range(1, 7)] == [1, 2, 4, 8, 8, 8]
    jittered = Backoff(first=1, cap=8, jitter=True)
    for failures, full in enumerate([1, 2, 4, 8, 8], start=1):
        assert full / 2 <= jittered.delay(failures) <= full
