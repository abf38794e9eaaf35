"""Usage recorded per reply, over HTTP against the fake LLM server: the provider's figures, the
estimate when it sends none, nonsense replaced by the estimate, and a ledger that cannot be
written costing nobody their reply."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from core import AsyncClient
from core.config import CoreSettings
from core.conversation import ConversationService
from core.pricing import PriceTable
from core.usage import UsageKey
from storage import StorageError, Store
from tests.fakes.llm_server import FakeLLMServer, Script
from tests.test_conversation_fakes import ALICE, chat, collect

NOW = datetime(2026, 11, 30, 23, 59, tzinfo=UTC)
NO_USAGE = (
    b'data: {"choices":[{"delta":{"content":"twelve chars"}}]}\n\n'
    b'data: {"choices":[{"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'
)


@pytest.fixture
async def server() -> AsyncIterator[FakeLLMServer]:
    async with FakeLLMServer() as fake:
        yield fake


def service_for(store: Store, server: FakeLLMServer, **settings: object) -> ConversationService:
    values: dict[str, object] = {"default_model": "gpt-4o-mini", "system_prompt": ""}
    values.update(settings)
    return ConversationService(
        store,
        AsyncClient(base_url=server.base_url, api_key="test-key"),
        CoreSettings(_env_file=None, **values),
        clock=lambda: NOW,
        prices=PriceTable(),
    )


async def test_the_providers_usage_is_recorded_with_its_cost(store, server) -> None:
    server.enqueue(Script(pieces=["Hi"], usage={"prompt_tokens": 700, "completion_tokens": 300}))
    service = service_for(store, server)
    await collect(service.reply(chat(), ALICE, "hello"))
    [row] = await store.usage_report(None, "model")
    assert (row.key, row.calls, row.prompt_tokens, row.completion_tokens) == (
        "gpt-4o-mini",
        1,
        700,
        300,
    )
    assert row.cost_micros == 700 * 0.15 + 300 * 0.60 == 285  # $0.15 and $0.60 per million
    assert row.estimated_share == 0.0
    user = UsageKey.user("telegram", ALICE.id, "day")
    totals = await store.usage_totals([user], NOW)
    assert (totals[user].tokens, totals[user].cost_micros) == (1000, 285)


async def test_a_provider_that_sends_no_usage_gets_the_estimate_marked(store, server) -> None:
    server.enqueue(Script(raw_sse=NO_USAGE))
    service = service_for(store, server)
    await collect(service.reply(chat(), ALICE, "sixteen chars!!!"))
    [row] = await store.usage_report(None, "user")
    # 16 characters asked, 12 answered: 4 and 3 tokens at 4 characters a token.
    assert (row.prompt_tokens, row.completion_tokens, row.estimated_share) == (4, 3, 1.0)


@pytest.mark.parametrize(
    "usage",
    [
        {"prompt_tokens": -5, "completion_tokens": 2},
        {"prompt_tokens": 10**12, "completion_tokens": 2},
    ],
)
async def test_absurd_usage_from_the_provider_is_replaced_by_the_estimate(
    store, server, caplog, usage
) -> None:
    server.enqueue(Script(pieces=["twelve chars"], usage=usage))
    service = service_for(store, server)
    with caplog.at_level(logging.WARNING, logger="core.usage"):
        await collect(service.reply(chat(), ALICE, "sixteen chars!!!"))
    [row] = await store.usage_report(None, "user")
    assert (row.prompt_tokens, row.completion_tokens, row.estimated_share) == (4, 3, 1.0)
    assert row.cost_micros == round(4 * 0.15 + 3 * 0.60)  # never a free pass
    assert "using the estimate instead" in caplog.text


async def test_a_ledger_that_cannot_be_written_costs_nobody_their_reply(
    store, server, caplog, monkeypatch
) -> None:
    async def broken(record: object) -> None:
        raise StorageError("disk full")

    monkeypatch.setattr(store, "record_usage", broken)
    server.enqueue(Script(pieces=["still ", "here"]))
    service = service_for(store, server)
    assert await collect(service.reply(chat(), ALICE, "hello")) == "still here"
    assert "Could not record the chat usage" in caplog.text


async def test_an_unpriced_model_is_recorded_without_a_cost(store, server) -> None:
    server.enqueue(Script(pieces=["Hi"], usage={"prompt_tokens": 10, "completion_tokens": 5}))
    service = service_for(store, server, default_model="house-model")
    await collect(service.reply(chat(), ALICE, "hello"))
    [row] = await store.usage_report(None, "model")
    assert (row.unpriced, row.cost_micros, row.prompt_tokens) == (1, 0, 10)


async def test_a_transcription_is_recorded_for_the_messages_author(store, server) -> None:
    server.enqueue(Script(pieces=["Hi"]))
    service = service_for(store, server, transcribe_base_url="http://127.0.0.1:9/v1")
    arrival = service.arrive(chat())
    arrival.audio_seconds = 90.0
    await collect(service.reply(chat(), ALICE, "the transcript", arrival=arrival))
    await service.aclose()  # waits for the background record
    rows = {row.key: row for row in await store.usage_report(None, "model")}
    assert rows["whisper-1"].cost_micros == 9_000  # 1.5 min at $0.006
    assert rows["whisper-1"].calls == 1
