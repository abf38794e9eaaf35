"""Several people in one chat: each person's replies take turns, different people's run at once.

Over real HTTP to the fake LLM server and a real SQLite store. A reply is held mid-stream with
`Script.hold_after` until the test releases it, so "at once" and "while it waits" are states
the test sets up, not timings it hopes for. Requests reach the server in the order the test
lets them (it waits for each before the next one may start), so the queued scripts meet the
right questions.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from core import AsyncClient
from core.config import CoreSettings
from core.conversation import (
    Author,
    ConversationService,
    Reply,
    ReplyState,
    ResetReport,
    describe_reset,
)
from core.conversation.reset import RESET_DONE, names_of
from storage import Store
from tests.fakes.llm_server import FakeLLMServer, Script
from tests.test_conversation_fakes import ALICE, BOB, WAIT, chat, collect

GROUP = chat("-100")
CAROL = Author("300", "Carol")


def make_service(store: Store, server: FakeLLMServer, **settings: Any) -> ConversationService:
    values: dict[str, Any] = {"default_model": "fake-model", "system_prompt": "SYS", **settings}
    client = AsyncClient(base_url=server.base_url, api_key="test-key")
    return ConversationService(store, client, CoreSettings(_env_file=None, **values))


@pytest.fixture
async def service(store: Store, server: FakeLLMServer) -> AsyncIterator[ConversationService]:
    service = make_service(store, server)
    yield service
    await service.aclose()


def held(*pieces: str) -> Script:
    """A reply that sends its first piece, then waits for `release`."""
    return Script(pieces=list(pieces), hold_after=1)


async def streaming(reply: Reply) -> asyncio.Task[str]:
    """A task reading the reply as a bot does, returned once the first delta has arrived (the
    model is being read); its result is the whole text. Keep it: a reader that is dropped
    gives the reply up."""
    first = asyncio.Event()

    async def read() -> str:
        parts = []
        async for delta in reply:
            parts.append(delta)
            first.set()
        return "".join(parts)

    reader = asyncio.create_task(read())
    await asyncio.wait_for(first.wait(), WAIT)
    return reader


async def sent(server: FakeLLMServer, number: int) -> list[str]:
    """The history the `number`-th model request carried (1-based), without the system prompt."""
    requests = await server.wait_for_requests(number, WAIT)
    return [message["content"] for message in requests[number - 1].json["messages"][1:]]


async def texts(service: ConversationService) -> list[str]:
    return [message.text for message in await service.history(GROUP)]


async def test_two_people_in_one_chat_are_answered_at_once(
    service: ConversationService, server: FakeLLMServer
) -> None:
    alice_script = held("Alice's ", "answer")
    server.enqueue(alice_script)
    alice = service.reply(GROUP, ALICE, "tea?", group=True)
    alice_reader = await streaming(alice)
    bob = service.reply(GROUP, BOB, "coffee?", group=True)
    assert not alice.queued_behind_own and not bob.queued_behind_own

    # Bob's reply runs to its end while Alice's is held mid-stream.
    assert await asyncio.wait_for(collect(bob), WAIT) == "echo: [Bob] coffee?"
    assert (alice.state, alice.text) == (ReplyState.STREAMING, "Alice's ")
    assert await sent(server, 2) == ["[Alice] tea?", "[Bob] coffee?"]  # no half-written text

    alice_script.release.set()
    assert await asyncio.wait_for(alice_reader, WAIT) == "Alice's answer"
    assert await texts(service) == ["tea?", "Alice's answer", "coffee?", "echo: [Bob] coffee?"]
    # Asked after both finished, a question sees both answers.
    await asyncio.wait_for(collect(service.reply(GROUP, BOB, "so?", group=True)), WAIT)
    assert await sent(server, 3) == [
        "[Alice] tea?",
        "Alice's answer",
        "[Bob] coffee?",
        "echo: [Bob] coffee?",
        "[Bob] so?",
    ]


async def test_one_person_writing_three_times_is_answered_in_order(
    service: ConversationService, server: FakeLLMServer
) -> None:
    first_script = held("one ", "done")
    server.enqueue(first_script)
    replies = [service.reply(GROUP, ALICE, f"q{number}", group=True) for number in (1, 2, 3)]
    assert [reply.queued_behind_own for reply in replies] == [False, True, True]
    elsewhere = service.reply(chat("other"), ALICE, "q", group=True)
    assert not elsewhere.queued_behind_own  # another chat has its own queue
    first = await streaming(replies[0])
    await asyncio.wait_for(collect(elsewhere), WAIT)
    # All stored on arrival; the first reply's row has no text saved yet.
    assert await texts(service) == ["q1", "", "q2", "q3"]
    assert [reply.state for reply in replies[1:]] == [ReplyState.QUEUED] * 2
    assert len(server.requests) == 2  # the first and the other chat's: q2 and q3 wait

    first_script.release.set()
    answers = await asyncio.wait_for(
        asyncio.gather(first, collect(replies[1]), collect(replies[2])), WAIT
    )
    assert answers == ["one done", "echo: [Alice] q2", "echo: [Alice] q3"]
    # Each question went to the model after the one before was answered, and saw its answer.
    assert await sent(server, 3) == ["[Alice] q1", "one done", "[Alice] q2"]
    assert await sent(server, 4) == [
        "[Alice] q1",
        "one done",
        "[Alice] q2",
        "echo: [Alice] q2",
        "[Alice] q3",
    ]
    assert await texts(service) == ["q1", "one done", "q2", answers[1], "q3", answers[2]]
    # Once her replies are over, her next one does not queue.
    later = service.reply(GROUP, ALICE, "q4", group=True)
    assert not later.queued_behind_own
    await asyncio.wait_for(later.wait(), WAIT)


async def test_a_context_is_the_history_as_it_stood_when_the_question_arrived(
    store: Store, server: FakeLLMServer
) -> None:
    """Bob's second question arrives while Alice's reply streams and queues behind his own
    first; Alice's reply finishes before his second's context is loaded, and is left out."""
    # Four messages: without fetching one more for each left-out reply, Alice's question would
    # fall out too.
    service = make_service(store, server, context_max_messages=4)
    alice_script, bob_script = held("Alice's ", "answer"), held("Bob's ", "answer")
    server.enqueue(alice_script, bob_script)
    alice = service.reply(GROUP, ALICE, "a1", group=True)
    alice_reader = await streaming(alice)
    bob = service.reply(GROUP, BOB, "b1", group=True)
    bob_reader = await streaming(bob)
    bob_again = service.reply(GROUP, BOB, "b2", group=True)
    assert bob_again.queued_behind_own

    alice_script.release.set()
    await asyncio.wait_for(alice_reader, WAIT)
    # Carol asks once Alice's reply is over: it is history for Carol (the oldest of her four
    # messages, dropped since a context never opens with a reply), Bob's streaming one is not.
    carol = service.reply(GROUP, CAROL, "c1", group=True)
    assert await asyncio.wait_for(collect(carol), WAIT) == "echo: [Carol] c1"
    assert await sent(server, 3) == ["[Bob] b1", "[Bob] b2", "[Carol] c1"]

    bob_script.release.set()
    await asyncio.wait_for(bob_reader, WAIT)
    assert await asyncio.wait_for(collect(bob_again), WAIT) == "echo: [Bob] b2"
    assert await sent(server, 4) == ["[Alice] a1", "[Bob] b1", "Bob's answer", "[Bob] b2"]
    # The history keeps the order the questions arrived in, each answer after its question.
    assert await texts(service) == [
        "a1",
        "Alice's answer",
        "b1",
        "Bob's answer",
        "b2",
        "echo: [Bob] b2",
        "c1",
        "echo: [Carol] c1",
    ]
    await service.aclose()
    # Nothing is kept for a person or a chat once their replies are over.
    assert (service._tails, service._in_flight, service._arrivals) == ({}, {}, {})


async def test_stop_cuts_one_persons_replies_or_everyones(
    service: ConversationService, server: FakeLLMServer
) -> None:
    alice_script = held("Alice's ", "answer")
    server.enqueue(alice_script, held("Bob's ", "answer"), held("Bob again ", "answer"))
    alice = service.reply(GROUP, ALICE, "a1", group=True)
    readers = [await streaming(alice)]
    bob = service.reply(GROUP, BOB, "b1", group=True)
    readers.append(await streaming(bob))
    bob_again = service.reply(GROUP, BOB, "b2", group=True)

    assert await asyncio.wait_for(service.stop(GROUP, CAROL.id), WAIT) == 0
    assert await asyncio.wait_for(service.stop(GROUP, BOB.id), WAIT) == 1
    assert (bob.state, bob.text) == (ReplyState.STOPPED, "Bob's ")
    assert alice.state is ReplyState.STREAMING
    # Bob's queued question was not touched: it goes ahead, seeing his cut reply.
    readers.append(await streaming(bob_again))
    assert await sent(server, 3) == ["[Alice] a1", "[Bob] b1", "Bob's ", "[Bob] b2"]

    assert await asyncio.wait_for(service.stop(GROUP), WAIT) == 2  # an admin's: everyone's
    assert (alice.state, bob_again.state) == (ReplyState.STOPPED, ReplyState.STOPPED)
    assert await service.stop(GROUP) == 0
    assert await asyncio.wait_for(asyncio.gather(*readers), WAIT) == [
        "Alice's ",
        "Bob's ",
        "Bob again ",
    ]
    await server.wait_until_no_active_streams(WAIT)
    assert [message.status for message in await service.history(GROUP)][1::2] == ["interrupted"] * 3


async def test_reset_stops_the_callers_replies_and_waits_for_the_others(
    service: ConversationService, server: FakeLLMServer, store: Store
) -> None:
    carol_script = held("Carol's ", "answer")
    server.enqueue(carol_script, held("Alice's ", "answer"))
    carol = service.reply(GROUP, CAROL, "c1", group=True)
    readers = [await streaming(carol)]
    alice = service.reply(GROUP, ALICE, "a1", group=True)
    readers.append(await streaming(alice))
    alice_queued = service.reply(GROUP, ALICE, "a2", group=True)
    old = await store.current_conversation(GROUP)

    reset = asyncio.create_task(service.reset(GROUP, ALICE.id))
    await asyncio.wait_for(asyncio.gather(alice.wait(), alice_queued.wait()), WAIT)
    assert (alice.state, alice.text) == (ReplyState.STOPPED, "Alice's ")
    assert (alice_queued.state, alice_queued.text, alice_queued.message_id) == (
        ReplyState.STOPPED,
        "",
        None,
    )
    assert not reset.done() and carol.state is ReplyState.STREAMING  # Carol's is let finish
    # Asked while the reset waits: Bob's question belongs to the new conversation.
    bob = service.reply(GROUP, BOB, "after the reset", group=True)

    carol_script.release.set()
    report = await asyncio.wait_for(reset, WAIT)
    assert report == ResetReport(stopped=("Alice",), waited_for=("Carol",))
    assert describe_reset(report) == (
        f"{RESET_DONE} Stopped the reply to Alice. Waited for the reply to Carol to finish first."
    )
    assert await asyncio.wait_for(asyncio.gather(*readers), WAIT) == ["Carol's answer", "Alice's "]
    assert await asyncio.wait_for(collect(bob), WAIT) == "echo: [Bob] after the reset"
    assert await sent(server, 3) == ["[Bob] after the reset"]
    assert old is not None
    assert [message.text for message in await store.conversation_messages(old)] == [
        "c1",
        "Carol's answer",
        "a1",
        "Alice's ",
        "a2",
    ]
    assert await texts(service) == ["after the reset", "echo: [Bob] after the reset"]


async def test_a_reset_for_everyone_stops_every_reply_in_flight(
    service: ConversationService, server: FakeLLMServer
) -> None:
    server.enqueue(held("Alice's ", "answer"), held("Bob's ", "answer"))
    alice = service.reply(GROUP, ALICE, "a1", group=True)
    readers = [await streaming(alice)]
    bob = service.reply(GROUP, BOB, "b1", group=True)
    readers.append(await streaming(bob))
    bob_queued = service.reply(GROUP, BOB, "b2", group=True)
    report = await asyncio.wait_for(service.reset(GROUP), WAIT)
    assert report == ResetReport(stopped=("Alice", "Bob"))
    assert describe_reset(report) == f"{RESET_DONE} Stopped the replies to Alice and Bob."
    assert {alice.state, bob.state, bob_queued.state} == {ReplyState.STOPPED}
    assert await service.history(GROUP) == []
    assert await service.reset(GROUP) == ResetReport()  # nothing in flight any more


def test_describe_reset_says_what_the_reset_did() -> None:
    assert describe_reset(ResetReport()) == (
        "Started a new conversation. Earlier messages are kept but no longer used."
    )
    assert describe_reset(ResetReport(waited_for=("Ann", "Bo", "Cy"))) == (
        f"{RESET_DONE} Waited for the replies to Ann, Bo and Cy to finish first."
    )
    assert (
        describe_reset(ResetReport(stopped=("Ann",))) == f"{RESET_DONE} Stopped the reply to Ann."
    )


def test_names_are_listed_once_in_order_with_the_id_for_a_blank_name() -> None:
    authors = [BOB, ALICE, Author("7", "  "), BOB]
    assert names_of(authors) == ("Bob", "Alice", "7")
