"""METRICS_ADDR and LOG_FORMAT=json against a real `parley run` child process.

The child serves both fakes (Telegram Bot API, Discord) with the fake LLM behind them, all on
127.0.0.1, configured only through its environment. The test reads its JSON log lines as they
come (the endpoint's address among them: it listens on port 0) and asks /healthz and /metrics
over real HTTP.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.cli_support import CLI_TIMEOUT, run_parley, start_parley
from tests.fakes.discord_api import ALICE_ID, BOT_ID, GENERAL_ID, FakeDiscord
from tests.fakes.llm_server import FakeLLMServer, Script
from tests.fakes.telegram_api import FakeTelegramAPI, user

T = TypeVar("T")

WAIT = 15.0
#: How often a condition on the endpoint's answers is asked again while waiting for it.
POLL = 0.05
#: A configured secret the model's error message echoes: only the log filter can hide it.
SECRET = "sk-ant-configured-secret-4242"
LISTENING = "Health and metrics at "


class LogLines:
    """The child's stderr, one parsed JSON object per line, read as it is written."""

    def __init__(self, stream: asyncio.StreamReader) -> None:
        self.raw: list[str] = []
        self.records: list[dict[str, Any]] = []
        self._changed = asyncio.Condition()
        self._reader = asyncio.create_task(self._read(stream))

    async def _read(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            text = line.decode()
            self.raw.append(text)
            # A line that is not JSON fails the test at the end, with the line in the message.
            try:
                self.records.append(json.loads(text))
            except ValueError:
                self.records.append({})
            async with self._changed:
                self._changed.notify_all()

    async def wait_for(self, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """The first record `predicate` accepts, waiting for it up to WAIT seconds."""

        def found() -> dict[str, Any] | None:
            return next((r for r in self.records if predicate(r)), None)

        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: found() is not None), WAIT)
        record = found()
        assert record is not None
        return record

    async def finish(self) -> None:
        await asyncio.wait_for(self._reader, WAIT)


