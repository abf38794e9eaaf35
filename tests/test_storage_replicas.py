"""The store's part of several replicas on one database (m013), on both engines: the update
inbox (exactly once), replies named for their replica, leases and the sweep that marks a dead
replica's replies, and `recover()` sparing a live replica's. The PostgreSQL-only pieces (the
chat locks, LISTEN/NOTIFY, two sweepers at once) are at the end."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from storage import (
    HANDLING,
    InboxEntry,
    MessageStatus,
    ReplyOutcome,
    Store,
    UpdateRef,
    open_store,
)
from storage.factory import open_chat_locks
from tests.test_conversation_fakes import chat
from tests.test_storage_images import RED

pytestmark = pytest.mark.all_backends

LONG_LEASE = 60.0
#: A lease already over when written: the replica is dead for every sweep after it.
NO_LEASE = -1.0


@pytest.fixture
async def other(store_url: str) -> AsyncIterator[Store]:
    """A second store on the same database: another replica's."""
    opened = await open_store(store_url)
    yield opened
    await opened.close()


async def streaming_reply(store: Store, chat_id: str = "1") -> int:
    question = await store.add_user_message(
        chat(chat_id), author_id="u", author_name="U", text="hello"
    )
    return await store.start_reply(question, "m")


async def status_of(store: Store, message_id: int, chat_id: str = "1") -> MessageStatus:
    conversation = await store.current_conversation(chat(chat_id))
    assert conversation is not None
    messages = await store.conversation_messages(conversation)
    return next(m.status for m in messages if m.id == message_id)


async def test_an_update_delivered_twice_is_taken_in_once(store: Store) -> None:
    assert await store.inbox_add("telegram", 7, "42", '{"update_id": 7}')
    assert not await store.inbox_add("telegram", 7, "42", '{"update_id": 7}')
    assert await store.inbox_add("discord", 7, "42", "{}")  # another platform's numbering
    assert await store.inbox_pending("telegram", "42") == [InboxEntry(7, '{"update_id": 7}')]

    await store.inbox_done("telegram", 7)
    assert await store.inbox_pending("telegram", "42") == []
    assert not await store.inbox_add("telegram", 7, "42", '{"update_id": 7}')  # a late copy


async def test_pending_updates_come_in_update_id_order_per_chat(store: Store) -> None:
    for update_id, chat_key in ((12, "a"), (10, "a"), (11, "b"), (13, "a")):
        await store.inbox_add("telegram", update_id, chat_key, str(update_id))
    assert [e.update_id for e in await store.inbox_pending("telegram", "a")] == [10, 12, 13]
    assert sorted(await store.inbox_chats("telegram")) == ["a", "b"]
    await store.inbox_done("telegram", 11)
    assert await store.inbox_chats("telegram") == ["a"]


@pytest.mark.parametrize("images", [False, True])
async def test_an_update_handled_twice_stores_its_message_once_and_its_reply_marks_it_done(
    store: Store, images: bool
) -> None:
    """A replica taking over a dead one's chat handles again the updates whose reply had not
    started: their messages are not stored twice."""
    await store.inbox_add("telegram", 5, "1", "{}")
    await store.inbox_add("telegram", 6, "1", "{}")

    async def handle() -> tuple[int, int]:
        HANDLING.set(UpdateRef("telegram", 5))  # in this task's own context
        stored = await store.add_user_message(
            chat(), author_id="u", author_name="U", text="hi", images=[RED] if images else []
        )
        return stored, len(await conversation_of(store))

    first, count = await asyncio.create_task(handle())
    assert count == 1
    assert [e.update_id for e in await store.inbox_pending("telegram", "1")] == [5, 6]
    again, count = await asyncio.create_task(handle())
    assert (again, count) == (first, 1)

    async def reply() -> None:
        HANDLING.set(UpdateRef("telegram", 5))
        await store.start_reply(first, "m")

    await asyncio.create_task(reply())
    assert [e.update_id for e in await store.inbox_pending("telegram", "1")] == [6]
    assert HANDLING.get() is None  # the tasks' settings stayed theirs


async def conversation_of(store: Store) -> list[object]:
    current = await store.current_conversation(chat())
    assert current is not None
    return list(await store.conversation_messages(current))


async def test_recover_and_the_sweep_spare_a_live_replicas_replies(
    store: Store, other: Store
) -> None:
    other.serve_as("alive")
    await other.heartbeat("alive", LONG_LEASE)
    live = await streaming_reply(other)
    store.serve_as("me")
    await store.heartbeat("me", LONG_LEASE)

    assert await store.interrupt_streaming("telegram") == 0
    assert await store.interrupt_orphaned() == 0
    assert await status_of(store, live) is MessageStatus.STREAMING
    await other.set_platform_message_ids(live, ["9"], delivery_pending=True)
    assert await store.undelivered_replies("telegram") == []


async def test_a_dead_replicas_replies_are_marked_once_by_the_sweep(
    store: Store, other: Store
) -> None:
    other.serve_as("dead")
    await other.heartbeat("dead", LONG_LEASE)
    cut = await streaming_reply(other)
    delivered = await streaming_reply(other, "2")
    await other.finish_reply(delivered, _complete())
    await other.set_platform_message_ids(delivered, ["3"], delivery_pending=True)
    await other.heartbeat("dead", NO_LEASE)  # its last heartbeat is older than its lease

    assert await store.interrupt_orphaned() == 2
    assert await store.interrupt_orphaned() == 0
    assert await status_of(store, cut) is MessageStatus.INTERRUPTED
    assert await status_of(store, delivered, "2") is MessageStatus.INTERRUPTED
    # Still to be shown as cut off on screen, by the next start's repair.
    assert [r.id for r in await store.undelivered_replies("telegram")] == [delivered]


