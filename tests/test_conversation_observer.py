"""What the conversation service tells its observer, and which provider an error is blamed on.

A recording observer watches a real service over a real SQLite store, with scripted providers
behind the real `AsyncClient` (so provider names and errors come the way they do in
production); the metrics built on these events are tested over HTTP in test_monitoring.py.
"""

from __future__ import annotations

import builtins
from typing import Any

import pytest

from core import AsyncClient
from core.config import CoreSettings
from core.conversation import ConversationObserver, ConversationService
from core.conversation.observer import provider_failures
from core.errors import (
    MissingAuthError,
    ProviderConnectionError,
    RateLimitError,
    ResponseStatusError,
    RetryProviderError,
    TimeoutError,
    error_kind,
)
from core.providers.fallback import IterListProvider
from storage import MessageStatus, StorageError, Store
from tests.core_support import ScriptedProvider as ItemsProvider
from tests.test_conversation_fakes import ALICE, Gate, ScriptedProvider, chat, collect


class Recorder:
    """Every event, in order, as (name, *arguments); seconds are kept as they came."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def reply_queued(self, platform: str) -> None:
        self.events.append(("queued", platform))

    def reply_started(self, platform: str) -> None:
        self.events.append(("started", platform))

    def reply_first_token(self, platform: str, seconds: float) -> None:
        self.events.append(("first_token", platform, seconds))

    def reply_finished(self, platform: str, outcome: MessageStatus, seconds: float | None) -> None:
        self.events.append(("finished", platform, outcome, seconds))

    def provider_error(self, provider: str, kind: str) -> None:
        self.events.append(("provider_error", provider, kind))

    def names(self) -> list[str]:
        return [event[0] for event in self.events]


def service_with(
    store: Store, provider: Any, recorder: ConversationObserver
) -> ConversationService:
    settings = CoreSettings(_env_file=None, default_model="m", system_prompt="SYS")
    return ConversationService(store, AsyncClient(provider=provider), settings, observer=recorder)


async def test_an_answered_reply_is_queued_started_first_token_and_finished(store: Store) -> None:
    recorder = Recorder()
    service = service_with(store, ScriptedProvider(), recorder)
    assert service.observer is recorder
    assert await collect(service.reply(chat(platform="discord"), ALICE, "hi")) == "echo: hi"
    await service.aclose()
    assert recorder.names() == ["queued", "started", "first_token", "finished"]
    _, platform, seconds = recorder.events[2]
    assert platform == "discord" and 0 <= seconds < 5
    _, platform, outcome, in_flight = recorder.events[3]
    assert (platform, outcome) == ("discord", MessageStatus.COMPLETE)
    assert in_flight is not None and seconds <= in_flight < 5


async def test_a_reply_stopped_while_queued_finishes_without_having_started(store: Store) -> None:
    recorder = Recorder()
    gate = Gate()
    service = service_with(store, ScriptedProvider(gate), recorder)
    first = service.reply(chat(), ALICE, "one")
    second = service.reply(chat(), ALICE, "two")
    await gate.sent_first.wait()
    second.stop()  # still waiting for its turn behind the first
    assert await second.wait() == MessageStatus.INTERRUPTED
    gate.release.set()
    assert await collect(first) == "partial answer"
    await service.aclose()
    finished = [event for event in recorder.events if event[0] == "finished"]
    assert recorder.names().count("queued") == 2 and recorder.names().count("started") == 1
    assert ("finished", "telegram", MessageStatus.INTERRUPTED, None) in finished
    assert [e[2] for e in finished if e[3] is not None] == [MessageStatus.COMPLETE]


async def test_a_delivered_reply_finishes_once_its_delivery_ended_too(store: Store) -> None:
    recorder = Recorder()
    service = service_with(store, ScriptedProvider(), recorder)
    reply = service.reply(chat(), ALICE, "hi", delivery=True)
    assert await collect(reply) == "echo: hi"
    await service.aclose()  # the model's part is over, the delivery is not
    assert "finished" not in recorder.names()
    service.delivery_ended(reply, whole=True)
    service.delivery_ended(reply, whole=False)  # a second call changes nothing
    assert recorder.names() == ["queued", "started", "first_token", "finished"]
    assert recorder.events[-1][:3] == ("finished", "telegram", MessageStatus.COMPLETE)


async def test_a_reply_its_delivery_gave_up_on_finishes_interrupted(store: Store) -> None:
    """Delivery may end first (it gave up): the reply is reported when the model is done, as
    the complete reply the user did not get whole, 'interrupted'."""
    recorder = Recorder()
    gate = Gate()
    service = service_with(store, ScriptedProvider(gate), recorder)
    reply = service.reply(chat(), ALICE, "hi", delivery=True)
    await gate.sent_first.wait()
    service.delivery_ended(reply, whole=False)
    assert "finished" not in recorder.names()
    gate.release.set()
    assert await reply.wait() is MessageStatus.COMPLETE  # the model's part, as it ended
    await service.aclose()
    assert [e[:3] for e in recorder.events if e[0] == "finished"] == [
        ("finished", "telegram", MessageStatus.INTERRUPTED)
    ]


async def test_a_delivered_reply_that_never_started_finishes_at_once(store: Store) -> None:
    """It has no row: its delivery cannot change its outcome, nor keep it queued."""
    recorder = Recorder()
    gate = Gate()
    service = service_with(store, ScriptedProvider(gate), recorder)
    first = service.reply(chat(), ALICE, "one", delivery=True)
    second = service.reply(chat(), ALICE, "two", delivery=True)
    await gate.sent_first.wait()
    second.stop()
    assert await second.wait() == MessageStatus.INTERRUPTED
    assert recorder.events[-1] == ("finished", "telegram", MessageStatus.INTERRUPTED, None)
    service.delivery_ended(second, whole=False)
    gate.release.set()
    await first.wait()
    service.delivery_ended(first, whole=True)
    await service.aclose()
    finished = [e[2] for e in recorder.events if e[0] == "finished"]
    assert finished == [MessageStatus.INTERRUPTED, MessageStatus.COMPLETE]  # once each


async def test_a_failed_reply_counts_its_provider_error(store: Store) -> None:
    recorder = Recorder()
    failing = ItemsProvider([ResponseStatusError("boom", 500)], name="Upstream")
    service = service_with(store, failing, recorder)
    with pytest.raises(ResponseStatusError):
        await collect(service.reply(chat(), ALICE, "hi"))
    await service.aclose()
    assert ("provider_error", "Upstream", "response_status") in recorder.events
    assert recorder.events[-1][:3] == ("finished", "telegram", MessageStatus.ERROR)
    assert "first_token" not in recorder.names()


async def test_a_fallback_list_that_fails_counts_each_member(store: Store) -> None:
    recorder = Recorder()
    fallback = IterListProvider(
        [
            ItemsProvider([RateLimitError("slow down")], name="First"),
            ItemsProvider([TimeoutError("too slow")], name="Second"),
        ]
    )
    service = service_with(store, fallback, recorder)
    with pytest.raises(RetryProviderError):
        await collect(service.reply(chat(), ALICE, "hi"))
    await service.aclose()
    errors = [event for event in recorder.events if event[0] == "provider_error"]
    assert errors == [
        ("provider_error", "First", "rate_limit"),
        ("provider_error", "Second", "timeout"),
    ]


async def test_a_lone_failure_in_a_fallback_list_is_its_members(store: Store) -> None:
    recorder = Recorder()
    fallback = IterListProvider(
        [ItemsProvider([MissingAuthError("bad key")], name="Keyed"), ItemsProvider([], name="Mute")]
    )
    service = service_with(store, fallback, recorder)
    with pytest.raises(MissingAuthError):
        await collect(service.reply(chat(), ALICE, "hi"))
    await service.aclose()
    assert [e for e in recorder.events if e[0] == "provider_error"] == [
        ("provider_error", "Keyed", "missing_auth")
    ]


async def test_a_provider_breaking_mid_answer_is_blamed_by_name(store: Store) -> None:
    recorder = Recorder()
    cut = ItemsProvider(["half an ", ProviderConnectionError("cut")], name="Cutter")
    service = service_with(store, cut, recorder)
    reply = service.reply(chat(), ALICE, "hi")
    with pytest.raises(ProviderConnectionError):
        await collect(reply)
    await service.aclose()
    assert ("provider_error", "Cutter", "provider_connection") in recorder.events
    assert "first_token" in recorder.names()


def test_error_kinds_are_snake_case_class_names() -> None:
    assert error_kind(RateLimitError("x")) == "rate_limit"
    assert error_kind(ResponseStatusError("x", 502)) == "response_status"
    assert error_kind(TimeoutError("x")) == "timeout"
    assert error_kind(builtins.TimeoutError()) == "timeout"
    assert error_kind(KeyError("x")) == "unexpected"


def test_what_is_not_a_providers_error_is_not_counted() -> None:
    assert list(provider_failures(StorageError("disk full"))) == []
    assert list(provider_failures(KeyError("bug"))) == []
    assert list(provider_failures(RateLimitError("x"))) == [("unknown", "rate_limit")]
