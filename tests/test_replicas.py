"""Two replicas in one test process, each a `ConversationService` and a `TelegramBot` in
webhook mode with its own store and chat locks, on one PostgreSQL database; the fake Bot API
delivers the webhooks round-robin to both, some of them twice. Every message is answered
exactly once, in order per chat, whichever replica each update reached.

The real processes (`parley run` twice, one of them killed) are in `test_replicas_processes`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from bots.config import Settings
from bots.inbox import SharedInbox
from bots.replica import LEASE_SECONDS, LEASE_VARIABLE, Replica, lease_from_environment
from bots.telegram import TelegramBot
from core import AsyncClient
from core.conversation import ConversationService
from storage import InboxEntry, Store, open_store
from tests.fakes.llm_server import FakeLLMServer
from tests.fakes.telegram_api import FakeTelegramAPI
from tests.replica_support import (
    PATH,
    SECRET,
    all_answered,
    assert_once_in_order,
    send_load,
)
from tests.run_support import free_port
from tests.test_telegram_bot import FAST

WAIT = 60.0
LEASE = 3.0


@dataclass
class InProcessReplica:
    url: str
    store: Store
    replica: Replica
    service: ConversationService
    task: asyncio.Task[None]
    stopped: bool = False

    async def stop(self) -> None:
        """As `parley run` stops: the bot (its replies' grace), the service, then the lease."""
        if self.stopped:
            return
        self.stopped = True
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        await self.service.aclose()
        await self.replica.leave()
        await self.store.close()


def replica_settings(tg: FakeTelegramAPI, llm: FakeLLMServer, database: str, port: int) -> Settings:
    return Settings(
        _env_file=None,
        telegram_bot_token=tg.token,
        telegram_api_base=tg.base_url,
        openai_base_url=llm.base_url,
        database_url=database,
        max_retries=0,
        default_model="fake-model",
        stream_mode="edit",
        telegram_webhook_url=f"http://127.0.0.1:{port}{PATH}",
        telegram_webhook_secret=SECRET,
        webhook_listen=f"127.0.0.1:{port}",
    )


@contextlib.asynccontextmanager
async def in_process_replica(
    tg: FakeTelegramAPI, llm: FakeLLMServer, database: str
) -> AsyncIterator[InProcessReplica]:
    port = free_port()
    settings = replica_settings(tg, llm, database, port)
    store = await open_store(database)
    replica = await Replica.start(store, database, LEASE)
    assert replica is not None
    await store.interrupt_streaming("telegram")
    service = ConversationService(store, AsyncClient(base_url=llm.base_url), settings)
    bot = TelegramBot(settings, service, write_limits=FAST, replica=replica)
    running = InProcessReplica(
        settings.telegram_webhook_url or "",
        store,
        replica,
        service,
        asyncio.create_task(bot.run()),
    )
    try:
        yield running
    finally:
        await running.stop()


async def test_two_replicas_answer_every_message_once_in_order(postgres_url: str) -> None:
    async with (
        FakeTelegramAPI(allow_http_webhooks=True) as tg,
        FakeLLMServer() as llm,
        in_process_replica(tg, llm, postgres_url) as first,
        in_process_replica(tg, llm, postgres_url) as second,
    ):
        await tg.wait_calls("setWebhook", 2, timeout=WAIT)
        tg.webhooks.deliver_to = [first.url, second.url]
        tg.webhooks.duplicate_fraction = 0.1
        chats = await send_load(tg, chats=12, messages=5)

        await tg.wait_until(lambda: all_answered(chats, 5), WAIT)
        await llm.wait_for_requests(60, timeout=WAIT)

        assert_once_in_order(llm, chats, 5)
        urls = {d.url for d in tg.webhooks.deliveries}
        assert urls == {first.url, second.url}  # both replicas took updates in
        assert len(tg.webhooks.deliveries) >= 66  # a tenth of the 60 updates came twice
        assert {d.status for d in tg.webhooks.deliveries} == {200}


async def test_a_webhook_update_the_database_cannot_take_is_refused_with_500(
    postgres_url: str,
) -> None:
    """Telegram delivers again an update answered with an error: nothing is lost while the
    database refuses the write."""
    async with (
        FakeTelegramAPI(allow_http_webhooks=True) as tg,
        FakeLLMServer() as llm,
        in_process_replica(tg, llm, postgres_url) as only,
    ):
        await tg.wait_calls("setWebhook", timeout=WAIT)
        tg.webhooks.retry_delay = 0.05
        broken = await open_store(postgres_url)
        try:
            await _refuse_inbox_writes(broken, True)
            chats = await send_load(tg, chats=1, messages=1)
            await tg.wait_until(
                lambda: [d.status for d in tg.webhooks.deliveries][:2] == [500, 500], WAIT
            )
            await _refuse_inbox_writes(broken, False)
            await tg.wait_until(lambda: all_answered(chats, 1), WAIT)
        finally:
            await broken.close()
        assert_once_in_order(llm, chats, 1)
        assert only.replica.id  # the only replica answered, once the database took it in


async def _refuse_inbox_writes(store: Store, refuse: bool) -> None:
    """Make the inbox refuse inserts (a trigger raising), or accept them again."""
    from storage.postgres.store import PostgresStore

    assert isinstance(store, PostgresStore)
    async with store._transaction() as conn:  # the test reaches into the database itself
        if refuse:
            await conn.execute(
                "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS"
                " $$ BEGIN RAISE EXCEPTION 'disk full'; END $$"
            )
            await conn.execute(
                "CREATE TRIGGER refuse BEFORE INSERT ON inbox"
                " FOR EACH ROW EXECUTE FUNCTION refuse()"
            )
        else:
            await conn.execute("DROP TRIGGER refuse ON inbox")
            await conn.execute("DROP FUNCTION refuse()")


async def test_a_replica_stopped_under_load_hands_its_chats_over_without_a_miss(
    postgres_url: str,
) -> None:
    """A rolling restart: one replica stops gracefully while chats are being answered; its
    replies in flight finish within the grace, its chats are let go, and the other replica
    answers the rest, every message once and in order."""
    async with (
        FakeTelegramAPI(allow_http_webhooks=True) as tg,
        FakeLLMServer() as llm,
        in_process_replica(tg, llm, postgres_url) as first,
        in_process_replica(tg, llm, postgres_url) as second,
    ):
        await tg.wait_calls("setWebhook", 2, timeout=WAIT)
        tg.webhooks.deliver_to = [first.url, second.url]
        tg.webhooks.retry_delay = 0.05
        llm.echo_delay = 0.05
        chats = await send_load(tg, chats=8, messages=5)
        await llm.wait_for_requests(8, timeout=WAIT)

        await first.stop()

        await tg.wait_until(lambda: all_answered(chats, 5), WAIT)
        assert_once_in_order(llm, chats, 5)
        assert await second.store.interrupt_orphaned() == 0  # nothing was left cut off


async def test_with_sqlite_there_is_no_replica(tmp_path: Path) -> None:
    """One SQLite process shares with nobody: updates go straight to its dispatcher."""
    url = f"sqlite:///{tmp_path}/parley.db"
    store = await open_store(url)
    try:
        assert await Replica.start(store, url) is None
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("value", "lease"), [("2.5", 2.5), (None, LEASE_SECONDS), ("0", LEASE_SECONDS), ("x", 15.0)]
)
def test_the_lease_is_the_constant_unless_the_knob_says_otherwise(
    monkeypatch: pytest.MonkeyPatch, value: str | None, lease: float
) -> None:
    if value is None:
        monkeypatch.delenv(LEASE_VARIABLE, raising=False)
    else:
        monkeypatch.setenv(LEASE_VARIABLE, value)
    assert lease_from_environment() == lease


