"""The metrics and the METRICS_ADDR endpoint in-process: what each event does to the metrics, and
/healthz's verdict for each state of the bots and the database, over real HTTP on 127.0.0.1.

The same endpoint in a real `parley run`, with both platforms and the fake LLM, is in
test_monitoring.py.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bots import monitoring
from bots.config import Settings
from bots.metrics import Metrics
from bots.monitoring import Monitoring
from core.conversation import NO_OBSERVER
from storage import MessageStatus, Store, open_store


@dataclass
class FakeBot:
    platform: str
    connected: bool = False


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_known_series_start_at_zero() -> None:
    metrics = Metrics()
    metrics.expect(["telegram", "discord"])
    for platform in ("telegram", "discord"):
        for outcome in ("complete", "error", "interrupted"):
            assert sample(metrics, "parley_replies_total", platform=platform, outcome=outcome) == 0
        assert sample(metrics, "parley_replies_in_flight", platform=platform) == 0
        assert sample(metrics, "parley_platform_rate_limited_total", platform=platform) == 0
        assert sample(metrics, "parley_reply_duration_seconds_count", platform=platform) == 0


def test_a_replys_life_moves_it_from_queued_to_in_flight_to_counted() -> None:
    metrics = Metrics()
    metrics.reply_queued("telegram")
    metrics.reply_queued("telegram")
    assert sample(metrics, "parley_replies_queued", platform="telegram") == 2
    metrics.reply_started("telegram")
    assert sample(metrics, "parley_replies_queued", platform="telegram") == 1
    assert sample(metrics, "parley_replies_in_flight", platform="telegram") == 1
    metrics.reply_first_token("telegram", 0.3)
    metrics.reply_finished("telegram", MessageStatus.COMPLETE, 1.5)
    # The second never got its turn (stopped while queued).
    metrics.reply_finished("telegram", MessageStatus.INTERRUPTED, None)

    assert sample(metrics, "parley_replies_queued", platform="telegram") == 0
    assert sample(metrics, "parley_replies_in_flight", platform="telegram") == 0
    assert sample(metrics, "parley_replies_total", platform="telegram", outcome="complete") == 1
    assert sample(metrics, "parley_replies_total", platform="telegram", outcome="interrupted") == 1
    assert sample(metrics, "parley_reply_duration_seconds_count", platform="telegram") == 1
    assert sample(metrics, "parley_reply_duration_seconds_sum", platform="telegram") == 1.5
    assert (
        sample(metrics, "parley_reply_first_token_seconds_bucket", platform="telegram", le="0.5")
        == 1
    )
    assert (
        sample(metrics, "parley_reply_first_token_seconds_bucket", platform="telegram", le="0.25")
        == 0
    )


def test_errors_rate_limits_and_writes_are_counted() -> None:
    metrics = Metrics()
    metrics.provider_error("OpenAI", "rate_limit")
    metrics.provider_error("OpenAI", "rate_limit")
    metrics.platform_rate_limited("discord")
    metrics.db_write(0.002)
    assert (
        sample(metrics, "parley_provider_errors_total", provider="OpenAI", kind="rate_limit") == 2
    )
    assert sample(metrics, "parley_platform_rate_limited_total", platform="discord") == 1
    assert sample(metrics, "parley_db_write_seconds_count") == 1
    assert sample(metrics, "parley_db_write_seconds_bucket", le="0.0025") == 1


def test_each_metrics_has_its_own_registry() -> None:
    first, second = Metrics(), Metrics()
    first.platform_rate_limited("telegram")
    assert sample(second, "parley_platform_rate_limited_total", platform="telegram") is None


async def test_store_writes_are_timed(tmp_path: Path) -> None:
    metrics = Metrics()
    timed = await open_store(f"sqlite:///{tmp_path}/timed.db", on_write=metrics.db_write)
    try:
        await timed.new_conversation(_Chat())
        await timed.add_user_message(_Chat(), author_id="1", author_name="A", text="hi")
    finally:
        await timed.close()
    # new_conversation is one transaction; the chat's first message one statement.
    assert sample(metrics, "parley_db_write_seconds_count") == 2


@dataclass(frozen=True)
class _Chat:
    platform: str = "telegram"
    chat_id: str = "1"
    thread_id: str = ""


def test_without_metrics_addr_monitoring_is_inert() -> None:
    off = Monitoring(Settings(_env_file=None))
    assert off.metrics is None and off.observer is NO_OBSERVER and off.on_write is None


class Endpoint:
    """A started `Monitoring` on a free port of 127.0.0.1, and an HTTP client for it."""

    def __init__(self, bots: list[FakeBot], store: Store) -> None:
        settings = Settings(_env_file=None, metrics_addr="127.0.0.1:0")
        self.monitoring = Monitoring(settings)
        self.bots = bots
        self.store = store

    async def __aenter__(self) -> Endpoint:
        await self.monitoring.start(self.bots, self.store)
        [self.base] = self.monitoring.urls
        self.http = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.close()
        await self.monitoring.stop()

    async def healthz(self) -> tuple[int, dict]:
        async with self.http.get(f"{self.base}/healthz") as response:
            return response.status, await response.json()


async def test_healthz_is_ok_only_when_every_bot_is_connected(store: Store) -> None:
    telegram, discord = FakeBot("telegram"), FakeBot("discord", connected=True)
    async with Endpoint([telegram, discord], store) as endpoint:
        assert await endpoint.healthz() == (
            503,
            {
                "status": "unavailable",
                "bots": {"telegram": False, "discord": True},
                "database": True,
            },
        )
        telegram.connected = True
        assert await endpoint.healthz() == (
            200,
            {"status": "ok", "bots": {"telegram": True, "discord": True}, "database": True},
        )
        discord.connected = False  # the gateway dropped
        status, body = await endpoint.healthz()
        assert status == 503 and body["bots"] == {"telegram": True, "discord": False}


async def test_healthz_is_503_when_the_database_does_not_answer(tmp_path: Path) -> None:
    closed = await open_store(f"sqlite:///{tmp_path}/gone.db")
    await closed.close()
    async with Endpoint([FakeBot("telegram", connected=True)], closed) as endpoint:
        assert await endpoint.healthz() == (
            503,
            {"status": "unavailable", "bots": {"telegram": True}, "database": False},
        )


class HangingStore:
    """A store whose database never answers (a disk stuck in I/O)."""

    async def ping(self) -> None:
        await asyncio.Event().wait()


async def test_a_database_that_hangs_is_down_after_the_ping_timeout(monkeypatch) -> None:
    monkeypatch.setattr(monitoring, "PING_TIMEOUT_SECONDS", 0.05)
    hanging: Store = HangingStore()  # type: ignore[assignment]  # only ping is asked for
    async with Endpoint([FakeBot("telegram", connected=True)], hanging) as endpoint:
        status, body = await asyncio.wait_for(endpoint.healthz(), 5)
    assert status == 503 and body["database"] is False


async def test_metrics_are_served_in_the_prometheus_text_format(store: Store) -> None:
    async with Endpoint([FakeBot("telegram")], store) as endpoint:
        assert endpoint.monitoring.metrics is not None
        endpoint.monitoring.metrics.provider_error("Groq", "timeout")
        async with endpoint.http.get(f"{endpoint.base}/metrics") as response:
            assert response.status == 200
            assert response.content_type == "text/plain"
            text = await response.text()
    assert 'parley_provider_errors_total{kind="timeout",provider="Groq"} 1.0' in text
    names = {family.name for family in text_string_to_metric_families(text)}
    assert {"parley_replies", "parley_reply_duration_seconds", "parley_db_write_seconds"} <= names


async def test_stopping_closes_the_port(store: Store) -> None:
    async with Endpoint([FakeBot("telegram")], store) as endpoint:
        base = endpoint.base
    assert endpoint.monitoring.urls == []
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientConnectionError):
            await http.get(f"{base}/healthz")


@pytest.mark.parametrize(
    ("given", "stored", "address"),
    [
        ("127.0.0.1:9108", "127.0.0.1:9108", ("127.0.0.1", 9108)),
        (" localhost:0 ", "localhost:0", ("localhost", 0)),
        ("[::1]:9108", "[::1]:9108", ("::1", 9108)),
    ],
)
def test_metrics_addr_takes_host_and_port(given: str, stored: str, address: tuple) -> None:
    settings = Settings(_env_file=None, metrics_addr=given)
    assert settings.metrics_addr == stored and settings.metrics_address == address


@pytest.mark.parametrize(
    "given", ["9108", ":9108", "localhost:", "::1:9108", "host:http", "h:70000"]
)
def test_a_malformed_metrics_addr_is_refused(given: str) -> None:
    with pytest.raises(ValueError, match="METRICS_ADDR"):
        Settings(_env_file=None, metrics_addr=given)


def test_log_format_is_text_or_json() -> None:
    assert Settings(_env_file=None).log_format == "text"
    assert Settings(_env_file=None, log_format="JSON").log_format == "json"
    with pytest.raises(ValueError, match="log_format"):
        Settings(_env_file=None, log_format="xml")
