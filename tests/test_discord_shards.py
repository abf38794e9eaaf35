"""Discord shards (DISCORD_SHARD_COUNT, DISCORD_SHARD_IDS) over real WebSockets.

The fake Discord routes each guild's events to the session of the guild's shard and DMs to
shard 0, as Discord does; its two guilds land on different shards of 2 (the first guild on
shard 1, the second on 0). A bot answers with the fake model's echo of the message, so the
model request says which process answered what: each process has its own DEFAULT_MODEL.
Two processes are two `DiscordBot`s in this test process, each with its own SQLite store:
this round shares no database between replicas (that coordination comes later), and the
shards split the chats so no chat is written by both.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import discord
import pytest
from pydantic import ValidationError

from bots.config import Settings, setting_problems
from bots.discord import MESSAGE_CONTENT_HELP, DiscordBot
from bots.discord.reconnect import SHARD_RECONNECT_MESSAGE, ReconnectLines
from bots.discord.shards import ShardPlan, shard_plan
from bots.errors import BotStartupError
from core.client import AsyncClient
from core.conversation import ConversationService
from storage import open_store
from tests.cli_support import run_parley
from tests.fakes.discord_api import (
    BOB_ID,
    BOT_ID,
    GENERAL_ID,
    GUILD_ID,
    SECOND_GENERAL_ID,
    SECOND_GUILD_ID,
    FakeDiscord,
    shard_of,
)
from tests.fakes.llm_server import FakeLLMServer

WAIT = 15.0
MENTION = f"<@{BOT_ID}>"
COMMAND_SYNCS = r"/applications/\d+/commands"


@contextlib.asynccontextmanager
async def _running(
    tmp_path: Path, fake: FakeDiscord, llm: FakeLLMServer, name: str, **overrides: Any
) -> AsyncIterator[asyncio.Task[None]]:
    """A `DiscordBot` with its own store and DEFAULT_MODEL `name`, running until the block ends."""
    settings = Settings(
        _env_file=None,
        discord_bot_token=fake.token,
        discord_api_base=fake.api_base,
        discord_gateway_url=fake.gateway_url,
        database_url=f"sqlite:///{tmp_path / (name + '.db')}",
        default_model=name,
        **overrides,
    )
    store = await open_store(settings.database_url)
    service = ConversationService(store, AsyncClient(base_url=llm.base_url), settings)
    task = asyncio.create_task(DiscordBot(settings, service).run())
    try:
        yield task
    finally:
        if not task.done():  # a bot that stopped by itself was awaited by the test
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, WAIT)
        await service.aclose()
        await store.close()


async def _sessions(fake: FakeDiscord, count: int, *bots: asyncio.Task[None]) -> None:
    """Wait until `count` gateway sessions are identified; a bot failing first says why."""
    connected = asyncio.ensure_future(fake.wait_for(lambda: fake.connected >= count, WAIT))
    await asyncio.wait({connected, *bots}, return_when=asyncio.FIRST_COMPLETED)
    for bot in bots:
        if bot.done():
            connected.cancel()
            bot.result()
    await connected


async def _answered(fake: FakeDiscord, channel: int, text: str) -> None:
    """Wait until the bot's echo of `text` is the whole of a message in `channel`."""
    await fake.wait_for(
        lambda: any(m.content.endswith(text) for m in fake.bot_messages(channel)), WAIT
    )


async def _until(predicate: Callable[[], bool], within: float = WAIT) -> None:
    """Wait for the bot's own state, which no fake event announces (discord.py dispatches
    `on_ready` seconds after the last GUILD_CREATE): checked every 20 ms up to `within`."""
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110 - no event announces it (see above)
            await asyncio.sleep(0.02)


def _who_answered(llm: FakeLLMServer) -> dict[str, str]:
    """For each model request, the last user message's text (the asked) -> the model (who)."""
    answered: dict[str, str] = {}
    for request in llm.requests:
        body = request.json
        user = [m for m in body["messages"] if m["role"] == "user"][-1]["content"]
        text = user if isinstance(user, str) else " ".join(p.get("text", "") for p in user)
        answered[text.split()[-1]] = body["model"]
    return answered


