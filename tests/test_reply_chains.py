"""Reply chains (issue 13, points 3 and 4): a reply to an older answer of the bot continues
from that point, its context the chain ending there, from the store or (Discord) the API."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from core.conversation import REPLY_CHAIN_MAX_TURNS, ChatRef
from storage import MessageStatus, ReplyOutcome, Role
from storage.factory import open_store
from storage.sqlite.store import SQLiteStore
from tests.fakes.discord_api import ALICE_ID, BOB_ID, BOT_ID, GENERAL_ID, OTHER_BOT_ID, FakeDiscord
from tests.test_discord_bot import MENTION
from tests.test_discord_bot import _bot as discord_bot
from tests.test_telegram_bot import ALICE, BOB, OTHER_BOT, Harness, running_bot

CHAT = ChatRef("telegram", "42")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    opened = await open_store(f"sqlite:///{tmp_path}/chains.db")
    assert isinstance(opened, SQLiteStore)
    yield opened
    await opened.close()


async def turn(store: SQLiteStore, text: str, *, parent: int | None = None) -> tuple[int, int]:
    """A question and its complete answer ("re: text", carried by platform message "p<id>")."""
    question = await store.add_user_message(
        CHAT, author_id="1", author_name="A", text=text, parent=parent
    )
    answer = await store.start_reply(question, "m")
    await store.finish_reply(answer, ReplyOutcome(MessageStatus.COMPLETE, f"re: {text}"))
    await store.set_platform_message_ids(answer, [f"p{answer}"])
    return question, answer


def delete_answers(path: str, like: str) -> None:
    """Delete the stored answers whose text is `like`, as a history clean-up would."""
    with contextlib.closing(sqlite3.connect(path, timeout=10)) as db, db:
        db.execute("PRAGMA foreign_keys = ON")
        db.execute("DELETE FROM messages WHERE role = 'assistant' AND text LIKE ?", (like,))


def texts(messages: list) -> list[str]:
    return [m.text for m in messages]


async def test_a_branch_is_its_chain_then_the_history_before_its_root(store: SQLiteStore) -> None:
    _, a1 = await turn(store, "q1")
    _, a2 = await turn(store, "q2")
    await turn(store, "q3")
    branch, b_answer = await turn(store, "b1", parent=a2)  # replies to the answer to q2
    deeper, _ = await turn(store, "b2", parent=b_answer)
    assert texts(await store.branch_messages(deeper, 50, 100)) == [
        "q1", "re: q1", "q2", "re: q2", "b1", "re: b1", "b2",
    ]  # fmt: skip
    # The newest history is the conversation's, branches and all, as before.
    assert texts(await store.context_messages(deeper, 3)) == ["b1", "re: b1", "b2"]
    found = await store.find_message(CHAT, f"p{a1}")
    assert found is not None and found.id == a1 and found.role is Role.ASSISTANT
    assert await store.find_message(ChatRef("telegram", "43"), f"p{a1}") is None
    assert await store.find_message(CHAT, "p999999") is None
    assert texts(await store.branch_messages(branch, 3, 100)) == ["q2", "re: q2", "b1"]


async def test_a_500_deep_chain_is_walked_only_to_the_cap(store: SQLiteStore) -> None:
    parent = None
    for depth in range(500):
        _, parent = await turn(store, f"d{depth}", parent=parent)
    newest = await store.add_user_message(
        CHAT, author_id="1", author_name="A", text="last", parent=parent
    )
    assert (
        texts(await store.branch_messages(newest, 5, 100))
        == ["re: d497", "d498", "re: d498", "d499", "re: d499", "last"][-5:]
    )
    capped = await store.branch_messages(newest, 10_000, REPLY_CHAIN_MAX_TURNS)
    # The cap's turns and the message, and nothing from before (the walk was cut, not ended).
    assert len(capped) == 2 * REPLY_CHAIN_MAX_TURNS + 1
    assert capped[0].text == f"d{500 - REPLY_CHAIN_MAX_TURNS}"


async def test_a_deleted_answer_ends_the_chain_there(store: SQLiteStore) -> None:
    await turn(store, "q1")
    _, a2 = await turn(store, "q2")
    await turn(store, "q3")
    question = await store.add_user_message(
        CHAT, author_id="1", author_name="A", text="b", parent=a2
    )
    delete_answers(store.location, "re: q2")
    assert await store.find_message(CHAT, f"p{a2}") is None
    # Its parent gone, the branch follows the history before it, as any message does.
    assert texts(await store.branch_messages(question, 50, 100)) == [
        "q1", "re: q1", "q2", "q3", "re: q3", "b",
    ]  # fmt: skip


# ---------------------------------------------------------------------- Telegram, end to end


def sent(h: Harness) -> list[dict[str, str]]:
    """The messages of the model's newest request, system prompt left out."""
    messages = h.llm.requests[-1].json["messages"]
    return [m for m in messages if m["role"] != "system"]