async def test_the_sweep_leaves_replies_of_no_replica_to_the_start_up(store: Store) -> None:
    """A reply of a process that is no replica (`parley chat`, a row from before m013) may
    be live: only its own start-up's recover() marks it."""
    reply = await streaming_reply(store)
    assert await store.interrupt_orphaned() == 0
    assert await store.interrupt_streaming() == 1
    assert await status_of(store, reply) is MessageStatus.INTERRUPTED


def _complete() -> ReplyOutcome:
    return ReplyOutcome(MessageStatus.COMPLETE, "done")


# PostgreSQL's own mechanisms (`postgres_url`: a fresh database, not run on SQLite).


async def test_a_chat_lock_is_held_by_one_session_until_released_or_closed(
    postgres_url: str,
) -> None:
    first = await open_chat_locks(postgres_url, lambda platform, key: None)
    second = await open_chat_locks(postgres_url, lambda platform, key: None)
    assert first is not None and second is not None
    try:
        assert await first.take("telegram", "42")
        assert not await second.take("telegram", "42")
        assert await second.take("telegram", "43")
        await first.release("telegram", "42")
        assert await second.take("telegram", "42")
        await second.close()  # a session's end releases everything it held (a dead replica)
        assert await first.take("telegram", "42")
        assert await first.take("telegram", "43")
    finally:
        await first.close()
        await second.close()


async def test_an_inbox_insert_is_heard_by_every_replica_once_committed(
    postgres_url: str,
) -> None:
    heard: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
    locks = await open_chat_locks(
        postgres_url, lambda platform, key: heard.put_nowait((platform, key))
    )
    store = await open_store(postgres_url)
    assert locks is not None
    try:
        assert await store.inbox_add("telegram", 1, "-100 7", "{}")
        assert await asyncio.wait_for(heard.get(), 5) == ("telegram", "-100 7")
        assert not await store.inbox_add("telegram", 1, "-100 7", "{}")  # no news, no noise
        assert await store.inbox_add("telegram", 2, "8", "{}")
        assert await asyncio.wait_for(heard.get(), 5) == ("telegram", "8")
    finally:
        await locks.close()
        await store.close()


async def test_two_sweepers_at_once_mark_each_dead_reply_once(postgres_url: str) -> None:
    stores = [await open_store(postgres_url) for _ in range(3)]
    try:
        writer, *sweepers = stores
        writer.serve_as("dead")
        replies = [await streaming_reply(writer, str(n)) for n in range(20)]
        counts = await asyncio.gather(*(s.interrupt_orphaned() for s in sweepers))
        assert sum(counts) == len(replies)
    finally:
        for opened in stores:
            await opened.close()


async def test_letting_a_chat_go_with_updates_waiting_tells_every_replica(
    postgres_url: str,
) -> None:
    heard: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
    holder = await open_chat_locks(postgres_url, lambda platform, key: None)
    other = await open_chat_locks(
        postgres_url, lambda platform, key: heard.put_nowait((platform, key))
    )
    store = await open_store(postgres_url)
    assert holder is not None and other is not None
    try:
        assert await holder.take("telegram", "idle")
        await holder.release("telegram", "idle")  # nothing waiting: no news
        assert await holder.take("telegram", "9")
        await store.inbox_add("telegram", 1, "9", "{}")
        assert await asyncio.wait_for(heard.get(), 5) == ("telegram", "9")
        await holder.release("telegram", "9")
        assert await asyncio.wait_for(heard.get(), 5) == ("telegram", "9")
        assert heard.empty()
    finally:
        await holder.close()
        await other.close()
        await store.close()


async def test_the_chat_locks_session_ends_soon_after_its_host_does(postgres_url: str) -> None:
    """A replica whose host dies (power, a cut network) closes no socket: the server keeps its
    session, and every chat lock with it, until TCP keepalives find the peer gone, two hours
    and more by the kernel's defaults, while its chats' updates wait. The locks' session asks
    the server to probe soon, so a live replica takes the chats over within about a lease."""
    locks = await open_chat_locks(postgres_url, lambda platform, key: None)
    assert locks is not None
    try:
        conn = locks._conn  # type: ignore[attr-defined]
        probing = [
            int(await conn.fetchval(f"SHOW tcp_keepalives_{name}"))
            for name in ("idle", "interval", "count")
        ]
        idle, interval, count = probing
        assert 0 < idle + interval * count <= 15
    finally:
        await locks.close()


async def test_the_sweep_finds_the_handled_updates_to_forget_by_an_index(
    postgres_url: str,
) -> None:
    """The sweep runs every third of a lease on every replica and forgets the handled updates
    older than `INBOX_KEEP_SECONDS`: with two days of a busy bot's updates kept, reading the
    whole inbox each time would cost every replica a full scan every few seconds."""
    store = await open_store(postgres_url)  # migrated
    await store.close()
    conn = await asyncpg.connect(postgres_url)
    try:
        await conn.execute("SET enable_seqscan = off")
        plan = "\n".join(
            row[0]
            for row in await conn.fetch(
                "EXPLAIN DELETE FROM inbox WHERE done = 1 AND received_at < 1000.0"
            )
        )
    finally:
        await conn.close()
    assert "Seq Scan" not in plan, plan
