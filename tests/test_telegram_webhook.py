"""The Telegram bot in webhook mode, over real HTTP: the fake Bot API POSTs each update to the
bot's own aiohttp server (aiogram's integration) with the secret header, and the real bot answers
through the real conversation service on SQLite. Also the settings that switch the mode on.

Every wait is on an event with a timeout; "nothing handled" is shown by a later update being
answered first (the refused one would have been taken in before it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from bots.config import Settings
from bots.errors import BotStartupError
from bots.telegram import TelegramBot, build_dispatcher
from bots.telegram.drafts import StreamMode, TelegramDrafts
from bots.telegram.surface import TelegramBudgets
from core import AsyncClient
from core.conversation import ConversationService
from storage.factory import open_store
from tests.fakes.llm_server import FakeLLMServer
from tests.fakes.telegram_api import FakeTelegramAPI
from tests.fakes.telegram_webhooks import SECRET_HEADER
from tests.run_support import free_port
from tests.test_telegram_bot import ALICE, BOB, FAST, WAIT, Harness, replies

SECRET = "s3cret_for-the-webhook"
PATH = "/telegram/webhook"
REFUSED = "refused a request"


@dataclass
class WebhookHarness(Harness):
    url: str
    task: asyncio.Task[None]

    async def post(self, body: bytes, headers: dict[str, str]) -> int:
        """POST `body` to the bot's webhook as anyone could; the status it answered."""
        async with (
            aiohttp.ClientSession() as http,
            http.post(self.url, data=body, headers=headers) as answer,
        ):
            return answer.status

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


def webhook_settings(
    tg: FakeTelegramAPI, llm: FakeLLMServer, tmp_path: Path, port: int
) -> Settings:
    return Settings(
        _env_file=None,
        telegram_bot_token=tg.token,
        telegram_api_base=tg.base_url,
        openai_base_url=llm.base_url,
        database_url=f"sqlite:///{tmp_path}/parley.db",
        max_retries=0,
        default_model="fake-model",
        stream_mode="edit",
        telegram_webhook_url=f"http://127.0.0.1:{port}{PATH}",
        telegram_webhook_secret=SECRET,
        webhook_listen=f"127.0.0.1:{port}",
    )


@contextlib.asynccontextmanager
async def webhook_bot(tmp_path: Path, *, allow_http: bool = True) -> AsyncIterator[WebhookHarness]:
    """The bot in webhook mode on a free port, set up once the fake has its webhook."""
    port = free_port()
    async with (
        FakeTelegramAPI(allow_http_webhooks=allow_http) as tg,
        FakeLLMServer() as llm,
    ):
        settings = webhook_settings(tg, llm, tmp_path, port)
        store = await open_store(settings.database_url)
        service = ConversationService(store, AsyncClient(base_url=llm.base_url), settings)
        task = asyncio.create_task(TelegramBot(settings, service, write_limits=FAST).run())
        harness = WebhookHarness(
            tg, llm, service, settings, settings.telegram_webhook_url or "", task
        )
        try:
            await tg.wait_calls("setWebhook", ok=None, timeout=WAIT)
            yield harness
        finally:
            await harness.stop()
            await service.aclose()
            await store.close()


@pytest.fixture
async def wh(tmp_path: Path) -> AsyncIterator[WebhookHarness]:
    async with webhook_bot(tmp_path) as harness:
        yield harness


def update_body(update_id: int, chat_id: int, text: str) -> bytes:
    message = {
        "message_id": 1,
        "date": 1_700_000_000,
        "chat": {"id": chat_id, "type": "private", "first_name": "Mallory"},
        "from": {"id": chat_id, "is_bot": False, "first_name": "Mallory"},
        "text": text,
    }
    return json.dumps({"update_id": update_id, "message": message}).encode()


async def test_private_and_group_messages_are_answered_through_the_webhook(
    wh: WebhookHarness, clean_logs: Callable[[], None]
) -> None:
    chat = wh.tg.private_chat(ALICE)
    request = await wh.ask(chat, ALICE, "hi")
    await wh.reply_text(chat, request, "echo: hi")
    group = wh.tg.supergroup()
    mention = await wh.ask(group, BOB, f"{wh.mention} what is up?")
    await wh.reply_text(group, mention, "echo: [Bob] what is up?")
    assert len(replies(chat, request)) == len(replies(group, mention)) == 1

    [set_webhook] = wh.tg.calls_of("setWebhook")
    budgets = TelegramBudgets(FAST, TelegramDrafts(StreamMode.EDIT))
    handled = build_dispatcher(wh.settings, wh.service, budgets).resolve_used_update_types()
    assert set_webhook.params["url"] == wh.url
    assert set_webhook.params["secret_token"] == SECRET
    assert sorted(set_webhook.params["allowed_updates"]) == sorted(handled)
    assert "edited_message" not in handled  # the bot asks only for what it handles
    assert not set_webhook.params.get("drop_pending_updates")
    assert wh.tg.calls_of("getUpdates", ok=None) == []
    assert wh.tg.calls_of("deleteWebhook", ok=None) == []
    assert [d.status for d in wh.tg.webhooks.deliveries] == [200, 200]
    clean_logs()


