"""A PostgreSQL server that restarts while Parley runs: the reply in flight is saved once the
server is back, a message arriving while it is down fails visibly with nothing half written,
and the next message after the restart is answered (asyncpg's pool reconnects)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest

from core.conversation import ConversationService
from storage import MessageStatus, Store, open_store
from tests.postgres_support import (
    Cluster,
    _binaries,
    _prepare_template,
    _start_cluster,
    _unavailable,
    create_database,
)
from tests.test_conversation import make_service, rows
from tests.test_conversation_fakes import ALICE, WAIT, Gate, ScriptedProvider, chat, collect


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    """A cluster of this test's own: stopping it must not disturb the session's."""
    binaries = _binaries()
    if binaries is None:
        _unavailable("no PostgreSQL binaries (initdb) to start a cluster to restart")
    assert binaries is not None
    started = _start_cluster(binaries)
    yield started
    started.stop()


@pytest.fixture
async def restart_store(cluster: Cluster) -> AsyncIterator[Store]:
    await _prepare_template(cluster.url)
    opened = await open_store(await create_database(cluster.url))
    yield opened
    await opened.close()


async def test_a_restart_mid_reply_saves_the_reply_and_the_next_message_is_answered(
    cluster: Cluster, restart_store: Store
) -> None:
    gate = Gate()
    service: ConversationService = make_service(restart_store, ScriptedProvider(gate))
    in_flight = service.reply(chat("1"), ALICE, "long question")
    reader = asyncio.ensure_future(collect(in_flight))
    await asyncio.wait_for(gate.sent_first.wait(), WAIT)

    await asyncio.to_thread(cluster.stop_server)
    down = service.reply(chat("2"), ALICE, "while down")
    assert await asyncio.wait_for(down.wait(), WAIT) == "error"
    await asyncio.to_thread(cluster.start_server)

    gate.release.set()
    assert await asyncio.wait_for(reader, WAIT) == "partial answer"
    user, assistant = await rows(restart_store, chat("1"))
    assert (user.text, assistant.text, assistant.status) == (
        "long question",
        "partial answer",
        MessageStatus.COMPLETE,
    )
    assert await restart_store.current_conversation(chat("2")) is None

    gate2 = Gate(rest="")
    gate2.release.set()
    after = make_service(restart_store, ScriptedProvider(gate2))
    assert await collect(after.reply(chat("2"), ALICE, "after")) == "partial "
    assert [m.text for m in await rows(restart_store, chat("2"))] == ["after", "partial "]
    await service.aclose()
    await after.aclose()
