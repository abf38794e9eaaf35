"""SIGTERM and Ctrl-C stop a real `parley run` gracefully, exit code 0.

Replies in flight finish within SHUTDOWN_GRACE_SECONDS; those still running after it end with
the shutdown note, their rows 'interrupted'. Messages sent during the stop are not taken, and
the next start answers them; the updates answered are confirmed, so it answers nothing twice.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

from core.conversation import INTERRUPTED_NOTE, ChatRef
from storage import MessageStatus
from tests.fakes.discord_api import GENERAL_ID, FakeDiscord
from tests.fakes.llm_server import FakeLLMServer, Script
from tests.fakes.telegram_api import FakeTelegramAPI
from tests.run_support import (
    ALICE,
    MENTION,
    WAIT,
    answered,
    assert_no_traceback,
    discord_env,
    parley_run,
    replies_to,
    stored_reply,
    telegram_env,
)


async def test_sigterm_lets_the_reply_in_flight_finish_within_the_grace(tmp_path: Path) -> None:
    database = tmp_path / "p.db"
    pieces = ["one ", "two ", "three ", "four ", "five"]
    async with FakeTelegramAPI() as tg, FakeLLMServer() as llm:
        llm.enqueue(Script(pieces=pieces, delay=0.3))
        env = {**telegram_env(tg, llm, database), "SHUTDOWN_GRACE_SECONDS": "20"}
        async with parley_run(env) as child:
            await child.wait_line("Telegram: running as")
            chat = tg.private_chat(ALICE)
            request = await tg.message(chat, ALICE, "count")
            await tg.wait_until(lambda: replies_to(chat, request["message_id"]), WAIT)
            child.process.send_signal(signal.SIGTERM)
            await child.wait_line("stopping; replies in flight get up to 20 s")
            late = await tg.message(chat, ALICE, "sent while stopping")
            assert await child.exited() == 0
        assert replies_to(chat, request["message_id"]) == ["".join(pieces)]
        assert replies_to(chat, late["message_id"]) == []  # not taken...
        assert await stored_reply(database, ChatRef("telegram", str(chat.id))) == (
            MessageStatus.COMPLETE,
            "".join(pieces),
        )
        assert_no_traceback(child)

        # ...so the next start answers it, and only it.
        async with parley_run(telegram_env(tg, llm, database)) as again:
            await answered(tg, chat, late, "echo: sent while stopping")
            assert await again.stop() == 0
        assert replies_to(chat, request["message_id"]) == ["".join(pieces)]
        assert len(llm.requests) == 2


async def test_ctrl_c_cuts_a_long_reply_short_after_the_grace(tmp_path: Path) -> None:
    database = tmp_path / "p.db"
    async with FakeTelegramAPI() as tg, FakeLLMServer() as llm:
        llm.enqueue(Script(pieces=["so far ", *[f"w{i} " for i in range(100)]], delay=0.2))
        env = {**telegram_env(tg, llm, database), "SHUTDOWN_GRACE_SECONDS": "0.5"}
        async with parley_run(env) as child:
            await child.wait_line("Telegram: running as")
            chat = tg.private_chat(ALICE)
            request = await tg.message(chat, ALICE, "talk a lot")
            await tg.wait_until(lambda: replies_to(chat, request["message_id"]), WAIT)
            stopped_at = time.monotonic()
            assert await child.stop(signal.SIGINT) == 0
            took = time.monotonic() - stopped_at
        (shown,) = replies_to(chat, request["message_id"])
        assert shown is not None and shown.startswith("so far ")
        assert shown.endswith(f"\n\n{INTERRUPTED_NOTE}") and "w99" not in shown
        status, text = await stored_reply(database, ChatRef("telegram", str(chat.id)))
        assert status is MessageStatus.INTERRUPTED and text.startswith("so far ")
        assert "w99" not in text
        assert took < 10, took  # the grace, then the last edit: not the whole reply
        assert_no_traceback(child)

        # The update was confirmed at the stop: a restart does not answer it again.
        async with parley_run(telegram_env(tg, llm, database)) as again:
            marker = await tg.message(chat, ALICE, "new")
            await answered(tg, chat, marker, "echo: new")
            assert await again.stop() == 0
        assert replies_to(chat, request["message_id"]) == [shown]
        assert len(llm.requests) == 2


async def test_discord_stop_cuts_a_long_reply_short_after_the_grace(tmp_path: Path) -> None:
    database = tmp_path / "p.db"
    async with FakeDiscord() as discord, FakeLLMServer() as llm:
        llm.enqueue(Script(pieces=["so far ", *[f"w{i} " for i in range(100)]], delay=0.2))
        env = {**discord_env(discord, llm, database), "SHUTDOWN_GRACE_SECONDS": "0.5"}
        async with parley_run(env) as child:
            await child.wait_line("Discord: running as")
            await discord.wait_connected(WAIT)
            await discord.push_message(f"{MENTION} talk a lot")
            await discord.wait_for(lambda: discord.bot_messages(GENERAL_ID), WAIT)
            assert await child.stop() == 0
        (shown,) = [m.content for m in discord.bot_messages(GENERAL_ID)]
        assert shown.startswith("so far ") and shown.endswith(f"\n\n{INTERRUPTED_NOTE}")
        status, _ = await stored_reply(database, ChatRef("discord", str(GENERAL_ID)))
        assert status is MessageStatus.INTERRUPTED
        assert_no_traceback(child)


async def test_a_second_signal_ends_the_grace_at_once(tmp_path: Path) -> None:
    database = tmp_path / "p.db"
    async with FakeTelegramAPI() as tg, FakeLLMServer() as llm:
        llm.enqueue(Script(pieces=["so far ", *[f"w{i} " for i in range(100)]], delay=0.2))
        env = {**telegram_env(tg, llm, database), "SHUTDOWN_GRACE_SECONDS": "60"}
        async with parley_run(env) as child:
            await child.wait_line("Telegram: running as")
            chat = tg.private_chat(ALICE)
            request = await tg.message(chat, ALICE, "talk a lot")
            await tg.wait_until(lambda: replies_to(chat, request["message_id"]), WAIT)
            child.process.send_signal(signal.SIGTERM)
            await child.wait_line("Telegram: stopping; 1 reply(ies) in flight get up to 60 s")
            again_at = time.monotonic()
            assert await child.stop(signal.SIGINT) == 0
            took = time.monotonic() - again_at
        (shown,) = replies_to(chat, request["message_id"])
        assert shown is not None and shown.endswith(f"\n\n{INTERRUPTED_NOTE}")
        status, _ = await stored_reply(database, ChatRef("telegram", str(chat.id)))
        assert status is MessageStatus.INTERRUPTED
        assert took < 10, took  # not the 60 s grace
        assert_no_traceback(child)