async def test_a_stop_closes_the_server_and_keeps_the_webhook(wh: WebhookHarness) -> None:
    chat = wh.tg.private_chat(ALICE)
    await wh.reply_text(chat, await wh.ask(chat, ALICE, "hi"), "echo: hi")
    await wh.stop()
    assert wh.tg.calls_of("deleteWebhook", ok=None) == []
    assert wh.tg.webhooks.setting is not None  # the other replicas keep serving it
    with pytest.raises(aiohttp.ClientConnectionError):
        await wh.post(update_body(99, 1001, "late"), {SECRET_HEADER: SECRET})


async def test_a_wrong_or_missing_secret_is_refused_and_nothing_is_handled(
    wh: WebhookHarness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="bots.telegram.webhook")
    mallory = 666
    body = update_body(10_001, mallory, "take this")
    assert await wh.post(body, {SECRET_HEADER: "guessed"}) == 403
    assert await wh.post(body, {}) == 403
    assert await wh.post(body, {SECRET_HEADER: SECRET + "x"}) == 403
    forwarded = {SECRET_HEADER: "guessed", "X-Forwarded-For": "203.0.113.7, 10.0.0.1"}
    assert await wh.post(body, forwarded) == 403
    # A real update after them is answered; the refused ones never reached a handler.
    chat = wh.tg.private_chat(ALICE)
    await wh.reply_text(chat, await wh.ask(chat, ALICE, "hi"), "echo: hi")
    assert len(wh.llm.requests) == 1
    assert not [c for c in wh.tg.calls if c.params.get("chat_id") == mallory]
    refused = [r.getMessage() for r in caplog.records if REFUSED in r.getMessage()]
    assert len(refused) == 2  # once per source
    assert "127.0.0.1" in refused[0] and "203.0.113.7" in refused[1]
    assert all(SECRET not in line and "guessed" not in line for line in refused)


async def test_a_secret_header_that_is_not_ascii_is_a_403_too(
    wh: WebhookHarness, caplog: pytest.LogCaptureFixture
) -> None:
    """compare_digest refuses non-ASCII text with a TypeError: that must not become a 500."""
    caplog.set_level(logging.WARNING, logger="bots.telegram.webhook")
    body = update_body(10_002, 667, "take this")
    assert await wh.post(body, {SECRET_HEADER: "sécret"}) == 403
    assert [r for r in caplog.records if REFUSED in r.getMessage()]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize(
    "body",
    [
        b"not json at all",
        b"\xff\xfe{",
        b"[1, 2, 3]",
        b'{"message": {"text": "no update id"}}',
        b'{"update_id": "seven"}',
        b"[" * 100_000 + b"]" * 100_000,
    ],
)
async def test_a_malformed_body_is_a_400_and_the_bot_keeps_answering(
    wh: WebhookHarness, body: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="bots.telegram.webhook")
    headers = {SECRET_HEADER: SECRET, "Content-Type": "application/json"}
    assert await wh.post(body, headers) == 400
    [line] = [r.getMessage() for r in caplog.records if REFUSED in r.getMessage()]
    assert "(400)" in line and "no update id" not in line  # the body is never quoted
    chat = wh.tg.private_chat(ALICE)
    await wh.reply_text(chat, await wh.ask(chat, ALICE, "still there?"), "echo: still there?")
    assert not wh.task.done()


async def test_a_delivery_retried_after_a_5xx_is_answered_once(
    wh: WebhookHarness, clean_logs: Callable[[], None]
) -> None:
    """A replica that is down (the proxy answers 503): Telegram tries again, the next try
    reaches the bot, which answers once."""
    hits: list[str] = []

    async def down(request: web.Request) -> web.Response:
        hits.append(request.headers.get(SECRET_HEADER, ""))
        return web.Response(status=503)

    app = web.Application()
    app.router.add_post(PATH, down)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        wh.tg.webhooks.deliver_to = [f"http://127.0.0.1:{port}{PATH}", wh.url]
        chat = wh.tg.private_chat(ALICE)
        request = await wh.ask(chat, ALICE, "are you there?")
        await wh.reply_text(chat, request, "echo: are you there?")
    finally:
        await runner.cleanup()
    deliveries = wh.tg.webhooks.deliveries
    assert [(d.url, d.status) for d in deliveries] == [(deliveries[0].url, 503), (wh.url, 200)]
    assert hits == [SECRET]
    assert len(replies(chat, request)) == 1 and len(wh.llm.requests) == 1
    clean_logs()