async def until(check: Callable[[], Any], what: str) -> Any:
    """Ask `check()` (a coroutine function) again every POLL seconds until it returns a truthy
    value, for up to WAIT seconds; the endpoint has no event to wait on from outside."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while True:
        result = await check()
        if result:
            return result
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last answer: {result!r}")
        await asyncio.sleep(POLL)


def samples(exposition: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a Prometheus text exposition, by (name, labels)."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }


def value(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str):
    return found.get((name, frozenset(labels.items())))


def environment(tg: FakeTelegramAPI, discord: FakeDiscord, llm: FakeLLMServer, db: Path):
    return {
        "TELEGRAM_BOT_TOKEN": tg.token,
        "TELEGRAM_API_BASE": tg.base_url,
        "DISCORD_BOT_TOKEN": discord.token,
        "DISCORD_API_BASE": discord.api_base,
        "DISCORD_GATEWAY_URL": discord.gateway_url,
        "OPENAI_BASE_URL": llm.base_url,
        "ANTHROPIC_API_KEY": SECRET,
        "DEFAULT_MODEL": "fake-model",
        "MAX_RETRIES": "0",
        "DATABASE_URL": f"sqlite:///{db}",
        "METRICS_ADDR": "127.0.0.1:0",
        "LOG_FORMAT": "json",
    }


async def test_health_and_metrics_of_a_running_parley(tmp_path):
    async with (
        FakeTelegramAPI() as tg,
        FakeDiscord() as discord,
        FakeLLMServer() as llm,
        aiohttp.ClientSession() as http,
    ):
        # Telegram does not answer the bot's first calls until released: it cannot connect.
        release_telegram = tg.hold("getMe", "deleteWebhook")
        child = await start_parley("run", env=environment(tg, discord, llm, tmp_path / "p.db"))
        assert child.stderr is not None
        logs = LogLines(child.stderr)
        try:
            listening = await logs.wait_for(lambda r: r.get("message", "").startswith(LISTENING))
            base = listening["message"].removeprefix(LISTENING).split()[0]

            async def healthz() -> tuple[int, dict[str, Any]]:
                async with http.get(f"{base}/healthz") as response:
                    return response.status, await response.json()

            async def metrics() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
                async with http.get(f"{base}/metrics") as response:
                    assert response.status == 200
                    assert response.content_type == "text/plain"
                    return samples(await response.text())

            status, body = await healthz()
            assert status == 503
            assert body["status"] == "unavailable"
            assert body["bots"]["telegram"] is False
            assert body["database"] is True

            release_telegram.set()
            status, body = await until(
                lambda: _healthy(healthz), "/healthz to answer 200 once both bots connected"
            )
            assert body == {
                "status": "ok",
                "bots": {"telegram": True, "discord": True},
                "database": True,
            }

            # One answered message on each platform, each hitting one 429 on the way.
            llm.enqueue(
                Script(pieces=["Hello ", "Telegram"]),
                Script(pieces=["Hello ", "Discord"]),
                Script(status=500, error_message=f"upstream echoed {SECRET}"),
            )
            tg.inject_429("sendMessage", retry_after=1)
            alice = user(1001, "Alice")
            chat = tg.private_chat(alice)
            await tg.message(chat, alice, "hi from telegram")
            await tg.wait_until(
                lambda: any(m.text == "Hello Telegram" for m in chat.bot_messages()), WAIT
            )
            discord.rate_limit("POST", rf"/channels/{GENERAL_ID}/messages", retry_after=0.2)
            await discord.push_message(f"<@{BOT_ID}> hi from discord", author=ALICE_ID)
            await discord.wait_for(
                lambda: any(m.content == "Hello Discord" for m in discord.bot_messages(GENERAL_ID)),
                WAIT,
            )
            # The model's server fails the next one.
            await tg.message(chat, alice, "and again")

            async def all_counted() -> Any:
                # Either may be counted first: a reply counts once its last text is on screen,
                # and the failed reply's first (and last) text goes ahead of the first reply's
                # final edit in the chat's write budget.
                found = await metrics()
                failed = value(found, "parley_replies_total", platform="telegram", outcome="error")
                done = value(found, "parley_replies_total", platform="telegram", outcome="complete")
                return found if failed == 1 and done >= 1 else None

            found = await until(all_counted, "both Telegram replies to be counted")
            assert (
                value(found, "parley_replies_total", platform="telegram", outcome="complete") == 1
            )
            assert value(found, "parley_replies_total", platform="discord", outcome="complete") == 1
            assert value(found, "parley_replies_total", platform="discord", outcome="error") == 0
            assert (
                value(
                    found, "parley_provider_errors_total", provider="OpenAI", kind="response_status"
                )
                == 1
            )
            assert value(found, "parley_platform_rate_limited_total", platform="telegram") == 1
            assert value(found, "parley_platform_rate_limited_total", platform="discord") == 1
            # The failed reply got no first token; both platforms' replies were in flight.
            for platform, replies, first_tokens in (("telegram", 2, 1), ("discord", 1, 1)):
                assert (
                    value(found, "parley_reply_duration_seconds_count", platform=platform)
                    == replies
                )
                assert (
                    value(found, "parley_reply_first_token_seconds_count", platform=platform)
                    == first_tokens
                )
                assert value(found, "parley_replies_in_flight", platform=platform) == 0
                assert value(found, "parley_replies_queued", platform=platform) == 0
            # Three user messages, three reply rows opened and finished, at the least.
            assert value(found, "parley_db_write_seconds_count") >= 9
            assert value(found, "process_resident_memory_bytes") > 0
        finally:
            if child.returncode is None:
                child.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(child.wait(), CLI_TIMEOUT)
            await logs.finish()

    assert code == 0, "".join(logs.raw)
    # LOG_FORMAT=json: every line one JSON object with the fixed fields, the secret redacted.
    for line, record in zip(logs.raw, logs.records, strict=True):
        assert {"time", "level", "logger", "message"} <= record.keys(), line
    everything = "".join(logs.raw)
    assert (
        SECRET not in everything and tg.token not in everything and discord.token not in everything
    )
    failed = [r["message"] for r in logs.records if "upstream echoed" in r.get("message", "")]
    assert failed and all("upstream echoed ***" in message for message in failed)


async def _healthy(healthz: Callable[[], Any]) -> tuple[int, dict[str, Any]] | None:
    status, body = await healthz()
    return (status, body) if status == 200 else None


@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_a_port_in_use_stops_the_start_naming_the_setting(tmp_path, log_format):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        finished = await run_parley(
            "run",
            env={
                "TELEGRAM_BOT_TOKEN": "123:never-used",
                # Never reached: the endpoint opens before the bots start.
                "TELEGRAM_API_BASE": "http://127.0.0.1:9",
                "DATABASE_URL": f"sqlite:///{tmp_path / 'p.db'}",
                "METRICS_ADDR": f"127.0.0.1:{port}",
                "LOG_FORMAT": log_format,
            },
        )
    assert finished.code == 1, finished.err
    assert "Traceback" not in finished.err
    if log_format == "json":
        records = [json.loads(line) for line in finished.err.splitlines()]
        message = records[-1]["message"]
        assert records[-1]["level"] == "ERROR"
    else:
        message = " ".join(finished.err.split())  # rich wraps long lines
    assert f"METRICS_ADDR=127.0.0.1:{port}" in message
    assert "the port is already in use" in message


async def test_a_malformed_metrics_addr_is_refused_before_anything_starts(tmp_path):
    finished = await run_parley(
        "run", env={"TELEGRAM_BOT_TOKEN": "123:never-used", "METRICS_ADDR": "9108"}
    )
    assert finished.code == 2
    assert "METRICS_ADDR must be host:port" in " ".join(finished.err.split())
