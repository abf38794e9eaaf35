"""Finding a chat: `parley history list` shows which chats exist, and `export` takes what it shows.

In-process against the store for the order, counts and filter; end to end for the rest: a real
`parley run` answers on the fake Telegram and the fake Discord (so the titles come from what the
platforms sent), then `parley history list` and `export` run as the operator runs them.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
from pathlib import Path
from typing import Any

import pytest

from bots.config import Settings
from bots.history import list_chats
from core import AsyncClient
from core.conversation import ChatRef, ConversationService
from storage import ChatSummary, open_store
from tests.cli_support import CLI_TIMEOUT, run_parley, start_parley
from tests.fakes.discord_api import ALICE_ID, BOB_ID, BOT_ID, GENERAL_ID, THREAD_ID, FakeDiscord
from tests.fakes.llm_server import FakeLLMServer
from tests.fakes.telegram_api import FakeTelegramAPI, user
from tests.test_conversation_fakes import ALICE, BOB, ScriptedProvider, collect, echo

WAIT = 15.0


def rows(chats: list[ChatSummary]) -> list[tuple[Any, ...]]:
    return [
        (c.platform, c.chat_id, c.thread_id, c.title, c.conversations, c.messages) for c in chats
    ]


@pytest.fixture
async def settings(tmp_path: Path) -> Settings:
    """Five chats on three platforms, touched in a known order; one renamed on the way."""
    settings = Settings(_env_file=None, database_url=f"sqlite:///{tmp_path}/h.db")
    store = await open_store(settings.database_url)
    service = ConversationService(store, AsyncClient(provider=ScriptedProvider(echo)), settings)
    group, topic = ChatRef("telegram", "-100"), ChatRef("telegram", "-100", "7")
    await service.set_model(ChatRef("discord", "556"), "m")  # a chat with settings, no messages
    await collect(service.reply(group, ALICE, "one", chat_title="Old name"))
    await service.reset(group)
    await collect(service.reply(group, BOB, "two", chat_title="Team chat"))
    await collect(
        service.reply(ChatRef("discord", "555"), ALICE, "hi", chat_title="Guild #general")
    )
    await collect(service.reply(topic, ALICE, "in a topic", chat_title="Team chat"))
    await collect(service.reply(ChatRef("console", "me"), ALICE, "local"))  # no title given
    await service.aclose()
    await store.close()
    return settings


async def test_chats_are_listed_newest_first_with_counts_and_titles(settings: Settings) -> None:
    chats = await list_chats(settings)
    assert rows(chats) == [
        ("console", "me", "", None, 1, 2),
        ("telegram", "-100", "7", "Team chat", 1, 2),
        ("discord", "555", "", "Guild #general", 1, 2),
        ("telegram", "-100", "", "Team chat", 2, 4),  # renamed: the newest title wins
        ("discord", "556", "", None, 1, 0),  # its settings were its only activity, first of all
    ]
    times = [chat.last_activity for chat in chats]
    assert times == sorted(times, reverse=True)
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", t) for t in times)


async def test_the_list_can_be_limited_to_one_platform(settings: Settings) -> None:
    assert [c.chat_id for c in await list_chats(settings, "discord")] == ["555", "556"]
    assert [c.thread_id for c in await list_chats(settings, "telegram")] == ["7", ""]
    assert await list_chats(settings, "matrix") == []


async def test_a_title_is_written_only_when_it_changes(tmp_path: Path) -> None:
    """The hot path stays one statement per message while the chat keeps its name."""
    store = await open_store(f"sqlite:///{tmp_path}/t.db")
    chat = ChatRef("telegram", "1")
    statements: list[str] = []
    write = store._write  # type: ignore[attr-defined]

    async def counting_write(sql: str, parameters: Any) -> Any:
        statements.append(sql)
        return await write(sql, parameters)

    store._write = counting_write  # type: ignore[attr-defined]
    try:
        for title in ("A", "A", "B", "B", None):
            await store.add_user_message(
                chat, author_id="1", author_name="x", text="t", chat_title=title
            )
        [summary] = await store.list_chats()
    finally:
        await store.close()
    assert summary.title == "B"
    assert len([s for s in statements if s.startswith("UPDATE chats SET title")]) == 2


def _row(out: str, platform: str, *words: str, but: str = "\0") -> list[str]:
    """The one table row of `platform` holding every one of `words` and not `but`, split on
    whitespace."""
    [line] = [
        line
        for line in out.splitlines()
        if line.split()[:1] == [platform]
        and all(word in line for word in words)
        and but not in line
    ]
    return line.split()


async def test_parley_run_stores_titles_and_the_list_names_what_export_takes(
    tmp_path: Path,
) -> None:
    database = f"sqlite:///{tmp_path}/parley.db"
    async with FakeTelegramAPI() as tg, FakeDiscord() as discord, FakeLLMServer() as llm:
        env = {
            "TELEGRAM_BOT_TOKEN": tg.token,
            "TELEGRAM_API_BASE": tg.base_url,
            "DISCORD_BOT_TOKEN": discord.token,
            "DISCORD_API_BASE": discord.api_base,
            "DISCORD_GATEWAY_URL": discord.gateway_url,
            "OPENAI_BASE_URL": llm.base_url,
            "DEFAULT_MODEL": "fake-model",
            "DATABASE_URL": database,
        }
        child = await start_parley("run", env=env, cwd=tmp_path)
        try:
            await tg.wait_calls("getUpdates", ok=None, timeout=WAIT)
            await discord.wait_connected(WAIT)
            alice = user(1001, "Alice")
            private, group = tg.private_chat(alice), tg.group(-1001234567890, "Team chat")
            await tg.message(private, alice, "hello")
            await tg.message(group, alice, f"@{tg.bot['username']} hello group")
            await discord.push_message(f"<@{BOT_ID}> hello channel", author=ALICE_ID)
            await discord.push_message(f"<@{BOT_ID}> hello thread", channel=THREAD_ID)
            await discord.push_dm("hello dm", author=BOB_ID)
            # Each reply row exists once its text shows: it is created before streaming starts.
            await tg.wait_until(lambda: all(chat.bot_messages() for chat in (private, group)), WAIT)
            await discord.wait_for(lambda: len(discord.bot_messages()) == 3, WAIT)
        finally:
            child.send_signal(signal.SIGTERM)
            await asyncio.wait_for(child.communicate(), CLI_TIMEOUT)
    assert child.returncode == 0

    listed = await run_parley("history", "list", env={"DATABASE_URL": database}, cwd=tmp_path)
    assert listed.code == 0, listed.err
    table = listed.out
    found = {
        "private": _row(table, "telegram", "Alice"),
        "group": _row(table, "telegram", "Team chat"),
        "channel": _row(table, "discord", "Parley test guild #general", but="›"),
        "thread": _row(table, "discord", "#general › a thread"),
        "dm": _row(table, "discord", "Bob"),
    }
    assert found["private"][1] == "1001" and found["group"][1] == "-1001234567890"
    assert found["thread"][1:3] == [str(GENERAL_ID), str(THREAD_ID)]
    for fields in found.values():
        assert fields[-4:-2] == ["1", "2"]  # one conversation, the question and its answer
    assert (
        len(
            [line for line in table.splitlines() if line.split()[:1] in (["telegram"], ["discord"])]
        )
        == 5
    )

    only_discord = await run_parley(
        "history", "list", "--platform", "discord", env={"DATABASE_URL": database}, cwd=tmp_path
    )
    assert "telegram" not in only_discord.out and "Bob" in only_discord.out
    none = await run_parley(
        "history", "list", "--platform", "matrix", env={"DATABASE_URL": database}, cwd=tmp_path
    )
    assert (none.code, none.out) == (0, "No chats on matrix yet.\n")

    # Export takes the id exactly as the list printed it, minus sign and all.
    chat_id = found["group"][1]
    exported = await run_parley(
        *("history", "export", "--chat", chat_id, "--format", "json"),
        env={"DATABASE_URL": database},
        cwd=tmp_path,
    )
    assert exported.code == 0, exported.err
    [chat] = json.loads(exported.out)["chats"]
    assert (chat["chat_id"], chat["title"], chat["platform"]) == (chat_id, "Team chat", "telegram")
    assert "id" not in chat and isinstance(chat["row_id"], int)
    thread_export = await run_parley(
        *("history", "export", "--chat", str(GENERAL_ID), "--topic", str(THREAD_ID)),
        env={"DATABASE_URL": database},
        cwd=tmp_path,
    )
    assert thread_export.code == 0, thread_export.err
    assert thread_export.out.startswith(
        f"# discord chat {GENERAL_ID}, thread {THREAD_ID}: Parley test guild #general › a thread"
    )
    assert "hello thread" in thread_export.out and "hello channel" not in thread_export.out
