"""DISCORD_AUTO_THREAD: a mention in a channel opens a thread for the answer, and the thread is
the conversation. The real bot against the fake Discord, which starts threads with Discord's
rules (the thread's id is the question's, names of 1 to 100 characters, Create Public Threads
needed) and announces them over the gateway."""

from __future__ import annotations

import logging
from pathlib import Path

import discord
import pytest

from bots.discord.threads import THREAD_NAME_MAX, thread_name
from core.conversation import ChatRef
from tests.fakes.discord_api import (
    ALICE_ID,
    BOB_ID,
    BOT_ID,
    GENERAL_ID,
    THREAD_ID,
    Attachment,
    FakeDiscord,
    Message,
)
from tests.test_discord_bot import MENTION, WAIT, Harness, _bot

THREADS = r"/channels/\d+/messages/\d+/threads"


@pytest.fixture
async def fake() -> FakeDiscord:
    async with FakeDiscord() as server:
        yield server


async def _answered(h: Harness, channel: int, count: int = 1) -> list[Message]:
    """The bot's messages in `channel` once `count` answers there are whole (the fake LLM
    echoes), oldest first."""

    def whole() -> list[Message] | None:
        sent = h.fake.bot_messages(channel)
        return sent if sum(m.content.startswith("echo: ") for m in sent) >= count else None

    return await h.fake.wait_for(whole, WAIT)


async def test_a_mention_opens_a_thread_the_answer_goes_in_and_the_thread_is_the_conversation(
    tmp_path: Path, fake: FakeDiscord
) -> None:
    async with _bot(tmp_path, fake, discord_auto_thread=True) as h:
        other = await fake.push_message(f"{MENTION} another question", author=ALICE_ID)
        await _answered(h, other.id)
        question = await fake.push_message(
            f"{MENTION}  What is\n the capital   of France?", author=BOB_ID
        )
        [answer] = await _answered(h, question.id)

        thread = fake.channels[question.id]  # a thread started from the question has its id
        assert thread["type"] == 11 and thread["parent_id"] == str(GENERAL_ID)
        assert thread["owner_id"] == str(BOT_ID)
        assert thread["name"] == "What is the capital of France?"
        assert answer.content == "echo: [Bob] What is\n the capital   of France?"
        assert answer.reference_id is None  # a message cannot reply across channels
        assert not [m for m in fake.bot_messages(GENERAL_ID) if "France" in m.content]

        # In the thread the bot answers without a mention, and the thread's turns are the context.
        await fake.push_message("And of Italy?", author=BOB_ID, channel=question.id)
        await _answered(h, question.id, 2)
        requests = await h.llm.wait_for_requests(3, timeout=WAIT)
        sent = [m["content"] for m in requests[-1].json["messages"] if m["role"] != "system"]
        assert sent[-1].endswith("And of Italy?")
        assert any("France" in text for text in sent)
        assert not any("another question" in text for text in sent)  # another thread's
        kept = await h.service.history(ChatRef("discord", str(GENERAL_ID), str(question.id)))
        assert [m.text for m in kept][-1] == "echo: [Bob] And of Italy?"


async def test_the_thread_goes_on_with_the_channels_model_and_system_prompt(
    tmp_path: Path, fake: FakeDiscord
) -> None:
    async with _bot(tmp_path, fake, discord_auto_thread=True) as h:
        channel = ChatRef("discord", str(GENERAL_ID))
        await h.service.set_model(channel, "channel-model")
        await h.service.set_system_prompt(channel, "Answer like a pirate.")
        question = await fake.push_message(f"{MENTION} hello")
        await _answered(h, question.id)
        [request] = await h.llm.wait_for_requests(1, timeout=WAIT)
        assert request.json["model"] == "channel-model"
        assert request.json["messages"][0] == {"role": "system", "content": "Answer like a pirate."}
        thread = ChatRef("discord", str(GENERAL_ID), str(question.id))
        assert (await h.service.chat_config(thread)).model == "channel-model"


