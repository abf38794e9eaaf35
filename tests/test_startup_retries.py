"""`parley run` started while a platform cannot be reached: it retries, then answers.

A real child process; the fake is not listening at first and starts later on the port the child
was given. The child must log one line per failed try (host, cause, next wait) and no traceback,
say "running as @name" only once the platform confirmed the bot, and answer what was sent
meanwhile. The recovery times are printed (`pytest -s`). A rejected token still stops at once.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from tests.fakes.discord_api import GENERAL_ID, FakeDiscord
from tests.fakes.llm_server import FakeLLMServer
from tests.fakes.telegram_api import BOT_USERNAME, FakeTelegramAPI
from tests.run_support import (
    ALICE,
    MENTION,
    WAIT,
    answered,
    assert_no_traceback,
    discord_env,
    free_port,
    parley_run,
    report,
    telegram_env,
)


async def test_telegram_unreachable_at_start_is_retried_until_it_answers(tmp_path: Path) -> None:
    port = free_port()
    tg = FakeTelegramAPI(port=port)
    async with (
        FakeLLMServer() as llm,
        parley_run(telegram_env(tg, llm, tmp_path / "p.db")) as child,
    ):
        # The retries' lines: preflight's warning uses the same words, under "telegram: ".
        await child.wait_line(f"Telegram: cannot reach 127.0.0.1:{port} (connection refused)", 2)
        assert not child.matching("running as")
        # Someone wrote while the bot could not reach Telegram: Telegram keeps it.
        chat = tg.private_chat(ALICE)
        request = await tg.message(chat, ALICE, "are you there?")
        await tg.start()
        up = time.monotonic()
        try:
            running = await child.wait_line(f"Telegram: running as @{BOT_USERNAME}")
            first_answer = await answered(tg, chat, request, "echo: are you there?")
            report("Telegram up at start", to_running_as=running - up, to_answer=first_answer - up)
            assert await child.stop() == 0
        finally:
            await tg.close()
    retries = child.matching("Telegram: cannot reach")
    assert len(retries) >= 2 and all("; retrying in " in line for _, line in retries)
    assert_no_traceback(child)
    assert not child.matching("connected again")  # no outage: it had never been connected
    # One try per line: the waits double (1 s, 2 s, ...), the first one fails at once.
    assert [line.split("retrying in ")[1] for _, line in retries[:2]] == ["1 s", "2 s"]
    assert len(tg.calls_of("getMe", ok=True)) == 1


async def test_discord_unreachable_at_start_is_retried_until_it_answers(tmp_path: Path) -> None:
    port = free_port()
    discord = FakeDiscord(port=port)
    async with (
        FakeLLMServer() as llm,
        parley_run(discord_env(discord, llm, tmp_path / "p.db")) as child,
    ):
        # The retries' lines: preflight's warning uses the same words, under "discord: ".
        await child.wait_line(f"Discord: cannot reach 127.0.0.1:{port} (connection refused)", 2)
        assert not child.matching("running as")
        await discord.start()
        up = time.monotonic()
        try:
            running = await child.wait_line("Discord: running as @Parley")
            await discord.wait_connected(WAIT)
            await discord.push_message(f"{MENTION} are you there?")
            answer = await discord.wait_for(
                lambda: [
                    m for m in discord.bot_messages(GENERAL_ID) if "are you there" in m.content
                ],
                WAIT,
            )
            report(
                "Discord up at start",
                to_running_as=running - up,
                to_answer=time.monotonic() - up,
            )
            assert len(answer) == 1
            assert await child.stop() == 0
        finally:
            await discord.__aexit__()
    retries = child.matching("Discord: cannot reach")
    assert len(retries) >= 2 and all("; retrying in " in line for _, line in retries)
    assert_no_traceback(child)
    assert not child.matching("connected again")  # no outage: it had never been connected


async def test_a_rejected_token_stops_at_once_with_its_fix(tmp_path: Path) -> None:
    async with FakeTelegramAPI(token="123:the-real-one") as tg, FakeLLMServer() as llm:
        env = telegram_env(tg, llm, tmp_path / "p.db")
        env["TELEGRAM_BOT_TOKEN"] = "123:not-the-real-one"
        async with parley_run(env) as child:
            code = await asyncio.wait_for(child.process.wait(), WAIT)
    assert code == 1
    assert "@BotFather" in child.log and "retrying" not in child.log
    assert_no_traceback(child)


async def test_a_stop_while_retrying_exits_at_once_with_0(tmp_path: Path) -> None:
    tg = FakeTelegramAPI(port=free_port())
    async with (
        FakeLLMServer() as llm,
        parley_run(telegram_env(tg, llm, tmp_path / "p.db")) as child,
    ):
        await child.wait_line("Telegram: cannot reach")
        stopped_at = time.monotonic()
        assert await child.stop() == 0
        assert time.monotonic() - stopped_at < WAIT / 3  # not after the next retry, or later
    assert_no_traceback(child)
