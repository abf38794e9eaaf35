"""`parley run`: both bots in one process, on one event loop, sharing the store and HTTP pool.

Configured only through the environment, as an operator would, against the fake Bot API, the
fake Discord and the fake model, all on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from bots.app import run_bots
from bots.config import Settings
from core.conversation import ChatRef
from core.errors import ConfigurationError
from storage import MessageStatus, Role, open_store
from tests.fakes.discord_api import ALICE_ID, BOT_ID, GENERAL_ID, FakeDiscord
from tests.fakes.llm_server import FakeLLMServer, Script
from tests.fakes.telegram_api import FakeTelegramAPI, user

WAIT = 15.0


async def run_telegram_only_until_polling(monkeypatch, database) -> None:
    """`parley run` with only a Telegram token, configured through the environment, stopped
    once it polls: everything start-up does has happened by then."""
    async with FakeTelegramAPI() as tg:
        monkeypatch.setenv("TELEGRAM_BOT_TOKEN", tg.token)
        monkeypatch.setenv("TELEGRAM_API_BASE", tg.base_url)
        monkeypatch.setenv("DATABASE_URL", f"sqlite:///{database}")
        running = asyncio.create_task(run_bots(Settings()))
        try:
            await tg.wait_calls("getUpdates", ok=None, timeout=WAIT)
        finally:
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(running, WAIT)


async def test_parley_run_serves_telegram_and_discord_at_once(tmp_path, monkeypatch):
    database = tmp_path / "parley.db"
    async with FakeTelegramAPI() as tg, FakeDiscord() as discord, FakeLLMServer() as llm:
        for name, value in {
            "TELEGRAM_BOT_TOKEN": tg.token,
            "TELEGRAM_API_BASE": tg.base_url,
            "DISCORD_BOT_TOKEN": discord.token,
            "DISCORD_API_BASE": discord.api_base,
            "DISCORD_GATEWAY_URL": discord.gateway_url,
            "OPENAI_BASE_URL": llm.base_url,
            "DEFAULT_MODEL": "fake-model",
            "DATABASE_URL": f"sqlite:///{database}",
        }.items():
            monkeypatch.setenv(name, value)
        llm.enqueue(
            Script(pieces=["Hello ", "Telegram"], delay=0.05),
            Script(pieces=["Hello ", "Discord"], delay=0.05),
        )
        running = asyncio.create_task(run_bots(Settings()))
        try:
            await tg.wait_calls("getUpdates", ok=None, timeout=WAIT)
            await discord.wait_connected(WAIT)

            alice = user(1001, "Alice")
            chat = tg.private_chat(alice)
            await tg.message(chat, alice, "hi from telegram")
            await tg.wait_until(
                lambda: any(m.text == "Hello Telegram" for m in chat.bot_messages()), WAIT
            )
            await discord.push_message(f"<@{BOT_ID}> hi from discord", author=ALICE_ID)
            await discord.wait_for(
                lambda: any(m.content == "Hello Discord" for m in discord.bot_messages(GENERAL_ID)),
                WAIT,
            )
            assert not running.done()
        finally:
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(running, WAIT)

    # One database holds both platforms' conversations, each reply complete.
    store = await open_store(f"sqlite:///{database}")
    try:
        for chat_ref, answer in [
            (ChatRef("telegram", str(chat.id)), "Hello Telegram"),
            (ChatRef("discord", str(GENERAL_ID)), "Hello Discord"),
        ]:
            conversation = await store.current_conversation(chat_ref)
            messages = await store.conversation_messages(conversation)
            assert [(m.role, m.status) for m in messages] == [
                (Role.USER, MessageStatus.COMPLETE),
                (Role.ASSISTANT, MessageStatus.COMPLETE),
            ]
            assert messages[-1].text == answer
    finally:
        await store.close()


async def test_parley_run_without_a_token_says_what_to_set():
    with pytest.raises(ConfigurationError, match="TELEGRAM_BOT_TOKEN"):
        await run_bots(Settings())


async def test_parley_run_warns_at_start_when_the_default_provider_has_no_key(
    tmp_path, monkeypatch, caplog
):
    await run_telegram_only_until_polling(monkeypatch, tmp_path / "parley.db")
    warnings = [r.getMessage() for r in caplog.records if r.name == "bots.app"]
    assert any("OPENAI_API_KEY" in message for message in warnings)


async def test_parley_run_recovers_only_the_platforms_it_serves(tmp_path, monkeypatch):
    """A Telegram-only process leaves a Discord reply that another process is streaming."""
    database = tmp_path / "parley.db"
    store = await open_store(f"sqlite:///{database}")
    streaming = {}
    for platform in ("telegram", "discord"):
        chat = ChatRef(platform, "1")
        asked = await store.add_user_message(chat, author_id="1", author_name="A", text="hi")
        streaming[platform] = await store.start_reply(asked, None)
    await store.close()
    await run_telegram_only_until_polling(monkeypatch, database)
    store = await open_store(f"sqlite:///{database}")
    try:
        status = {}
        for platform in ("telegram", "discord"):
            (_, reply) = await store.conversation_messages(
                await store.current_conversation(ChatRef(platform, "1"))  # type: ignore[arg-type]
            )
            status[platform] = reply.status
    finally:
        await store.close()
    assert status == {"telegram": MessageStatus.INTERRUPTED, "discord": MessageStatus.STREAMING}


async def start_both_and_stop(monkeypatch, database, **env: str) -> None:
    """`parley run` with both bots, configured through the environment plus `env`, stopped
    once both platforms confirmed it: every start-up warning has been logged by then."""
    async with FakeTelegramAPI() as tg, FakeDiscord() as discord:
        for name, value in {
            "TELEGRAM_BOT_TOKEN": tg.token,
            "TELEGRAM_API_BASE": tg.base_url,
            "DISCORD_BOT_TOKEN": discord.token,
            "DISCORD_API_BASE": discord.api_base,
            "DISCORD_GATEWAY_URL": discord.gateway_url,
            "DATABASE_URL": f"sqlite:///{database}",
            **env,
        }.items():
            monkeypatch.setenv(name, value)
        running = asyncio.create_task(run_bots(Settings()))
        try:
            await tg.wait_calls("getUpdates", ok=None, timeout=WAIT)
            await discord.wait_connected(WAIT)
        finally:
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(running, WAIT)


def open_bot_warnings(caplog) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "bots.app" and r.levelname == "WARNING" and "ALLOWED_IDS" in r.getMessage()
    ]


async def test_parley_run_warns_once_per_bot_that_anyone_may_use(tmp_path, monkeypatch, caplog):
    await start_both_and_stop(monkeypatch, tmp_path / "parley.db")
    telegram, discord = open_bot_warnings(caplog)
    assert telegram.startswith("Telegram: TELEGRAM_ALLOWED_IDS is empty, so anyone who finds")
    assert "Set TELEGRAM_ALLOWED_IDS" in telegram and "GUEST_DAILY_TOKENS" in telegram
    assert discord.startswith("Discord: DISCORD_ALLOWED_IDS is empty")
    assert "Set DISCORD_ALLOWED_IDS" in discord and "GUEST_DAILY_TOKENS" in discord


async def test_parley_run_says_nothing_of_access_when_the_lists_are_set(
    tmp_path, monkeypatch, caplog
):
    await start_both_and_stop(
        monkeypatch,
        tmp_path / "parley.db",
        TELEGRAM_ALLOWED_IDS="1001",
        DISCORD_ALLOWED_IDS=str(ALICE_ID),
    )
    assert open_bot_warnings(caplog) == []
    # The check is on the list, not on the log being quiet: the provider warning is there.
    assert any("OPENAI_API_KEY" in r.getMessage() for r in caplog.records)
