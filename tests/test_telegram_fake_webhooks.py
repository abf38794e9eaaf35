"""The fake Bot API's webhooks, driven over HTTP as a bot and a reverse proxy would see them:
setWebhook's rules, getUpdates refused while a webhook is set, and the deliveries (retried,
round-robin over several receivers, some twice, one chat at a time in order)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.fakes.telegram_api import FakeTelegramAPI, user
from tests.fakes.telegram_webhooks import (
    BAD_ALLOWED_UPDATES,
    BAD_MAX_CONNECTIONS,
    BAD_PORT,
    BAD_SECRET,
    HTTPS_REQUIRED,
    SECRET_HEADER,
    WEBHOOK_CONFLICT,
)

ALICE = user(1001, "Alice")
BOB = user(1002, "Bob")
WAIT = 5.0


class Receiver:
    """A local server taking webhook POSTs; `answer` decides each status (may wait)."""

    def __init__(self, answer: Callable[[dict], Any] | None = None) -> None:
        self.bodies: list[tuple[dict, str]] = []
        self._answer = answer
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def __aenter__(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook", self._take)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/hook"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    async def _take(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.bodies.append((body, request.headers.get(SECRET_HEADER, "")))
        status = 200
        if self._answer is not None:
            status = await self._answer(body)
        return web.Response(status=status)


@pytest.fixture
async def tg() -> AsyncIterator[FakeTelegramAPI]:
    async with FakeTelegramAPI(allow_http_webhooks=True) as fake:
        fake.webhooks.retry_delay = 0.05
        yield fake


async def call(tg: FakeTelegramAPI, method: str, **params: Any) -> tuple[int, dict]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{tg.base_url}/bot{tg.token}/{method}", json=params) as answer,
    ):
        return answer.status, await answer.json()


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"url": "http://bot.example.org/hook"}, HTTPS_REQUIRED),
        ({"url": "https://bot.example.org:8080/hook"}, BAD_PORT),
        ({"url": "https://bot.example.org/hook", "secret_token": "a b"}, BAD_SECRET),
        ({"url": "https://bot.example.org/hook", "secret_token": "x" * 257}, BAD_SECRET),
        (
            {"url": "https://bot.example.org/hook", "allowed_updates": "message"},
            BAD_ALLOWED_UPDATES,
        ),
        ({"url": "https://bot.example.org/hook", "max_connections": 101}, BAD_MAX_CONNECTIONS),
    ],
)
async def test_set_webhook_keeps_the_bot_apis_rules(params: dict, error: str) -> None:
    async with FakeTelegramAPI() as tg:
        status, body = await call(tg, "setWebhook", **params)
        assert (status, body["description"]) == (400, error)
        assert tg.webhooks.setting is None
        status, body = await call(tg, "setWebhook", url="https://bot.example.org:8443/hook")
        assert (status, body["result"]) == (200, True)


async def test_updates_go_to_the_webhook_not_to_get_updates(tg: FakeTelegramAPI) -> None:
    async with Receiver() as receiver:
        early = await tg.message(tg.private_chat(ALICE), ALICE, "sent before the webhook")
        await call(
            tg, "setWebhook", url=receiver.url, secret_token="abc", allowed_updates=["message"]
        )
        status, body = await call(tg, "getUpdates")
        assert (status, body["description"]) == (409, WEBHOOK_CONFLICT)
        await tg.wait_until(lambda: receiver.bodies)  # kept while no webhook was set
        assert receiver.bodies == [({"update_id": 1, "message": early}, "abc")]
        _, info = await call(tg, "getWebhookInfo")
        assert info["result"]["url"] == receiver.url
        assert info["result"]["allowed_updates"] == ["message"]
        assert info["result"]["pending_update_count"] == 0
        await call(tg, "deleteWebhook")
        later = await tg.message(tg.private_chat(ALICE), ALICE, "after")
        _, polled = await call(tg, "getUpdates")
        assert [u["message"] for u in polled["result"]] == [later]


async def test_a_failed_delivery_is_retried_until_it_succeeds(tg: FakeTelegramAPI) -> None:
    answers = iter([500, "slow", 200])

    async def answer(body: dict) -> int:
        given = next(answers)
        if given == "slow":
            await asyncio.sleep(1.0)  # past the fake's timeout below
            return 200
        return int(given)

    tg.webhooks.timeout = 0.2
    async with Receiver(answer) as receiver:
        await call(tg, "setWebhook", url=receiver.url)
        await tg.message(tg.private_chat(ALICE), ALICE, "hello")
        await tg.wait_until(lambda: any(d.ok for d in tg.webhooks.deliveries), WAIT)
    deliveries = tg.webhooks.deliveries
    assert [(d.status, d.error is not None) for d in deliveries] == [
        (500, False),
        (None, True),
        (200, False),
    ]
    _, info = await call(tg, "getWebhookInfo")
    assert "last_error_message" in info["result"]


async def test_round_robin_with_a_share_delivered_twice(tg: FakeTelegramAPI) -> None:
    async with Receiver() as first, Receiver() as second:
        await call(tg, "setWebhook", url="http://proxy.invalid/hook", secret_token="abc")
        tg.webhooks.deliver_to = [first.url, second.url]
        tg.webhooks.duplicate_fraction = 0.5
        for n in range(4):
            sender = user(2000 + n, f"U{n}")
            await tg.message(tg.private_chat(sender), sender, f"m{n}")
        await tg.wait_until(lambda: len(tg.webhooks.delivered) == 4, WAIT)
    ids = sorted(d.update_id for d in tg.webhooks.deliveries)
    assert ids == [1, 2, 2, 3, 4, 4]  # every second update twice
    assert len(first.bodies) == len(second.bodies) == 3
    twice = [d for d in tg.webhooks.deliveries if d.update_id == 2]
    assert {d.url for d in twice} == {first.url, second.url}  # the copy goes to the next one


async def test_one_chat_waits_for_its_earlier_update_others_do_not(tg: FakeTelegramAPI) -> None:
    release = asyncio.Event()

    async def answer(body: dict) -> int:
        if body["message"]["text"] == "a1":
            await release.wait()
        return 200

    async with Receiver(answer) as receiver:
        await call(tg, "setWebhook", url=receiver.url)
        alice, bob = tg.private_chat(ALICE), tg.private_chat(BOB)
        await tg.message(alice, ALICE, "a1")
        await tg.message(alice, ALICE, "a2")
        await tg.message(bob, BOB, "b1")
        await tg.wait_until(lambda: len(receiver.bodies) == 2, WAIT)
        assert [b["message"]["text"] for b, _ in receiver.bodies] == ["a1", "b1"]
        release.set()
        await tg.wait_until(lambda: len(receiver.bodies) == 3, WAIT)
        assert receiver.bodies[-1][0]["message"]["text"] == "a2"


def test_the_secret_reaches_the_fake_as_text() -> None:
    """A numeric secret sent as a form field stays a string (the fake decodes JSON fields)."""
    from tests.fakes.telegram_api import _decode

    assert _decode("secret_token", "123456") == "123456"