def _identified_shards(fake: FakeDiscord) -> list[list[int] | None]:
    return sorted(p.get("shard") for p in fake.identify_payloads)


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as server:
        yield server


@pytest.fixture
async def llm() -> AsyncIterator[FakeLLMServer]:
    async with FakeLLMServer() as server:
        yield server


def test_the_fixture_guilds_are_on_different_shards() -> None:
    """What the other tests rely on: the two guilds on shards 1 and 0 of 2."""
    assert (shard_of(GUILD_ID, 2), shard_of(SECOND_GUILD_ID, 2)) == (1, 0)


async def test_one_process_with_two_shards_answers_both_guilds_and_dms(
    tmp_path: Path, fake: FakeDiscord, llm: FakeLLMServer
) -> None:
    async with _running(tmp_path, fake, llm, "model-all", discord_shard_count=2) as bot:
        await _sessions(fake, 2, bot)
        assert _identified_shards(fake) == [[0, 2], [1, 2]]
        await fake.push_message(f"{MENTION} first-guild", channel=GENERAL_ID)
        await fake.push_message(f"{MENTION} second-guild", channel=SECOND_GENERAL_ID)
        await fake.push_dm("direct")
        await _answered(fake, GENERAL_ID, "first-guild")
        await _answered(fake, SECOND_GENERAL_ID, "second-guild")
        await _answered(fake, fake.dm_channel_id(BOB_ID), "direct")
    assert _who_answered(llm) == {
        "first-guild": "model-all",
        "second-guild": "model-all",
        "direct": "model-all",
    }
    assert len(fake.calls_to("PUT", COMMAND_SYNCS)) == 1


async def test_two_processes_answer_their_own_guilds_and_dms_go_to_shard_0(
    tmp_path: Path, fake: FakeDiscord, llm: FakeLLMServer
) -> None:
    shards = {"discord_shard_count": 2}
    async with (
        _running(tmp_path, fake, llm, "model-0", discord_shard_ids=[0], **shards) as zero,
        _running(tmp_path, fake, llm, "model-1", discord_shard_ids=[1], **shards) as one,
    ):
        await _sessions(fake, 2, zero, one)
        assert _identified_shards(fake) == [[0, 2], [1, 2]]
        await fake.push_message(f"{MENTION} first-guild", channel=GENERAL_ID)
        await fake.push_message(f"{MENTION} second-guild", channel=SECOND_GENERAL_ID)
        await fake.push_dm("direct")
        await _answered(fake, GENERAL_ID, "first-guild")
        await _answered(fake, SECOND_GENERAL_ID, "second-guild")
        await _answered(fake, fake.dm_channel_id(BOB_ID), "direct")
    # Each message reached one session only, so one process asked the model, once.
    assert len(llm.requests) == 3
    assert _who_answered(llm) == {
        "first-guild": "model-1",  # GUILD_ID is on shard 1
        "second-guild": "model-0",
        "direct": "model-0",  # DMs: shard 0
    }
    # The slash commands are synced by the process running shard 0 alone.
    assert len(fake.calls_to("PUT", COMMAND_SYNCS)) == 1


async def test_without_a_count_one_connection_serves_both_guilds(
    tmp_path: Path, fake: FakeDiscord, llm: FakeLLMServer
) -> None:
    async with _running(tmp_path, fake, llm, "model-one") as bot:
        await _sessions(fake, 1, bot)
        await fake.push_message(f"{MENTION} second-guild", channel=SECOND_GENERAL_ID)
        await _answered(fake, SECOND_GENERAL_ID, "second-guild")
    assert _identified_shards(fake) == [None]  # no `shard` in IDENTIFY, as before sharding


def _problems(**environment: Any) -> list[str]:
    with pytest.raises(ValidationError) as caught:
        Settings(_env_file=None, **environment)
    return [line for _, line in setting_problems(caught.value)]


