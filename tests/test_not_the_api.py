"""Something answers at a platform's address, but not as its API; and Telegram's flood control.

One rule (`bots.startup.NotTheApi`) for `parley doctor`, `parley run`'s preflight and the bots'
start-up: a 404 means the address is wrong (an error, the bot does not start); any other answer
that is not the API's (a captive portal's page, a transparent proxy's) passes, so it is a warning
and the start-up retries it, its log line saying what answered. A 429 at start is a warning too:
stopping, and being restarted by the supervisor, would only ask again.

The "portal" is a real HTTP server on 127.0.0.1 answering an HTML page to every request; once
the test has seen the retries, it goes and the fake platform comes up on the same port.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from bots.config import Settings
from bots.discord import DiscordBot
from bots.doctor import Level, check_discord, check_telegram, preflight
from bots.errors import BotStartupError, NotTheApi
from bots.startup import network_cause
from bots.telegram import TelegramBot
from bots.telegram.polling import telegram_cause
from core.conversation import ConversationService
from tests.core_support import LogLines
from tests.fakes.discord_api import API_PREFIX, FakeDiscord
from tests.fakes.telegram_api import BOT_USERNAME, FakeTelegramAPI
from tests.test_startup import FAST, WAIT, running

PAGE = "<html><title>Sign in to the guest Wi-Fi</title></html>"
SAYS_PORTAL = "HTTP 200 (text/html) answered instead of the API"


class Portal:
    """An HTML page, with `status`, for every request: a captive portal, or with 404 a web
    server that is no API."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.requests = 0
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._page)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _page(self, request: web.Request) -> web.Response:
        self.requests += 1
        return web.Response(status=self.status, text=PAGE, content_type="text/html")


@contextlib.asynccontextmanager
async def portal(status: int = 200) -> AsyncIterator[Portal]:
    server = Portal(status)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def settings_for(tmp_path: Path, **values: str) -> Settings:
    return Settings(_env_file=None, database_url=f"sqlite:///{tmp_path}/p.db", **values)


# The rule itself.


def test_only_a_404_is_no_outage() -> None:
    assert network_cause(NotTheApi(404, "text/html")) is None
    assert NotTheApi(404, "text/html").wrong_address
    for answer in (NotTheApi(200, "text/html"), NotTheApi(403, "")):
        assert not answer.wrong_address
        assert telegram_cause(answer) == network_cause(answer) == answer.cause
    assert "HTTP 403 (no content type) answered instead" in NotTheApi(403, "").cause


# Doctor and preflight.


async def test_telegram_flood_control_at_start_is_a_warning_and_run_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with FakeTelegramAPI() as tg:
        settings = settings_for(
            tmp_path, telegram_bot_token=tg.token, telegram_api_base=tg.base_url
        )
        tg.inject_429("getMe", retry_after=7)
        finding = await check_telegram(settings, timeout=WAIT)
        assert finding.level is Level.WARNING
        assert "rate limited for 7 s; `parley run` keeps retrying" in finding.text
        assert "TELEGRAM_API_BASE must be" not in finding.line  # not the wrong fix

        caplog.set_level(logging.WARNING)
        tg.inject_429("getMe")
        await asyncio.wait_for(preflight(settings), WAIT)  # no BotStartupError
        [warning] = [r.getMessage() for r in caplog.records if r.name == "bots.doctor"]
        assert warning.startswith("telegram: ") and "rate limited" in warning
        assert len(tg.calls_of("getMe", ok=False)) == 2  # one ask each, no loop


