"""The history-cut footer (`HISTORY_CUT_NOTE`) through the real bots: the real aiogram bot
against the fake Bot API and the real discord.py client against the fake Discord, the real
service on SQLite, the fake LLM answering. A conversation outgrows the model's window (the
default one, 7,168 tokens of prompt: about seven of these long turns): the first reply whose
history was cut ends with the footer, no later reply of that conversation shows it, and after
/reset the new conversation's first cut shows it again.

Whether a turn's history was cut is read from what the model was sent (the conversation's first
turn is missing from it), not from the service's own flag."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from bots.relay import HISTORY_CUT_NOTE
from tests.fakes.discord_api import GENERAL_ID, FakeDiscord
from tests.fakes.llm_server import FakeLLMServer, Script
from tests.test_discord_bot import MENTION, _bot
from tests.test_telegram_bot import ALICE, WAIT, running_bot

#: 3,900 characters, about 975 tokens: under both platforms' limits for one message (Discord's
#: with Nitro), and seven or eight of them outgrow the default window.
FILLER = "word " * 780
#: Turns per conversation: enough for the cut and a reply after it.
TURNS = 10
ANSWER = "ok"
FOOTED = f"{ANSWER}\n\n{HISTORY_CUT_NOTE}"
#: Bounds on top of the window kept out of the way, so the window is what cuts.
ROOMY = {"context_max_chars": 200_000, "context_max_messages": 40}


def cut_from(sent: list[dict[str, Any]], first_turn: int) -> bool:
    """The request left out the conversation's first turn."""
    return not any(f"turn {first_turn}:" in str(message["content"]) for message in sent)


async def converse(
    llm: FakeLLMServer,
    first_turn: int,
    say: Callable[[str], Awaitable[Any]],
    shown: Callable[[Any, str], Awaitable[list[str]]],
) -> None:
    """`TURNS` turns from `first_turn` in one conversation: `say` sends a text and returns a
    handle on it; `shown(handle, expected)` waits until the answer reads `expected` and
    returns every text it ever showed. Checks the footer came with the first cut, only."""
    cuts: list[bool] = []
    footers: list[bool] = []
    for turn in range(first_turn, first_turn + TURNS):
        asked = len(llm.requests)
        handle = await say(f"turn {turn}: {FILLER}")
        await llm.wait_for_requests(asked + 1, WAIT)
        cut = cut_from(llm.requests[asked].json["messages"], first_turn)
        footed = cut and not any(cuts)
        cuts.append(cut)
        footers.append(footed)
        texts = await shown(handle, FOOTED if footed else ANSWER)
        assert any(HISTORY_CUT_NOTE in text for text in texts) == footed, (turn, texts)
    first_cut = cuts.index(True)  # the history did outgrow the window
    assert first_cut > 0 and all(cuts[first_cut:])  # and stayed cut on the later turns
    assert footers.count(True) == 1 and footers[first_cut]
    assert first_cut + 1 < TURNS  # a reply after the cut was seen without the footer


# -- Telegram ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["edit", "draft"])
async def test_telegram_says_the_history_was_cut_once_per_conversation(
    tmp_path: Path, mode: str
) -> None:
    async with running_bot(tmp_path, stream_mode=mode, **ROOMY) as h:
        h.llm.default_script = Script(pieces=[ANSWER])
        chat = h.tg.private_chat(ALICE)

        async def say(text: str) -> dict:
            return await h.ask(chat, ALICE, text)

        async def shown(request: dict, expected: str) -> list[str]:
            message = await h.reply_text(chat, request, expected)
            return [text for text, *_ in message.history]

        await converse(h.llm, 0, say, shown)
        reset = await h.ask(chat, ALICE, "/reset")
        await h.any_reply(chat, reset)
        await converse(h.llm, 100, say, shown)


# -- Discord ----------------------------------------------------------------------------------


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as server:
        yield server


async def test_discord_says_the_history_was_cut_once_per_conversation(
    tmp_path: Path, fake: FakeDiscord
) -> None:
    async with _bot(tmp_path, fake, **ROOMY) as bot:
        bot.llm.default_script = Script(pieces=[ANSWER])

        async def say(text: str) -> int:
            before = len(fake.bot_messages(GENERAL_ID))
            await fake.push_message(f"{MENTION} {text}")
            return before

        async def shown(before: int, expected: str) -> list[str]:
            def answered() -> Any:
                sent = fake.bot_messages(GENERAL_ID)[before:]
                return sent[0] if sent and sent[0].content == expected else None

            message = await fake.wait_for(answered, WAIT)
            return [message.content, *message.edits]

        await converse(bot.llm, 0, say, shown)
        reset = await fake.push_interaction("reset")
        assert "new conversation" in await fake.wait_answered(reset)
        await converse(bot.llm, 100, say, shown)