async def test_a_replica_that_loses_its_lock_session_stops_handling_the_chats_it_held(
    postgres_url: str,
) -> None:
    """The database ends the session holding a replica's chat locks (a restart, a cut
    network) while an update of the chat is being handled: another replica may take the chat
    over at once, so the first stops handling it (the update stays for the new owner), and
    the update is handled once, by the new owner."""
    store = await open_store(postgres_url)
    first = await Replica.start(store, postgres_url, 60.0)
    second = await Replica.start(store, postgres_url, 60.0)
    assert first is not None and second is not None
    started: asyncio.Queue[tuple[str, int]] = asyncio.Queue()
    gate = asyncio.Event()
    handled: list[tuple[str, int]] = []
    tasks: list[asyncio.Task[None]] = []

    def feeding(name: str, inbox: SharedInbox) -> Callable[[InboxEntry], asyncio.Task[None]]:
        def feed(entry: InboxEntry) -> asyncio.Task[None]:
            async def handle() -> None:
                started.put_nowait((name, entry.update_id))
                await gate.wait()
                handled.append((name, entry.update_id))
                await inbox.done(entry.update_id)

            tasks.append(asyncio.create_task(handle()))
            return tasks[-1]

        return feed

    inboxes = {name: r.inbox("telegram") for name, r in (("first", first), ("second", second))}
    inboxes["first"].open(feeding("first", inboxes["first"]))
    try:
        assert await inboxes["first"].receive(1, "chat", "{}")
        assert await asyncio.wait_for(started.get(), WAIT) == ("first", 1)
        conn = await asyncpg.connect(postgres_url)
        try:  # the server ends the session holding the first replica's chat lock
            ended = await conn.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_locks"
                " WHERE locktype = 'advisory' AND objsubid = 2 AND granted"
                " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            )
        finally:
            await conn.close()
        assert ended == 1
        inboxes["second"].open(feeding("second", inboxes["second"]))
        await inboxes["second"].rescan()  # the second takes the chat over
        assert await asyncio.wait_for(started.get(), WAIT) == ("second", 1)
        gate.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert handled == [("second", 1)]
        assert await store.inbox_pending("telegram", "chat") == []
    finally:
        gate.set()
        await first.leave()
        await second.leave()
        await store.close()


async def test_the_lease_is_renewed_while_a_sweep_is_slow(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sweep or a look round that takes long (a large table, a reconnect waiting out its
    timeout) must not hold the heartbeats back: the lease would run out and another replica
    would mark this live one's replies interrupted."""
    store = await open_store(postgres_url)
    beats: asyncio.Queue[None] = asyncio.Queue()
    sweeping, finish = asyncio.Event(), asyncio.Event()
    heartbeat = store.heartbeat

    async def counted(replica: str, lease_seconds: float) -> None:
        await heartbeat(replica, lease_seconds)
        beats.put_nowait(None)

    async def slow_sweep() -> int:
        sweeping.set()
        await finish.wait()
        return 0

    monkeypatch.setattr(store, "heartbeat", counted)
    monkeypatch.setattr(store, "interrupt_orphaned", slow_sweep)
    replica = await Replica.start(store, postgres_url, LEASE)
    assert replica is not None
    try:
        await asyncio.wait_for(sweeping.wait(), WAIT)
        while not beats.empty():
            beats.get_nowait()
        for _ in range(2):  # each within a lease of the one before
            await asyncio.wait_for(beats.get(), LEASE)
    finally:
        finish.set()
        await replica.leave()
        await store.close()