def test_shard_settings_are_checked_at_start() -> None:
    assert _problems(discord_shard_count=4, discord_shard_ids="4") == [
        "DISCORD_SHARD_IDS='4': shard id 4 is outside DISCORD_SHARD_COUNT=4 (0-3)"
    ]
    assert _problems(discord_shard_count=4, discord_shard_ids="0-2, 1") == [
        "DISCORD_SHARD_IDS='0-2, 1': shard id 1 is listed twice"
    ]
    assert _problems(discord_shard_ids="0") == [
        "DISCORD_SHARD_IDS='0': needs DISCORD_SHARD_COUNT, the bot's total number of shards"
    ]
    assert _problems(discord_shard_count=4, discord_shard_ids="3-1") == [
        "DISCORD_SHARD_IDS='3-1': the range '3-1' runs backwards"
    ]
    # A typo'd range is refused from its ends, never listed id by id (a MemoryError).
    assert _problems(discord_shard_count=4, discord_shard_ids="0-99999999999") == [
        "DISCORD_SHARD_IDS='0-99999999999': shard id 99999999999 is outside"
        " DISCORD_SHARD_COUNT=4 (0-3)"
    ]
    assert _problems(discord_shard_count=0)[0].startswith("DISCORD_SHARD_COUNT='0': ")


def test_shard_ids_read_as_operators_write_them() -> None:
    def plan(**environment: Any) -> ShardPlan | None:
        return shard_plan(Settings(_env_file=None, **environment))

    assert plan() is None
    assert plan(discord_shard_count=4) == ShardPlan(4, (0, 1, 2, 3))
    assert plan(discord_shard_count=8, discord_shard_ids="0-2, 6") == ShardPlan(8, (0, 1, 2, 6))
    assert plan(discord_shard_count=4, discord_shard_ids="") == ShardPlan(4, (0, 1, 2, 3))


async def test_parley_run_stops_on_a_shard_outside_the_count(
    tmp_path: Path, fake: FakeDiscord
) -> None:
    environment = {
        "DISCORD_BOT_TOKEN": fake.token,
        "DISCORD_API_BASE": fake.api_base,
        "DISCORD_GATEWAY_URL": fake.gateway_url,
        "DISCORD_SHARD_COUNT": "2",
        "DISCORD_SHARD_IDS": "0,2",
    }
    run = await run_parley("run", env=environment, cwd=tmp_path)
    assert run.code == 2
    assert run.err.splitlines() == [
        "Invalid setting DISCORD_SHARD_IDS='0,2': shard id 2 is outside DISCORD_SHARD_COUNT=2 (0-1)"
    ]
    assert not fake.calls  # stopped before anything connected


async def test_discord_closes_a_session_with_an_invalid_shard(fake: FakeDiscord) -> None:
    """The fake refuses what Discord refuses: close 4010 for a shard outside its count."""
    async with aiohttp.ClientSession() as http, http.ws_connect(fake.gateway_url) as ws:
        hello = await ws.receive_json(timeout=WAIT)
        assert hello["op"] == 10
        await ws.send_json(
            {"op": 2, "d": {"token": fake.token, "intents": 1, "shard": [2, 2], "properties": {}}}
        )
        closed = await ws.receive(timeout=WAIT)
    assert (closed.type, ws.close_code) == (aiohttp.WSMsgType.CLOSE, 4010)
    assert fake.gateway_closes == [4010]


async def test_too_many_guilds_for_one_connection_asks_for_sharding(
    tmp_path: Path, fake: FakeDiscord, llm: FakeLLMServer
) -> None:
    """Discord's 2,500 guilds per session, lowered to 1: without shards the start-up stops
    with what to set; with the count /gateway/bot recommends, both shards connect."""
    fake.max_guilds_per_shard = 1
    async with _running(tmp_path, fake, llm, "model-one") as bot:
        with pytest.raises(BotStartupError) as failure:
            await asyncio.wait_for(bot, WAIT)
    assert "Discord requires sharding" in str(failure.value)
    assert "DISCORD_SHARD_COUNT" in str(failure.value)
    assert fake.gateway_closes == [4011]

    async with (
        aiohttp.ClientSession() as http,
        http.get(
            fake.api_base + "/gateway/bot", headers={"Authorization": f"Bot {fake.token}"}
        ) as answer,
    ):
        recommended = (await answer.json())["shards"]
    assert recommended == 2
    async with _running(tmp_path, fake, llm, "model-two", discord_shard_count=recommended) as bot:
        await _sessions(fake, 2, bot)