async def test_a_captive_portal_is_a_warning_for_doctor_and_preflight(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with portal() as page:
        settings = settings_for(
            tmp_path,
            telegram_bot_token="123:abc",
            telegram_api_base=page.base,
            discord_bot_token="token",
            discord_api_base=page.base + API_PREFIX,
        )
        for finding in (
            await check_telegram(settings, timeout=WAIT),
            await check_discord(settings, timeout=WAIT),
        ):
            assert finding.level is Level.WARNING, finding
            assert f"127.0.0.1:{page.port} answered HTTP 200 (text/html)" in finding.text
            assert "captive portal or proxy" in finding.text and "keeps retrying" in finding.text

        caplog.set_level(logging.WARNING)
        await asyncio.wait_for(preflight(settings), WAIT)
        warnings = [r.getMessage() for r in caplog.records if r.name == "bots.doctor"]
        assert [line.split(":")[0] for line in warnings] == ["telegram", "discord"]


async def test_a_web_server_answering_404_is_an_error_for_doctor(tmp_path: Path) -> None:
    async with portal(404) as page:
        settings = settings_for(
            tmp_path,
            telegram_bot_token="123:abc",
            telegram_api_base=page.base,
            discord_bot_token="token",
            discord_api_base=page.base + API_PREFIX,
        )
        telegram = await check_telegram(settings, timeout=WAIT)
        discord = await check_discord(settings, timeout=WAIT)
        with pytest.raises(BotStartupError, match="TELEGRAM_API_BASE") as stopped:
            await preflight(settings)
    assert (telegram.level, discord.level) == (Level.ERROR, Level.ERROR)
    assert "does not answer like a Bot API server" in telegram.text
    assert "does not answer like Discord's API" in discord.text
    assert "DISCORD_API_BASE" in str(stopped.value)


# The bots' start-up.


async def test_telegram_start_retries_a_captive_portal_until_the_bot_api_answers(
    tmp_path: Path, lines: LogLines
) -> None:
    async with portal() as page:
        tg = FakeTelegramAPI(port=page.port)
        settings = settings_for(
            tmp_path, telegram_bot_token=tg.token, telegram_api_base=tg.base_url
        )

        def make(settings: Settings, service: ConversationService) -> TelegramBot:
            return TelegramBot(settings, service, polling_timeout=1, backoff=FAST)

        async with running(make, settings) as bot:
            await lines.wait(f"Telegram: cannot reach 127.0.0.1:{page.port} ({SAYS_PORTAL}", 2)
            assert not bot.connected
            await page.stop()
            await tg.start()
            try:
                await lines.wait(f"Telegram: running as @{BOT_USERNAME}")
                assert bot.connected
            finally:
                await tg.close()


async def test_discord_start_retries_a_captive_portal_until_discord_answers(
    tmp_path: Path, lines: LogLines
) -> None:
    async with portal() as page:
        discord = FakeDiscord(port=page.port)
        settings = settings_for(
            tmp_path,
            discord_bot_token=discord.token,
            discord_api_base=discord.api_base,
            discord_gateway_url=discord.gateway_url,
        )

        def make(settings: Settings, service: ConversationService) -> DiscordBot:
            return DiscordBot(settings, service, backoff=FAST)

        async with running(make, settings) as bot:
            await lines.wait(f"Discord: cannot reach 127.0.0.1:{page.port} ({SAYS_PORTAL}", 2)
            assert not bot.connected
            await page.stop()
            await discord.start()
            try:
                await lines.wait("Discord: running as @Parley")
                assert bot.connected
            finally:
                await discord.__aexit__()
    assert not [m for m in lines.messages if "Traceback" in m]


async def test_a_web_server_answering_404_stops_either_bot_with_its_fix(tmp_path: Path) -> None:
    async with portal(404) as page:
        service = ConversationService(None, None, settings_for(tmp_path))  # type: ignore[arg-type]
        telegram = TelegramBot(
            settings_for(tmp_path, telegram_bot_token="123:abc", telegram_api_base=page.base),
            service,
            backoff=FAST,
        )
        with pytest.raises(BotStartupError, match="TELEGRAM_API_BASE"):
            await asyncio.wait_for(telegram.run(), WAIT)
        discord = DiscordBot(
            settings_for(
                tmp_path,
                discord_bot_token="token",
                discord_api_base=page.base + API_PREFIX,
                discord_gateway_url=f"ws://127.0.0.1:{page.port}/gateway",
            ),
            service,
            backoff=FAST,
        )
        with pytest.raises(BotStartupError, match="DISCORD_API_BASE"):
            await asyncio.wait_for(discord.run(), WAIT)
