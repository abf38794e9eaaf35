"""Native streaming in private chats (`bots.telegram.drafts`), end to end: a real aiogram bot
against the fake Bot API's `sendMessageDraft`, the real service, and the fake LLM.

A private reply streams as drafts, then arrives as one message with the final text; a group
reply still edits; a server without the method, or refusing it, sends the chat back to edits
(logged once); STREAM_MODE=edit edits everywhere; the draft's stop button stops the reply.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.fakes.llm_server import Script
from tests.fakes.telegram_api import ApiError, FloodLimits
from tests.test_telegram_bot import ALICE, BOB, WAIT, answer_parts, running_bot

PIECES = ["Hello", " there", ",", " this", " is", " a", " streamed", " reply", "."]


async def test_a_private_reply_streams_as_drafts_then_one_message(tmp_path: Path) -> None:
    async with running_bot(tmp_path, stream_mode="draft") as h:
        h.llm.enqueue(Script(pieces=PIECES, delay=0.06))
        chat = h.tg.private_chat(ALICE)
        request = await h.ask(chat, ALICE, "hi")
        whole = "".join(PIECES)
        await h.tg.wait_until(lambda: answer_parts(chat, request), WAIT)
        [message] = answer_parts(chat, request)
        assert message.text == whole
        assert len(message.history) == 1  # sent once, never edited
        assert h.tg.calls_of("editMessageText", ok=None) == []
        assert len(h.tg.calls_of("sendMessage")) == 1
        drafts = chat.drafts
        assert len(drafts) >= 2  # the text grew on screen before the message came
        assert all(whole.startswith(d.text) for d in drafts)
        assert len({d.draft_id for d in drafts}) == 1 and drafts[0].draft_id != 0
        assert all(d.can_stop for d in drafts)
        assert drafts[-1].at <= message.history[0][2]
        assert len(chat.writes) == 1  # one message counted against the chat


async def test_a_long_private_reply_is_split_into_messages_each_drafted_first(
    tmp_path: Path,
) -> None:
    async with running_bot(tmp_path, stream_mode="draft") as h:
        words = [f"word{i} " for i in range(1500)] + [
            "the end"
        ]  # ~12,000 characters: several messages
        h.llm.enqueue(Script(pieces=words, delay=0.0005))
        chat = h.tg.private_chat(ALICE)
        request = await h.ask(chat, ALICE, "long please")
        await h.tg.wait_until(
            lambda: (p := answer_parts(chat, request)) and (p[-1].text or "").endswith("the end"),
            WAIT,
        )
        parts = answer_parts(chat, request)
        assert "".join("".join(p.text or "" for p in parts).split()) == "".join(
            "".join(words).split()
        )
        assert len(parts) >= 3
        assert all(len(p.history) == 1 for p in parts)
        assert h.tg.calls_of("editMessageText", ok=None) == []
        assert len({d.draft_id for d in chat.drafts}) >= 2  # each message its own draft


async def test_a_group_reply_still_streams_by_edits(tmp_path: Path) -> None:
    async with running_bot(tmp_path, stream_mode="draft") as h:
        h.llm.enqueue(Script(pieces=PIECES, delay=0.06))
        group = h.tg.group()
        request = await h.ask(group, ALICE, f"{h.mention} hi")
        message = await h.reply_text(group, request, "".join(PIECES))
        assert len(message.history) >= 2  # sent early, then edited
        assert h.tg.calls_of("sendMessageDraft", ok=None) == []


@pytest.mark.parametrize(
    "refusal",
    [ApiError(404, "Not Found"), ApiError(400, "Bad Request: METHOD_NOT_ALLOWED")],
    ids=["older-server", "refused"],
)
async def test_refused_drafts_fall_back_to_edits_and_say_so_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, refusal: ApiError
) -> None:
    async with running_bot(tmp_path, stream_mode="draft") as h:
        h.tg.refuse_drafts(refusal)
        chat = h.tg.private_chat(ALICE)
        other = h.tg.private_chat(BOB)
        with caplog.at_level(logging.WARNING, logger="bots.telegram.drafts"):
            for person, place in ((ALICE, chat), (BOB, other), (ALICE, chat)):
                h.llm.enqueue(Script(pieces=PIECES, delay=0.06))
                request = await h.ask(place, person, "hi")
                message = await h.reply_text(place, request, "".join(PIECES))
                assert len(message.history) >= 2  # streamed by edits after all
        # One refused draft per chat (Alice's second reply edits at once), one log line.
        assert len(h.tg.calls_of("sendMessageDraft", ok=False)) == 2
        assert len([r for r in caplog.records if "refused a message draft" in r.message]) == 1


async def test_stream_mode_edit_never_drafts(tmp_path: Path) -> None:
    async with running_bot(tmp_path, stream_mode="edit") as h:
        h.llm.enqueue(Script(pieces=PIECES, delay=0.06))
        chat = h.tg.private_chat(ALICE)
        request = await h.ask(chat, ALICE, "hi")
        message = await h.reply_text(chat, request, "".join(PIECES))
        assert len(message.history) >= 2
        assert h.tg.calls_of("sendMessageDraft", ok=None) == []


async def test_the_stop_button_ends_the_reply_like_stop(tmp_path: Path) -> None:
    async with running_bot(tmp_path, stream_mode="draft") as h:
        words = [f"w{i} " for i in range(400)]
        h.llm.enqueue(Script(pieces=words, delay=0.05))  # 20 s if left to run
        chat = h.tg.private_chat(ALICE)
        request = await h.ask(chat, ALICE, "tell me everything")
        await h.tg.wait_until(lambda: len(chat.drafts) >= 2, WAIT)
        draft = chat.drafts[-1]
        await h.tg.stop_generation(chat, draft.draft_id)
        await h.tg.wait_until(lambda: answer_parts(chat, request), WAIT)
        [message] = answer_parts(chat, request)
        assert message.text is not None and "".join(words).startswith(message.text)
        assert len(message.text) < len("".join(words).strip())
        assert h.tg.calls_of("editMessageText", ok=None) == []


async def test_a_late_stop_press_stops_nothing(tmp_path: Path) -> None:
    async with running_bot(tmp_path, stream_mode="draft") as h:
        h.llm.enqueue(Script(pieces=PIECES, delay=0.02))
        chat = h.tg.private_chat(ALICE)
        first = await h.ask(chat, ALICE, "hi")
        await h.reply_text(chat, first, "".join(PIECES))
        old_draft = chat.drafts[-1].draft_id
        words = [f"w{i} " for i in range(40)]
        h.llm.enqueue(Script(pieces=words, delay=0.02))
        second = await h.ask(chat, ALICE, "again")
        await h.tg.wait_until(lambda: any(d.draft_id != old_draft for d in chat.drafts), WAIT)
        await h.tg.stop_generation(chat, old_draft)
        await h.reply_text(chat, second, "".join(words))  # the whole reply: not stopped


async def test_drafts_stay_within_the_fakes_draft_limit(tmp_path: Path) -> None:
    async with running_bot(tmp_path, stream_mode="draft", flood_limits=FloodLimits()) as h:
        words = [f"w{i} " for i in range(150)]
        h.llm.enqueue(Script(pieces=words, delay=0.01))
        chat = h.tg.private_chat(ALICE)
        request = await h.ask(chat, ALICE, "hi")
        await h.reply_text(chat, request, "".join(words))
        assert chat.draft_refusals == 0 and chat.refusals == []
        assert len(chat.drafts) >= 5
