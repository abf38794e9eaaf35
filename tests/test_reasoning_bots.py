"""A thinking model's reasoning in the bots (SHOW_REASONING), end to end: the real Telegram and
Discord bots against their fakes, the fake LLM server sending reasoning on the OpenAI wire, the
real conversation service on SQLite. Also: the reasoning is stored apart and never sent back."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bots.reasoning_view import (
    FULL_CHARS,
    STREAMING_CHARS,
    thinking_block,
    thought_block,
)
from bots.splitting import utf16_length
from bots.telegram.render import render_reasoning, split_reasoning
from tests.fakes.discord_api import GENERAL_ID, FakeDiscord
from tests.fakes.llm_server import Script
from tests.test_discord_bot import MENTION, _bot
from tests.test_telegram_bot import ALICE, WAIT, Harness, replies, running_bot

THOUGHT = re.compile(r"💭 Thought for (\d+) s")


# -- the block, and Telegram's rendering of it -------------------------------------------------


def test_the_block_per_mode() -> None:
    assert thinking_block("a\n\n b  c", "collapsed") == "-# 💭 Thinking…\n-# a\n-# b c\n\n"
    assert thinking_block("a", "off") == thought_block("a", 3, "off") == ""
    assert thought_block("a\nb", 2.4, "collapsed") == "-# 💭 Thought for 2 s\n\n"
    assert thought_block("a\nb", 0.1, "full") == "-# 💭 Thought for 1 s\n-# a\n-# b\n\n"
    assert thought_block("  ", 5, "full") == ""  # whitespace is no reasoning


def test_long_reasoning_is_cut_for_display_only() -> None:
    long = "x" * (FULL_CHARS * 2)
    assert thinking_block(long, "full").endswith("…" + "x" * STREAMING_CHARS + "\n\n")
    assert thought_block(long, 1, "full").endswith("x" * FULL_CHARS + "…\n\n")


def test_telegram_renders_the_block_as_an_expandable_quote() -> None:
    text = "-# 💭 Thought for 2 s\n-# why\n\nIt is **so**."
    assert split_reasoning(text) == ("💭 Thought for 2 s\nwhy", "It is **so**.")
    assert split_reasoning("-# plain subtext") is None
    body, entities = render_reasoning(text, final=True) or ("", [])
    assert body == "💭 Thought for 2 s\nwhy\n\nIt is so."
    quote, bold = entities
    assert (quote.type, quote.offset, quote.length) == ("expandable_blockquote", 0, 22)
    units = body.encode("utf-16-le")  # Telegram's offsets count UTF-16 code units
    bolded = units[2 * bold.offset : 2 * (bold.offset + bold.length)].decode("utf-16-le")
    assert (bold.type, bolded) == ("bold", "so")
    streaming, (only,) = render_reasoning(text, final=False) or ("", [None])
    assert streaming.endswith("It is **so**.") and only.type == "expandable_blockquote"


# -- Telegram, collapsed (the default) ---------------------------------------------------------


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    async with running_bot(tmp_path) as harness:
        yield harness


async def test_telegram_shows_thinking_collapsed_then_one_line(h: Harness, tmp_path: Path) -> None:
    script = Script(reasoning=["Let me think", " about it."], pieces=["**Yes**", "."], hold_after=2)
    h.llm.enqueue(script)
    chat = h.tg.private_chat(ALICE)
    request = await h.ask(chat, ALICE, "is it?")

    def thinking() -> object:
        for message in replies(chat, request):
            if message.text.startswith("💭 Thinking…") and "about it." in message.text:
                return message
        return None

    streaming = await h.tg.wait_until(thinking, WAIT)
    assert streaming.entities[0]["type"] == "expandable_blockquote"
    assert streaming.entities[0]["offset"] == 0
    script.release.set()

    def finished() -> object:
        for message in replies(chat, request):
            if THOUGHT.fullmatch(message.text.split("\n")[0]) and message.text.endswith("Yes."):
                return message
        return None

    final = await h.tg.wait_until(finished, WAIT)
    head = final.text.split("\n")[0]
    assert final.text == f"{head}\n\nYes."
    types = [(e["type"], e["offset"], e["length"]) for e in final.entities]
    assert types[0] == ("expandable_blockquote", 0, utf16_length(head))
    assert ("bold", utf16_length(head) + 2, 3) in types

    # Stored apart: the reply's text is the answer alone, its reasoning in its own table.
    with sqlite3.connect(tmp_path / "parley.db") as db:
        rows = db.execute(
            "SELECT m.text, r.text FROM messages m LEFT JOIN reply_reasoning r ON r.message = m.id"
            " WHERE m.role = 'assistant'"
        ).fetchall()
    assert rows == [("**Yes**.", "Let me think about it.")]

    # And never sent back as context.
    h.llm.enqueue(Script(pieces=["ok"]))
    second = await h.ask(chat, ALICE, "sure?")
    await h.reply_text(chat, second, "ok")
    sent = h.llm.requests[-1].json["messages"]
    assert {"role": "assistant", "content": "**Yes**."} in sent
    assert not any("think" in str(message["content"]) for message in sent)


# -- Discord -----------------------------------------------------------------------------------


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as server:
        yield server


async def test_discord_full_mode_keeps_the_whole_reasoning_as_subtext(
    tmp_path: Path, fake: FakeDiscord
) -> None:
    async with _bot(tmp_path, fake, show_reasoning="full") as bot:
        bot.llm.enqueue(Script(reasoning=["Step one.\n", "Step two."], pieces=["Done", "."]))
        await fake.push_message(f"{MENTION} go")

        def done() -> str | None:
            sent = fake.bot_messages(GENERAL_ID)
            return sent[-1].content if sent and sent[-1].content.endswith("Done.") else None

        content = await fake.wait_for(done, WAIT)
        head, rest = content.split("\n", 1)
        assert THOUGHT.fullmatch(head.removeprefix("-# "))
        assert rest == "-# Step one.\n-# Step two.\n\nDone."


async def test_discord_reasoning_without_an_answer_shows_it_whole(
    tmp_path: Path, fake: FakeDiscord
) -> None:
    """A `<think>` left open at the end: its text is reasoning, shown whole even when
    collapsed (it is all the model said), then the empty-reply line."""
    async with _bot(tmp_path, fake) as bot:
        bot.llm.enqueue(Script(pieces=["<think>only ", "thoughts"]))
        await fake.push_message(f"{MENTION} go")

        def done() -> str | None:
            sent = fake.bot_messages(GENERAL_ID)
            return sent[-1].content if sent and "(empty reply)" in sent[-1].content else None

        content = await fake.wait_for(done, WAIT)
        head, rest = content.split("\n", 1)
        assert THOUGHT.fullmatch(head.removeprefix("-# "))
        assert rest == "-# only thoughts\n\n(empty reply)"


async def test_discord_off_shows_no_reasoning(tmp_path: Path, fake: FakeDiscord) -> None:
    async with _bot(tmp_path, fake, show_reasoning="off") as bot:
        bot.llm.enqueue(Script(reasoning=["secret thoughts"], pieces=["Answer."], delay=0.2))
        await fake.push_message(f"{MENTION} go")
        (answer,) = await bot.answer(GENERAL_ID, "Answer.")
        bodies = [call.body for call in fake.calls if isinstance(call.body, dict)]
        assert not any("secret" in str(body) for body in bodies)
        assert answer.content == "Answer."


async def test_discord_long_reasoning_is_cut_to_fit_the_message(
    tmp_path: Path, fake: FakeDiscord
) -> None:
    """Reasoning longer than a Discord message (2000), shown whole because no answer came: the
    block is cut to leave room for the text under it, rather than failing the delivery."""
    async with _bot(tmp_path, fake) as bot:
        bot.llm.enqueue(Script(reasoning=["word " * 600], pieces=[]))
        await fake.push_message(f"{MENTION} go")

        def done() -> str | None:
            sent = fake.bot_messages(GENERAL_ID)
            return sent[-1].content if sent and "(empty reply)" in sent[-1].content else None

        content = await fake.wait_for(done, WAIT)
        assert len(content) <= 2000
        assert content.startswith("-# 💭 Thought for ") and "\n-# word word" in content
        assert content.endswith("…\n\n(empty reply)")
