"""`parley run` through a platform outage while it runs: the fake goes away and comes back.

A real child process; the fake closes its port (cutting the long poll or the gateway) and
serves again on the same port with the platform's state kept (Telegram's pending updates,
Discord's resumable session). Polling and the gateway must resume by themselves and nothing may
be answered twice. The recovery times are printed (`pytest -s`).
"""

from __future__ import annotations

import time
from pathlib import Path

from tests.fakes.discord_api import FakeDiscord
from tests.fakes.llm_server import FakeLLMServer
from tests.fakes.telegram_api import FakeTelegramAPI
from tests.run_support import (
    ALICE,
    MENTION,
    WAIT,
    answered,
    assert_no_traceback,
    discord_answers,
    discord_env,
    parley_run,
    replies_to,
    report,
    telegram_env,
)


async def test_telegram_outage_while_running_is_survived(tmp_path: Path) -> None:
    async with (
        FakeTelegramAPI() as tg,
        FakeLLMServer() as llm,
        parley_run(telegram_env(tg, llm, tmp_path / "p.db")) as child,
    ):
        await child.wait_line("Telegram: running as")
        chat = tg.private_chat(ALICE)
        before = await tg.message(chat, ALICE, "before")
        await answered(tg, chat, before, "echo: before")

        await tg.go_away()
        await child.wait_line("Telegram: cannot reach")
        during = await tg.message(chat, ALICE, "during")  # Telegram keeps it
        await tg.come_back()
        up = time.monotonic()
        back = await child.wait_line("Telegram: connected again after")
        answer_during = await answered(tg, chat, during, "echo: during")
        after = await tg.message(chat, ALICE, "after")
        await answered(tg, chat, after, "echo: after")
        report(
            "Telegram outage while running",
            to_connected_again=back - up,
            to_answer_of_message_sent_during_outage=answer_during - up,
        )
        assert not tg.calls_of("getUpdates", ok=False)  # no second poller, no 409
        assert await child.stop() == 0
    for request, text in [
        (before, "echo: before"),
        (during, "echo: during"),
        (after, "echo: after"),
    ]:
        assert replies_to(chat, request["message_id"]) == [text]
    assert len(llm.requests) == 3
    assert_no_traceback(child)
    assert len(child.matching("Telegram: cannot reach")) >= 1


async def test_discord_outage_while_running_is_survived(tmp_path: Path) -> None:
    async with (
        FakeDiscord() as discord,
        FakeLLMServer() as llm,
        parley_run(discord_env(discord, llm, tmp_path / "p.db")) as child,
    ):
        await child.wait_line("Discord: running as")
        await discord.wait_connected(WAIT)
        await discord.push_message(f"{MENTION} before")
        await discord.wait_for(lambda: discord_answers(discord, "before"), WAIT)

        await discord.go_away()
        await child.wait_line("Discord: cannot reach")
        await discord.come_back()
        up = time.monotonic()
        back = await child.wait_line("Discord: connected again after")
        await discord.wait_connected(WAIT)
        await discord.push_message(f"{MENTION} after")
        await discord.wait_for(lambda: discord_answers(discord, "after"), WAIT)
        report(
            "Discord outage while running",
            to_connected_again=back - up,
            to_answer=time.monotonic() - up,
        )
        assert discord.resumed == 1  # the session went on: nothing replayed twice
        assert await child.stop() == 0
    assert len(discord_answers(discord, "before")) == 1
    assert len(discord_answers(discord, "after")) == 1
    assert len(llm.requests) == 2
    assert_no_traceback(child)
    reconnects = child.matching("Discord: cannot reach")
    assert reconnects and all("; reconnecting in " in line for _, line in reconnects)
