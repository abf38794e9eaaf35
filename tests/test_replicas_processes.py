"""Two `parley run` processes on one PostgreSQL database, Telegram in webhook mode, the fake
Bot API delivering round-robin to both with a tenth of the updates delivered twice (Deliver 5).

50 chats of 5 messages each: every message is answered exactly once and in order. Then the
same load with one replica SIGKILLed while it writes replies: nothing is lost (the survivor
answers what the dead one had not started), and the dead one's replies are marked interrupted
by the survivor within its lease (`PARLEY_LEASE_SECONDS`, short here).

Every wait is on the fakes, a child's log or the database, with a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import TypeVar

import asyncpg

from core.conversation import ChatRef
from storage import MessageStatus, Role, Store, StoredMessage, open_store
from tests.fakes.llm_server import ECHO_PREFIX, FakeLLMServer
from tests.fakes.telegram_api import FakeChat, FakeTelegramAPI
from tests.replica_support import (
    all_answered,
    assert_once_in_order,
    question,
    question_of,
    replicas,
    send_load,
)
from tests.run_support import Child, assert_no_traceback, report

T = TypeVar("T")
CHATS = 50
MESSAGES = 5
LEASE = 3.0
WAIT = 45.0


@contextlib.asynccontextmanager
async def two_replicas(
    tg: FakeTelegramAPI, llm: FakeLLMServer, database: str
) -> AsyncIterator[tuple[Child, Child]]:
    """Both replicas up (a short lease), the fake delivering to both in turn."""
    async with replicas(2, tg, llm, database, lease=LEASE) as (first, second):
        yield first, second


def replica_id(child: Child) -> str:
    line = child.matching("Replica ")[0][1]
    return line.split("Replica ", 1)[1].split(":", 1)[0]


async def test_two_processes_answer_every_message_once_in_order(postgres_url: str) -> None:
    async with (
        FakeTelegramAPI(allow_http_webhooks=True) as tg,
        FakeLLMServer() as llm,
        two_replicas(tg, llm, postgres_url) as (first, second),
    ):
        started = time.monotonic()
        chats = await send_load(tg, CHATS, MESSAGES)
        await tg.wait_until(lambda: all_answered(chats, MESSAGES), WAIT)
        report("two replicas, 250 messages", answered=time.monotonic() - started)

        assert_once_in_order(llm, chats, MESSAGES)
        served = {d.url for d in tg.webhooks.deliveries if d.ok}
        assert len(served) == 2
        assert len(tg.webhooks.deliveries) >= CHATS * MESSAGES * 1.1
        assert await first.stop() == 0
        assert await second.stop() == 0
        assert_no_traceback(first)
        assert_no_traceback(second)


async def test_a_killed_replica_loses_nothing_and_its_replies_are_marked_by_the_survivor(
    postgres_url: str,
) -> None:
    async with (
        FakeTelegramAPI(allow_http_webhooks=True) as tg,
        FakeLLMServer() as llm,
        two_replicas(tg, llm, postgres_url) as (victim, survivor),
    ):
        llm.echo_delay = 0.1  # replies take about a second: the kill finds some being written
        dead = replica_id(victim)
        chats = await send_load(tg, CHATS, MESSAGES)
        await _until(lambda: _streaming_of(postgres_url, dead), lambda n: n >= 3)

        victim.process.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        await victim.exited()
        marked = await survivor.wait_line("whose lease ran out")
        store = await open_store(postgres_url)
        try:
            await _until(lambda: _settled(store, chats), bool)
            report(
                "SIGKILL of one replica",
                marked_after=marked - killed,
                lease=LEASE,
                all_answered=time.monotonic() - killed,
            )
            # Marked within the lease, give or take one sweep period and the log's travel.
            assert marked - killed <= LEASE + LEASE / 3 + 1.0
            interrupted = 0
            asked = Counter(question_of(r.json) for r in llm.requests)
            for c, chat in enumerate(chats):
                turns = await _turns(store, chat)
                assert [q for q, _ in turns] == [question(c, n) for n in range(MESSAGES)], c
                for q, answer in turns:
                    assert answer is not None, (c, q)  # nothing lost
                    # None answered twice: the model was asked at most once (a reply cut
                    # before its request went out was never asked).
                    assert asked[q] <= 1, (q, asked[q])
                    if answer.status is MessageStatus.INTERRUPTED:
                        interrupted += 1
                        continue
                    assert answer.status is MessageStatus.COMPLETE, (c, q, answer.status)
                    assert answer.text == f"{ECHO_PREFIX}{q}"
                    assert asked[q] == 1, q
                    sent = next(m for m in chat.messages.values() if m.text == q)
                    await tg.wait_until(partial(_shows, chat, sent.message_id, answer.text), WAIT)
            assert interrupted >= 1
            assert await _streaming_of(postgres_url, None) == 0
        finally:
            await store.close()
        assert await survivor.stop() == 0
        assert_no_traceback(survivor)


def _shows(chat: FakeChat, message_id: int, text: str) -> bool:
    """The bot's answer to `message_id` reads `text` on screen."""
    return any(m.reply_to == message_id and m.text == text for m in chat.bot_messages())


async def _settled(store: Store, chats: list[FakeChat]) -> bool:
    """Every question of every chat stored, each with an answer no longer being written."""
    for chat in chats:
        turns = await _turns(store, chat)
        if len(turns) < MESSAGES or any(
            answer is None or answer.status is MessageStatus.STREAMING for _, answer in turns
        ):
            return False
    return True


async def _turns(store: Store, chat: FakeChat) -> list[tuple[str, StoredMessage | None]]:
    """The chat's questions in stored order, each with its answer (None: none)."""
    current = await store.current_conversation(ChatRef("telegram", str(chat.id), ""))
    if current is None:
        return []
    messages = await store.conversation_messages(current)
    answers = {m.reply_to: m for m in messages if m.role is Role.ASSISTANT}
    return [(m.text, answers.get(m.id)) for m in messages if m.role is Role.USER]


async def _streaming_of(database: str, replica: str | None) -> int:
    """How many replies are being written: `replica`'s, or anyone's (None)."""
    conn = await asyncpg.connect(database)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM messages WHERE status = 'streaming'"
                " AND ($1::text IS NULL OR replica = $1)",
                replica,
            )
        )
    finally:
        await conn.close()


async def _until(probe: Callable[[], Awaitable[T]], ok: Callable[[T], bool]) -> None:
    """Ask the database `probe` until `ok` says yes, within WAIT."""

    async def ask() -> None:
        # The database has no event to wait on: asked every 50 ms, within WAIT.
        while not ok(await probe()):  # noqa: ASYNC110
            await asyncio.sleep(0.05)

    await asyncio.wait_for(ask(), WAIT)