async def test_a_webhook_telegram_refuses_stops_the_start(tmp_path: Path) -> None:
    """The cloud API wants HTTPS: its refusal is the operator's to fix, not retried."""
    port = free_port()
    async with FakeTelegramAPI() as tg, FakeLLMServer() as llm:
        settings = webhook_settings(tg, llm, tmp_path, port)
        store = await open_store(settings.database_url)
        service = ConversationService(store, AsyncClient(base_url=llm.base_url), settings)
        try:
            with pytest.raises(BotStartupError, match=r"refused TELEGRAM_WEBHOOK_URL.*HTTPS"):
                await asyncio.wait_for(TelegramBot(settings, service).run(), WAIT)
        finally:
            await service.aclose()
            await store.close()
    assert tg.webhooks.setting is None


async def test_a_listen_address_in_use_stops_the_start(tmp_path: Path) -> None:
    async with (
        FakeTelegramAPI(allow_http_webhooks=True) as tg,
        FakeLLMServer() as llm,
    ):
        blocker = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = blocker.sockets[0].getsockname()[1]
        settings = webhook_settings(tg, llm, tmp_path, port)
        store = await open_store(settings.database_url)
        service = ConversationService(store, AsyncClient(base_url=llm.base_url), settings)
        try:
            with pytest.raises(BotStartupError, match=f"WEBHOOK_LISTEN=127.0.0.1:{port}.*in use"):
                await asyncio.wait_for(TelegramBot(settings, service).run(), WAIT)
        finally:
            blocker.close()
            await service.aclose()
            await store.close()


# -- settings ---------------------------------------------------------------------------------


def test_without_a_webhook_url_the_bot_polls() -> None:
    settings = Settings(_env_file=None, telegram_webhook_url="  ", telegram_webhook_secret="")
    assert settings.telegram_webhook_url is None and settings.telegram_webhook_secret is None
    assert settings.webhook_listen == "0.0.0.0:8080"


def test_a_webhook_takes_its_path_and_listen_address() -> None:
    settings = Settings(
        _env_file=None,
        telegram_webhook_url="https://bot.example.org:8443/tg/hook",
        telegram_webhook_secret="A-z_09",
        webhook_listen="[::1]:9000",
    )
    assert settings.webhook_path == "/tg/hook"
    assert settings.webhook_address == ("::1", 9000)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"telegram_webhook_url": "https://bot.example.org/hook", "telegram_webhook_secret": ""},
            "TELEGRAM_WEBHOOK_SECRET must be set",
        ),
        ({"telegram_webhook_url": "http://bot.example.org/hook"}, "must be https://"),
        ({"telegram_webhook_url": "https://bot.example.org:9000/"}, "port 443, 80, 88 or 8443"),
        ({"telegram_webhook_url": "bot.example.org/hook"}, "absolute https:// URL"),
        ({"telegram_webhook_url": "https://bot.example.org/#x"}, "fragment"),
        ({"telegram_webhook_secret": "has space"}, "1 to 256 characters"),
        ({"telegram_webhook_secret": "x" * 257}, "1 to 256 characters"),
        ({"telegram_webhook_secret": "ünïcode"}, "1 to 256 characters"),
        ({"webhook_listen": "8080"}, "WEBHOOK_LISTEN must be host:port"),
        ({"webhook_listen": "0.0.0.0:99999"}, "WEBHOOK_LISTEN's port"),
    ],
)
def test_a_bad_webhook_setting_is_refused(fields: dict[str, str], message: str) -> None:
    values = {"telegram_webhook_secret": SECRET, **fields}
    with pytest.raises(ValueError, match=message):
        Settings(_env_file=None, **values)


def test_a_self_hosted_bot_api_takes_plain_http_on_any_port() -> None:
    settings = Settings(
        _env_file=None,
        telegram_api_base="http://127.0.0.1:8081",
        telegram_webhook_url="http://parley:8080/hook",
        telegram_webhook_secret=SECRET,
    )
    assert settings.telegram_webhook_url == "http://parley:8080/hook"