async def test_where_the_api_refuses_a_thread_the_answer_goes_in_the_channel_and_the_log_says_so_once(
    tmp_path: Path, fake: FakeDiscord, caplog: pytest.LogCaptureFixture
) -> None:
    async with _bot(tmp_path, fake, discord_auto_thread=True) as h:
        fake.deny_threads(GENERAL_ID)  # the bot's cache does not know: Discord answers 403
        with caplog.at_level(logging.WARNING, logger="bots.discord.threads"):
            first = await fake.push_message(f"{MENTION} one")
            await _answered(h, GENERAL_ID)
            second = await fake.push_message(f"{MENTION} two")
            answers = await _answered(h, GENERAL_ID, 2)
        assert [call.status for call in fake.calls_to("POST", THREADS)] == [403, 403]
        assert [m.reference_id for m in answers] == [first.id, second.id]  # replies, as always
        assert first.id not in fake.channels and second.id not in fake.channels
        refusals = [r for r in caplog.records if "cannot open threads" in r.getMessage()]
        assert len(refusals) == 1 and "Create Public Threads" in refusals[0].getMessage()


async def test_without_the_permission_no_thread_is_asked_for(
    tmp_path: Path, fake: FakeDiscord
) -> None:
    fake.deny_threads(GENERAL_ID)  # before the bot connects: its cache knows
    async with _bot(tmp_path, fake, discord_auto_thread=True) as h:
        question = await fake.push_message(f"{MENTION} hello")
        [answer] = await _answered(h, GENERAL_ID)
        assert answer.reference_id == question.id
        assert fake.calls_to("POST", THREADS) == []


async def test_replies_dms_threads_and_bare_mentions_are_answered_where_they_are(
    tmp_path: Path, fake: FakeDiscord
) -> None:
    async with _bot(tmp_path, fake, discord_auto_thread=True) as h:
        # A thread someone else opened: answered in it, no thread in a thread.
        await fake.push_message(f"{MENTION} in a thread", author=ALICE_ID, channel=THREAD_ID)
        await _answered(h, THREAD_ID)
        # Without a mention there it is not for the bot: the bot only owns its own threads.
        await fake.push_message("just talking", author=ALICE_ID, channel=THREAD_ID)
        await fake.push_dm("in a DM", author=BOB_ID)
        await _answered(h, fake.dm_channel_id(BOB_ID))
        assert len(h.llm.requests) == 2  # the thread's question and the DM: nothing else
        assert [m.content for m in fake.bot_messages(THREAD_ID)] == ["echo: [Alice] in a thread"]
        # A bare mention gets its one line in the channel, not a thread named after nothing.
        await fake.push_message(MENTION)
        await fake.wait_for(lambda: fake.bot_messages(GENERAL_ID), WAIT)
        # A reply to one of the bot's messages in the channel continues that chain in place.
        earlier = await fake.push_message("an answer from before", author=BOT_ID, offline=True)
        reply = await fake.push_message("go on", reply_to=earlier.id)
        answers = await _answered(h, GENERAL_ID)
        assert answers[-1].reference_id == reply.id
        assert fake.calls_to("POST", THREADS) == []


async def test_a_file_with_a_mention_is_read_and_answered_in_the_new_thread(
    tmp_path: Path, fake: FakeDiscord
) -> None:
    async with _bot(tmp_path, fake, discord_auto_thread=True) as h:
        question = await fake.push_message(
            MENTION, attachments=[Attachment("notes.txt", b"the meeting is at noon")]
        )
        await fake.wait_for(lambda: question.id in fake.channels, WAIT)
        await _answered(h, question.id)
        assert fake.channels[question.id]["name"] == "Bob's question"
        request = (await h.llm.wait_for_requests(1, timeout=WAIT))[0]
        assert "the meeting is at noon" in str(request.json["messages"][-1]["content"])
        assert not fake.bot_messages(GENERAL_ID)


def test_a_thread_is_named_after_the_question_on_one_line_within_discords_limit() -> None:
    bob = discord.Object(BOB_ID)
    bob.display_name = "Bob"  # type: ignore[attr-defined]
    assert thread_name("  two\nlines  ", bob) == "two lines"  # type: ignore[arg-type]
    long = thread_name("word " * 100, bob)  # type: ignore[arg-type]
    assert len(long) == THREAD_NAME_MAX and long.endswith("…")
    assert thread_name(" \n ", bob) == "Bob's question"  # type: ignore[arg-type]