async def test_telegram_reply_to_an_older_answer_continues_from_it(tmp_path: Path) -> None:
    async with running_bot(tmp_path) as h:
        chat = h.tg.private_chat(ALICE)
        answers = []
        for text in ("one", "two", "three"):
            request = await h.ask(chat, ALICE, text)
            answers.append(await h.reply_text(chat, request, f"echo: {text}"))
        branch = await h.ask(chat, ALICE, "why one?", reply_to=answers[0].message_id)
        branch_answer = await h.reply_text(chat, branch, "echo: why one?")
        assert sent(h) == [
            {"role": "user", "content": "one"},
            {"role": "assistant", "content": "echo: one"},
            {"role": "user", "content": "why one?"},
        ]
        # Replying to the branch's answer goes on along the branch.
        deeper = await h.ask(chat, ALICE, "and?", reply_to=branch_answer.message_id)
        await h.reply_text(chat, deeper, "echo: and?")
        assert [m["content"] for m in sent(h)] == [
            "one", "echo: one", "why one?", "echo: why one?", "and?",
        ]  # fmt: skip
        # A message replying to nothing follows the newest history, as before.
        plain = await h.ask(chat, ALICE, "plain")
        await h.reply_text(chat, plain, "echo: plain")
        assert [m["content"] for m in sent(h)][-3:] == ["and?", "echo: and?", "plain"]


async def test_telegram_reply_to_a_deleted_or_foreign_message_follows_the_newest(
    tmp_path: Path,
) -> None:
    async with running_bot(tmp_path) as h:
        group = h.tg.group()
        first = await h.ask(group, ALICE, f"{h.mention} first")
        first_answer = await h.reply_text(group, first, "echo: [Alice] first")
        second = await h.ask(group, ALICE, f"{h.mention} second")
        await h.reply_text(group, second, "echo: [Alice] second")
        # Another bot's message, replied to with a mention: no chain of ours.
        theirs = await h.ask(group, OTHER_BOT, "a bot speaks")
        foreign = await h.ask(group, BOB, f"{h.mention} foreign", reply_to=theirs["message_id"])
        await h.reply_text(group, foreign, "echo: [Bob] foreign")
        assert sent(h)[0]["content"] == "[Alice] first"
        # The store lost the first answer (a history deleted): the newest history again.
        path = h.settings.database_url.removeprefix("sqlite:///")
        # In a thread: the bot's own writes go on meanwhile, on this event loop.
        await asyncio.to_thread(delete_answers, path, "%first")
        gone = await h.ask(group, BOB, "about first", reply_to=first_answer.message_id)
        await h.reply_text(group, gone, "echo: [Bob] about first")
        contents = [m["content"] for m in sent(h)]
        assert contents[0] == "[Alice] first" and "[Bob] foreign" in contents
        assert contents[-1] == "[Bob] about first"


# ---------------------------------------------------------------------- Discord, end to end


async def test_discord_reply_to_an_older_answer_continues_from_it(tmp_path: Path) -> None:
    async with FakeDiscord() as fake, discord_bot(tmp_path, fake) as d:
        answers = []
        for number, text in enumerate(("one", "two", "three"), start=1):
            await fake.push_message(f"{MENTION} {text}", author=ALICE_ID)
            answers.append((await d.answer(GENERAL_ID, f"echo: [Alice] {text}"))[-1])
            await d.model_request(number)
        # A reply to the bot, no mention: the chain ending at the first answer, then this.
        await fake.push_message("why one?", author=BOB_ID, reply_to=answers[0].id)
        await d.answer(GENERAL_ID, "echo: [Bob] why one?")
        assert [m["content"] for m in await d.model_request(4) if m["role"] != "system"] == [
            "[Alice] one", "echo: [Alice] one", "[Bob] why one?",
        ]  # fmt: skip
        # A mention without a reply starts from the channel's newest conversation, as before.
        await fake.push_message(f"{MENTION} plain", author=ALICE_ID)
        await d.answer(GENERAL_ID, "echo: [Alice] plain")
        plain = [m["content"] for m in await d.model_request(5) if m["role"] != "system"]
        assert plain[0] == "[Alice] one" and "[Alice] three" in plain
        assert not fake.calls_to("GET", r"/channels/\d+/messages/\d+")  # all from the store


