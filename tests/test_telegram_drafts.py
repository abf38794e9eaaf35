"""Native streaming in private chats (`bots.telegram.drafts`), end to end: a real aiogram bot
against the fake Bot API's `sendMessageDraft`, the real service, and the fake LLM.

A private reply streams as drafts, then arrives as one message with the final text; a group
reply still edits; a server without the method, or refusing it, sends the chat back to edits
(logged once); STREAM_MODE=edit edits everywhere; the draft's stop button stops the reply.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from bots.reasoning_view import CUT_MARK, THINKING
from bots.splitting import utf16_length
from bots.telegram.render import MAX_LENGTH
from tests.fakes.llm_server import Script
from tests.fakes.telegram_api import ApiError, Draft, FakeChat, FloodLimits
from tests.test_telegram_bot import ALICE, BOB, WAIT, Harness, answer_parts, running_bot

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


# -- a thinking model's reasoning in drafts (SHOW_REASONING) -----------------------------------


THOUGHT_LINE = re.compile(r"💭 Thought for \d+ s")


async def _thinking_draft(h: Harness, chat: FakeChat, words: str) -> Draft:
    """The first draft showing the model still thinking, with `words` of its reasoning."""

    def found() -> Draft | None:
        return next(
            (d for d in chat.drafts if d.text.startswith(THINKING) and words in d.text), None
        )

    return await h.tg.wait_until(found, WAIT)


@pytest.mark.parametrize("show", ["collapsed", "full"])
async def test_a_draft_shows_the_thinking_as_a_quote_and_the_message_keeps_the_block(
    tmp_path: Path, show: str
) -> None:
    async with running_bot(tmp_path, stream_mode="draft", show_reasoning=show) as h:
        script = Script(
            reasoning=["Let me think", " about it."], pieces=["**Yes**", "."], hold_after=2
        )
        h.llm.enqueue(script)
        chat = h.tg.private_chat(ALICE)
        request = await h.ask(chat, ALICE, "is it?")
        draft = await _thinking_draft(h, chat, "about it.")
        # As the edit path shows it: an expandable quote, no subtext marks.
        assert draft.text == f"{THINKING}\nLet me think about it."
        [quote] = draft.entities
        assert (quote["type"], quote["offset"]) == ("expandable_blockquote", 0)
        assert quote["length"] == utf16_length(draft.text)
        assert answer_parts(chat, request) == []  # nothing sent while it thinks
        script.release.set()

        await h.tg.wait_until(lambda: answer_parts(chat, request), WAIT)
        [message] = answer_parts(chat, request)
        assert len(message.history) == 1  # sent once, with its final text
        head, answer = message.text.split("\n\n", 1)
        lines = head.split("\n")
        assert THOUGHT_LINE.fullmatch(lines[0]) and answer == "Yes."
        assert lines[1:] == ([] if show == "collapsed" else ["Let me think about it."])
        types = [(e["type"], e["offset"], e["length"]) for e in message.entities]
        assert types[0] == ("expandable_blockquote", 0, utf16_length(head))
        assert ("bold", utf16_length(head) + 2, 3) in types
        assert "-#" not in message.text and all("-#" not in d.text for d in chat.drafts)
        assert h.tg.calls_of("editMessageText", ok=None) == []


async def test_with_reasoning_off_no_draft_or_message_shows_any(tmp_path: Path) -> None:
    async with running_bot(tmp_path, stream_mode="draft", show_reasoning="off") as h:
        h.llm.enqueue(Script(reasoning=["secret ", "thoughts"], pieces=PIECES, delay=0.06))
        chat = h.tg.private_chat(ALICE)
        request = await h.ask(chat, ALICE, "hi")
        await h.tg.wait_until(lambda: answer_parts(chat, request), WAIT)
        [message] = answer_parts(chat, request)
        assert message.text == "".join(PIECES) and not message.entities
        assert chat.drafts and all(
            "secret" not in d.text and "💭" not in d.text for d in chat.drafts
        )
        assert not any("secret" in str(call.params) for call in h.tg.calls)


async def test_long_reasoning_stays_within_a_drafts_limit(tmp_path: Path) -> None:
    """Reasoning far longer than a message: every draft and message is accepted (none over
    4,096 units), the draft shows the newest of it, the message the block cut for display."""
    thoughts = [f"thought number {i} goes on. " for i in range(400)]  # about 10,800 characters
    answer = [f"answer{i} " for i in range(800)]  # about 7,000 characters: two messages
    async with running_bot(tmp_path, stream_mode="draft", show_reasoning="full") as h:
        script = Script(reasoning=thoughts, pieces=answer, hold_after=len(thoughts))
        h.llm.enqueue(script)
        chat = h.tg.private_chat(ALICE)
        request = await h.ask(chat, ALICE, "think hard")
        draft = await _thinking_draft(h, chat, "thought number 399 goes on.")
        assert draft.text.startswith(f"{THINKING}\n{CUT_MARK}")  # the newest, not the first
        assert "thought number 0 " not in draft.text
        script.release.set()
        await h.tg.wait_until(
            lambda: (p := answer_parts(chat, request)) and p[-1].text.endswith("answer799"), WAIT
        )
        parts = answer_parts(chat, request)
        assert len(parts) >= 2
        first = parts[0]
        assert THOUGHT_LINE.fullmatch(first.text.split("\n")[0])
        assert first.entities[0]["type"] == "expandable_blockquote"
        assert "thought number 0 goes on." in first.text
        assert h.tg.calls_of("sendMessageDraft", ok=False) == []
        assert h.tg.calls_of("sendMessage", ok=False) == []
        assert all(utf16_length(d.text) <= MAX_LENGTH for d in chat.drafts)
