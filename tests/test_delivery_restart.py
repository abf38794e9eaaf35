"""Replies cut by a kill or a stop, with real `parley run` processes against the fakes.

What the user sees is the fake platform's message, which outlives each process as a real chat
does. The database is read beside the running child.
"""

from __future__ import annotations

from pathlib import Path

from core.conversation import INTERRUPTED_NOTE
from tests.delivery_support import CHILD_WAIT, ParleyRun, reply_rows, wait_for_row
from tests.fakes.discord_api import ALICE_ID, BOT_ID, GENERAL_ID, FakeDiscord, Message
from tests.fakes.llm_server import FakeLLMServer, Script
from tests.fakes.telegram_api import FakeTelegramAPI, user
from tests.run_support import discord_env, telegram_env

ALICE = user(1001, "Alice")
#: A long answer, a word every 0.1 s: still streaming when the test kills the bot.
WORDS = [f"word{i:03d} " for i in range(300)]
NOTICE_END = "\n\n" + INTERRUPTED_NOTE


async def start_telegram(tg: FakeTelegramAPI, env: dict[str, str]) -> ParleyRun:
    polls = len(tg.calls_of("getUpdates", ok=None))
    run = await ParleyRun.start(env)
    await tg.wait_calls("getUpdates", polls + 1, ok=None, timeout=CHILD_WAIT)
    return run


async def test_a_killed_reply_is_marked_at_the_next_start_exactly_once(tmp_path: Path) -> None:
    database = tmp_path / "parley.db"
    async with FakeTelegramAPI() as tg, FakeLLMServer() as llm:
        env = telegram_env(tg, llm, database)
        llm.enqueue(Script(pieces=WORDS, delay=0.1))
        first = await start_telegram(tg, env)
        chat = tg.private_chat(ALICE)
        await tg.message(chat, ALICE, "tell me a long story")
        message = await tg.wait_until(
            lambda: next((m for m in chat.bot_messages() if len(m.history) >= 2), None),
            CHILD_WAIT,
        )
        # The message's id is in the database while the reply is still streaming.
        # Once the reply's first save is in (before it nothing is stored and the repair would
        # send the note as a reply, tests/test_delivery_units.py), the stored text keeps up.
        row = await wait_for_row(
            database, lambda r: r.platform_ids == [str(message.message_id)] and bool(r.text)
        )
        assert row.status == "streaming" and row.delivery_pending
        assert llm.active_streams == 1

        await first.kill()
        cut = reply_rows(database)[-1]
        shown_at_kill = message.text
        assert shown_at_kill is not None and not shown_at_kill.endswith(INTERRUPTED_NOTE)
        assert cut.status == "streaming" and cut.text  # saved before the edits since

        second = await start_telegram(tg, env)
        await second.wait_log(r"Marked 1 reply\(ies\) a previous run left cut off")
        repaired = reply_rows(database)[-1]
        # The message now reads the stored text, never less than was on screen, and the notice.
        assert message.text == repaired.text.strip() + NOTICE_END
        assert repaired.text.startswith(shown_at_kill)
        assert repaired.status == "interrupted" and not repaired.delivery_pending
        assert await second.stop() == 0

        # A third start marks nothing again; it answers a new message as usual.
        third = await start_telegram(tg, env)
        llm.enqueue(Script(pieces=["fresh ", "answer"]))
        await tg.message(chat, ALICE, "again")
        await tg.wait_until(
            lambda: any(m.text == "fresh answer" for m in chat.bot_messages()), CHILD_WAIT
        )
        assert await third.stop() == 0
        notices = [text for text, _, _ in message.history if INTERRUPTED_NOTE in (text or "")]
        assert len(notices) == 1
        assert not third.matching("Marked .* cut off")
        assert not [line for run in (first, second, third) for line in run.matching("Traceback")]


async def kill_a_discord_reply(
    discord: FakeDiscord, llm: FakeLLMServer, env: dict[str, str], database: Path
) -> tuple[Message, str]:
    """A run killed while its reply streams: the message, and the text it showed then."""
    llm.enqueue(Script(pieces=WORDS, delay=0.1))
    first = await ParleyRun.start(env)
    await discord.wait_connected(CHILD_WAIT)
    await discord.push_message(f"<@{BOT_ID}> tell me a long story", author=ALICE_ID)
    message = await discord.wait_for(
        lambda: next((m for m in discord.bot_messages(GENERAL_ID) if m.edits), None),
        CHILD_WAIT,
    )
    await wait_for_row(database, lambda r: r.platform_ids == [str(message.id)] and bool(r.text))
    await first.kill()
    shown_at_kill = message.content
    assert not shown_at_kill.endswith(INTERRUPTED_NOTE)
    await discord.wait_for(lambda: not discord.connected, CHILD_WAIT)
    return message, shown_at_kill


async def test_a_killed_discord_reply_is_marked_at_the_next_start(tmp_path: Path) -> None:
    database = tmp_path / "parley.db"
    async with FakeDiscord() as discord, FakeLLMServer() as llm:
        env = discord_env(discord, llm, database)
        message, shown_at_kill = await kill_a_discord_reply(discord, llm, env, database)

        second = await ParleyRun.start(env)
        await second.wait_log(r"Marked 1 reply\(ies\) a previous run left cut off")
        repaired = reply_rows(database)[-1]
        assert message.content == repaired.text + NOTICE_END
        assert repaired.text.startswith(shown_at_kill)
        assert repaired.status == "interrupted" and not repaired.delivery_pending
        assert await second.stop() == 0
        assert not second.matching("Traceback")


async def test_a_retried_discord_login_still_marks_the_killed_reply(tmp_path: Path) -> None:
    """The first login's command sync fails (a 503): the client is closed and the login tried
    again. The repair belongs to the run, not to that first client, so it is not lost."""
    database = tmp_path / "parley.db"
    async with FakeDiscord() as discord, FakeLLMServer() as llm:
        env = discord_env(discord, llm, database)
        message, _ = await kill_a_discord_reply(discord, llm, env, database)
        discord.fail("PUT", r"/applications/\d+/commands", status=503)
        # The repair's edit waits a second: time for a repair started by the first client to
        # be stopped with it, as it was before the repair waited for READY.
        discord.rate_limit("PATCH", r"/channels/\d+/messages/\d+", retry_after=1)

        second = await ParleyRun.start(env)
        await second.wait_log(r"Marked 1 reply\(ies\) a previous run left cut off")
        assert second.matching(r"Discord: cannot reach .*server error 503.*; retrying in")
        syncs = discord.calls_to("PUT", r"/applications/\d+/commands")
        assert [call.status for call in syncs[-2:]] == [503, 200]
        repaired = reply_rows(database)[-1]
        assert message.content == repaired.text + NOTICE_END
        assert repaired.status == "interrupted" and not repaired.delivery_pending
        assert await second.stop() == 0
        assert not second.matching("Traceback")