async def test_a_sharded_bot_without_the_message_content_intent_says_how_to_fix_it(
    tmp_path: Path, llm: FakeLLMServer
) -> None:
    async with (
        FakeDiscord(enabled_intents=()) as fake,
        _running(tmp_path, fake, llm, "model-two", discord_shard_count=2) as bot,
    ):
        with pytest.raises(BotStartupError) as failure:
            await asyncio.wait_for(bot, WAIT)
    assert str(failure.value) == MESSAGE_CONTENT_HELP
    assert 4014 in fake.gateway_closes


async def test_each_shard_resumes_after_discord_asks_it_to_reconnect(
    tmp_path: Path, fake: FakeDiscord, llm: FakeLLMServer
) -> None:
    async with _running(tmp_path, fake, llm, "model-two", discord_shard_count=2) as bot:
        await _sessions(fake, 2, bot)
        await fake.reconnect_clients()  # op 7 to both shards' sessions
        await fake.wait_for(lambda: fake.resumed == 2 and fake.connected == 2, WAIT)
        await fake.push_message(f"{MENTION} after-resume", channel=GENERAL_ID)
        await fake.push_message(f"{MENTION} second-resume", channel=SECOND_GENERAL_ID)
        await _answered(fake, GENERAL_ID, "after-resume")
        await _answered(fake, SECOND_GENERAL_ID, "second-resume")
    assert len(fake.identify_payloads) == 2  # resumed, not identified again


def test_a_shard_reconnect_traceback_becomes_one_line_naming_the_shard() -> None:
    try:
        raise discord.GatewayNotFound()
    except discord.GatewayNotFound:
        exc_info = sys.exc_info()
    record = logging.LogRecord(
        "discord.shard", logging.ERROR, __file__, 1, SHARD_RECONNECT_MESSAGE, (1, 2.5), exc_info
    )
    assert ReconnectLines("gateway.example").filter(record)
    assert record.getMessage() == (
        "Discord: cannot reach gateway.example for shard 1 (gateway not found); reconnecting in 2.5 s"
    )
    assert record.levelno == logging.WARNING and record.exc_info is None


async def test_a_shard_that_must_identify_again_counts_as_connected_again(
    tmp_path: Path, fake: FakeDiscord, llm: FakeLLMServer
) -> None:
    """discord.py's `on_ready` comes once for all shards; a shard back with a new session is
    told by `on_shard_ready`, and the bot's `connected` (the health check's) follows it."""
    settings = Settings(
        _env_file=None,
        discord_bot_token=fake.token,
        discord_api_base=fake.api_base,
        discord_gateway_url=fake.gateway_url,
        database_url=f"sqlite:///{tmp_path / 'p.db'}",
        discord_shard_count=2,
    )
    store = await open_store(settings.database_url)
    service = ConversationService(store, AsyncClient(base_url=llm.base_url), settings)
    bot = DiscordBot(settings, service)
    task = asyncio.create_task(bot.run())
    try:
        await _sessions(fake, 2, task)
        await _until(lambda: bot.connected)
        await fake.go_away()
        await _until(lambda: not bot.connected)
        fake._resumable.clear()  # Discord forgot the sessions: the shards must IDENTIFY
        await fake.come_back()
        await fake.wait_for(lambda: len(fake.identify_payloads) == 4 and fake.connected == 2, 90)
        await _until(lambda: bot.connected)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, WAIT)
        await service.aclose()
        await store.close()