async def test_discord_chain_unknown_to_the_store_is_read_through_the_api_capped(
    tmp_path: Path,
) -> None:
    async with FakeDiscord() as fake, discord_bot(tmp_path, fake, context_max_messages=12) as d:
        previous = None
        for depth in range(500):  # a chain written before this database: 500 messages deep
            author = BOT_ID if depth % 2 else ALICE_ID
            sent = await fake.push_message(
                f"m{depth}", author=author, reply_to=previous, offline=True
            )
            previous = sent.id
        await fake.push_message("and now?", author=ALICE_ID, reply_to=previous)
        await d.answer(GENERAL_ID, "echo: [Alice] and now?")
        sent_texts = [m["content"] for m in await d.model_request(1) if m["role"] != "system"]
        assert sent_texts[-1] == "[Alice] and now?"
        assert sent_texts[-2] == "m499" and len(sent_texts) <= 12
        assert sent_texts[:-1] == [
            f"[Alice] m{n}" if n % 2 == 0 else f"m{n}"
            for n in range(499 - len(sent_texts) + 2, 500)
        ]
        # The walk stopped at the cap: one message came with the reply, the rest were fetched.
        assert len(fake.calls_to("GET", r"/channels/\d+/messages/\d+")) <= 12


async def test_discord_reply_to_a_deleted_or_foreign_message_follows_the_newest(
    tmp_path: Path,
) -> None:
    async with FakeDiscord() as fake, discord_bot(tmp_path, fake) as d:
        # One asker: each question waits for the answer before it (another person's answer
        # still being delivered would be left out of the context, as in any group).
        await fake.push_message(f"{MENTION} first", author=ALICE_ID)
        first = (await d.answer(GENERAL_ID, "echo: [Alice] first"))[-1]
        await d.model_request(1)
        theirs = await fake.push_message("beep", author=OTHER_BOT_ID)
        await fake.push_message(f"{MENTION} foreign", author=ALICE_ID, reply_to=theirs.id)
        await d.answer(GENERAL_ID, "echo: [Alice] foreign")
        foreign = [m["content"] for m in await d.model_request(2) if m["role"] != "system"]
        assert foreign == ["[Alice] first", "echo: [Alice] first", "[Alice] foreign"]
        await fake.delete_message(first.id)
        await fake.push_message(f"{MENTION} gone", author=ALICE_ID, reply_to=first.id)
        await d.answer(GENERAL_ID, "echo: [Alice] gone")
        gone = [m["content"] for m in await d.model_request(3) if m["role"] != "system"]
        assert gone[0] == "[Alice] first" and gone[-1] == "[Alice] gone"


async def test_discord_chain_read_through_the_api_leaves_out_reasoning_and_footer(
    tmp_path: Path,
) -> None:
    """The bot's messages carry its reasoning block and the history-cut footer on screen; read
    back as a chain they are the answer alone: reasoning is never sent back as context."""
    async with FakeDiscord() as fake, discord_bot(tmp_path, fake) as d:
        question = await fake.push_message("why?", author=ALICE_ID, offline=True)
        shown = (
            "-# 💭 Thought for 3 s\n-# secret steps\n\nBecause."
            "\n\nℹ️ Older messages were left out to fit the model's context."
        )
        answer = await fake.push_message(shown, author=BOT_ID, reply_to=question.id, offline=True)
        await fake.push_message("sure?", author=ALICE_ID, reply_to=answer.id)
        await d.answer(GENERAL_ID, "echo: [Alice] sure?")
        sent_texts = [m["content"] for m in await d.model_request(1) if m["role"] != "system"]
        assert sent_texts == ["[Alice] why?", "Because.", "[Alice] sure?"]
