"""The metrics of a reply a bot delivers, through `bots.relay` over a real SQLite store: a reply
counts once its delivery ended, with the status stored then, and stays in flight until then.

The same metrics in a real `parley run` over HTTP are in test_monitoring.py.
"""

from __future__ import annotations

import asyncio

import pytest

from bots import streaming
from bots.clock import SystemClock as RealClock
from bots.metrics import Metrics
from bots.relay import relay
from core import AsyncClient
from core.conversation import ConversationService, Reply
from storage import MessageStatus, Store
from tests.test_conversation import make_settings, rows
from tests.test_conversation_fakes import ALICE, WAIT, Gate, ScriptedProvider, chat
from tests.test_delivery_units import SpySurface
from tests.test_streaming import Call, RecordingSurface


def telegram_metrics() -> Metrics:
    metrics = Metrics()
    metrics.expect(["telegram"])  # every series from zero
    return metrics


def counted(metrics: Metrics) -> dict[str, float]:
    """`parley_replies_total` of Telegram, by outcome, leaving out the zeros."""
    found = {}
    for outcome in MessageStatus:
        labels = {"platform": "telegram", "outcome": outcome.value}
        value = metrics.registry.get_sample_value("parley_replies_total", labels)
        if value:
            found[outcome.value] = value
    return found


def in_flight(metrics: Metrics) -> float | None:
    return metrics.registry.get_sample_value("parley_replies_in_flight", {"platform": "telegram"})


def durations(metrics: Metrics) -> float | None:
    labels = {"platform": "telegram"}
    return metrics.registry.get_sample_value("parley_reply_duration_seconds_count", labels)


def start_relay(
    service: ConversationService,
    surface: RecordingSurface,
    delivery_timeout: float = streaming.DELIVERY_TIMEOUT,
) -> asyncio.Task[streaming.StreamResult]:
    return asyncio.create_task(
        relay(
            service,
            surface,
            chat(),
            ALICE,
            "hi",
            group=False,
            platform_message_id="u1",
            delivery_timeout=delivery_timeout,
        )
    )


def capture_replies(service: ConversationService, monkeypatch: pytest.MonkeyPatch) -> list[Reply]:
    """The replies `relay` asks the service for, so a test can wait for the model's part."""
    replies: list[Reply] = []
    original = service.reply

    def capturing(*args: object, **kwargs: object) -> Reply:
        reply = original(*args, **kwargs)  # type: ignore[arg-type]
        replies.append(reply)
        return reply

    monkeypatch.setattr(service, "reply", capturing)
    return replies


class HeldFinalSurface(RecordingSurface):
    """Holds the reply's final text (its last send or edit) until `release` is set."""

    def __init__(self) -> None:
        super().__init__(RealClock(), min_edit_interval=0.01)
        self.final_started = asyncio.Event()
        self.release = asyncio.Event()

    async def _record(self, call: Call) -> None:
        if call.final:
            self.final_started.set()
            await self.release.wait()
        await super()._record(call)


async def test_a_reply_stays_in_flight_until_its_final_text_is_shown(store: Store) -> None:
    metrics = telegram_metrics()
    client = AsyncClient(provider=ScriptedProvider())
    service = ConversationService(store, client, make_settings(), observer=metrics)
    surface = HeldFinalSurface()
    task = start_relay(service, surface)
    await asyncio.wait_for(surface.final_started.wait(), WAIT)  # the model is done by now
    assert (await rows(store))[-1].status is MessageStatus.COMPLETE
    assert (counted(metrics), in_flight(metrics), durations(metrics)) == ({}, 1, 0)
    surface.release.set()
    assert (await asyncio.wait_for(task, WAIT)).whole
    assert (counted(metrics), in_flight(metrics), durations(metrics)) == ({"complete": 1}, 0, 1)


async def test_a_reply_whose_delivery_gave_up_counts_as_interrupted(store: Store) -> None:
    gate = Gate(first="the start ", rest="and the end")
    metrics = telegram_metrics()
    client = AsyncClient(provider=ScriptedProvider(gate))
    service = ConversationService(store, client, make_settings(), observer=metrics)
    surface = SpySurface(store)
    surface.fail = lambda call: ConnectionError("502") if call.op == "edit" else None
    task = start_relay(service, surface, delivery_timeout=0.05)
    await asyncio.wait_for(surface.called.wait(), WAIT)  # the start is on screen
    gate.release.set()
    assert not (await asyncio.wait_for(task, WAIT)).delivered
    assert (await rows(store))[-1].status is MessageStatus.INTERRUPTED
    assert (counted(metrics), in_flight(metrics), durations(metrics)) == ({"interrupted": 1}, 0, 1)


async def test_a_finished_reply_whose_last_edit_a_stop_cut_counts_as_interrupted(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The model finished, the platform fails the final edit, and the bot stops meanwhile."""
    monkeypatch.setattr(streaming, "CANCEL_GRACE", 0.05)
    metrics = telegram_metrics()
    client = AsyncClient(provider=ScriptedProvider())
    service = ConversationService(store, client, make_settings(), observer=metrics)
    replies = capture_replies(service, monkeypatch)
    surface = SpySurface(store)
    surface.fail = lambda call: ConnectionError("502") if call.final else None
    task = start_relay(service, surface)
    await asyncio.wait_for(surface.called.wait(), WAIT)
    assert await asyncio.wait_for(replies[0].wait(), WAIT) is MessageStatus.COMPLETE
    assert (counted(metrics), in_flight(metrics)) == ({}, 1)  # the final text is being retried
    task.cancel()  # what stopping the bot does to its handlers
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, WAIT)
    assert (await rows(store))[-1].status is MessageStatus.INTERRUPTED
    assert (counted(metrics), in_flight(metrics)) == ({"interrupted": 1}, 0)


async def test_a_finished_reply_never_sent_is_interrupted_in_store_and_metrics(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The platform fails every send until delivery gives up: the user has nothing of it."""
    metrics = telegram_metrics()
    client = AsyncClient(provider=ScriptedProvider())
    service = ConversationService(store, client, make_settings(), observer=metrics)
    replies = capture_replies(service, monkeypatch)
    surface = FailingSendSurface(replies)
    result = await asyncio.wait_for(start_relay(service, surface, delivery_timeout=0.05), WAIT)
    assert result.handles == [] and not result.delivered
    reply = (await rows(store))[-1]
    assert (reply.status, reply.text) == (MessageStatus.INTERRUPTED, "echo: hi")
    assert await store.undelivered_replies("telegram") == []  # no message to mark
    assert (counted(metrics), in_flight(metrics)) == ({"interrupted": 1}, 0)


class FailingSendSurface(RecordingSurface):
    """Every send fails, once the model's part of the reply is over (so it ends complete)."""

    def __init__(self, replies: list[Reply]) -> None:
        super().__init__(RealClock(), min_edit_interval=0.01)
        self.replies = replies

    async def _record(self, call: Call) -> None:
        await super()._record(call)
        if call.op == "send":
            await self.replies[0].wait()
            raise ConnectionError("502")
