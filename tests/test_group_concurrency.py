"""Several people asking one group (or channel) at once, end to end: the real aiogram and
discord.py clients against fakes that refuse writes over the platform's limits.

What must hold: everyone's answer begins before anyone's is finished (answered at once, not
one after another); every reply completes; the chat never gets more writes than its budget, so
the fake never answers 429; each context is the history as it stood when its question came; one
person's messages are answered in order, the later ones showing that they are queued."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

from bots.discord.surface import CHANNEL_LIMITS
from bots.relay import QUEUED_NOTE
from bots.telegram import TelegramLimits
from bots.write_budget import WriteLimits
from core.conversation import ResetReport, describe_reset
from tests.fakes.discord_api import ALICE_ID, BOB_ID, GENERAL_ID, FakeDiscord
from tests.fakes.llm_server import ECHO_PREFIX
from tests.fakes.telegram_api import FakeChat, FloodLimits, StoredMessage, user
from tests.test_discord_bot import MENTION, _bot
from tests.test_telegram_bot import ALICE, WAIT, Harness, replies, running_bot

#: A group's budget scaled down tenfold in time, the same on both sides: the bot's write limits
#: and the fake's flood limits.
GROUP_WINDOW = 6.0
LIMITS = TelegramLimits(private=WriteLimits(1, 0.1), group=WriteLimits(20, GROUP_WINDOW, 5))
FLOOD = FloodLimits(group_writes=20, group_window=GROUP_WINDOW, private_window=0.1)
PEOPLE = [user(2000 + i, name) for i, name in enumerate(["Ann", "Ben", "Cat", "Dan", "Eve"])]
#: Seconds between the echoed words: a reply of 40 words streams for about a second.
WORD_DELAY = 0.025
#: A question long enough that its echo streams for a while.
FILLER = " ".join(f"w{i}" for i in range(40))
#: Arrival times at the fake lag the bot's clock a little.
SLACK = 0.05


def echo(name: str, question: str) -> str:
    return f"{ECHO_PREFIX}[{name}] {question}"


def first_at(message: StoredMessage) -> float:
    return message.history[0][2]


def final_at(message: StoredMessage) -> float:
    """When the message first read as it ends."""
    return next(at for text, _, at in message.history if text == message.text)


async def answers(h: Harness, chat: FakeChat, requests: list[dict], texts: list[str]) -> list:
    return list(
        await asyncio.gather(
            *(
                h.reply_text(chat, request, text)
                for request, text in zip(requests, texts, strict=True)
            )
        )
    )


async def test_five_people_in_a_group_are_answered_at_once_within_its_budget(
    tmp_path: Path,
) -> None:
    async with running_bot(tmp_path, limits=LIMITS, flood_limits=FLOOD) as h:
        h.llm.echo_delay = WORD_DELAY
        group = h.tg.supergroup()
        questions = [f"question {i} {FILLER}" for i in range(len(PEOPLE))]
        requests = [
            await h.ask(group, person, f"{h.mention} {question}")
            for person, question in zip(PEOPLE, questions, strict=True)
        ]
        expected = [echo(p["first_name"], q) for p, q in zip(PEOPLE, questions, strict=True)]
        messages = await answers(h, group, requests, expected)

        # Answered at once: every answer began before any was finished.
        assert max(map(first_at, messages)) < min(map(final_at, messages))
        assert h.tg.flood_refusals(group.id) == 0
        assert h.tg.max_writes_in_window(group.id, GROUP_WINDOW) <= FLOOD.group_writes
        # Each context as it stood at arrival: the questions before it, no one's answer (every
        # other reply was still being written), its own question last.
        contexts = [request.json["messages"] for request in h.llm.requests]
        assert len(contexts) == len(PEOPLE)
        for context in contexts:
            assert [m["role"] for m in context[1:]] == ["user"] * (len(context) - 1)
            asked = [m["content"] for m in context[1:]]
            arrived = [f"[{p['first_name']}] {q}" for p, q in zip(PEOPLE, questions, strict=True)]
            assert asked == arrived[: len(asked)]


async def test_one_persons_quick_messages_are_answered_in_order_and_show_they_wait(
    tmp_path: Path,
) -> None:
    async with running_bot(tmp_path, limits=LIMITS, flood_limits=FLOOD) as h:
        h.llm.echo_delay = WORD_DELAY
        chat = h.tg.private_chat(ALICE)
        questions = [f"number {i} {FILLER}" for i in range(3)]
        requests = [await h.ask(chat, ALICE, question) for question in questions]
        expected = [f"{ECHO_PREFIX}{question}" for question in questions]
        first, second, third = await answers(h, chat, requests, expected)

        # In order: the model was asked each question once the answer before it was written
        # (each context holds the answers before it, below), and each answer's own text came
        # after the one before it had begun.
        for earlier, later in itertools.pairwise([first, second, third]):
            began = next(at for text, _, at in later.history if text != QUEUED_NOTE)
            assert began > first_at(earlier)
        # The later two said they were queued, first thing.
        assert first.history[0][0] != QUEUED_NOTE
        assert second.history[0][0] == third.history[0][0] == QUEUED_NOTE
        # Each saw the answers before it.
        contexts = [request.json["messages"][1:] for request in h.llm.requests]
        assert [len(context) for context in contexts] == [1, 3, 5]
        assert contexts[2][1] == {"role": "assistant", "content": expected[0]}
        assert contexts[2][3] == {"role": "assistant", "content": expected[1]}
        assert h.tg.flood_refusals(chat.id) == 0


async def test_a_question_right_after_a_members_reset_is_the_new_conversations_first(
    tmp_path: Path,
) -> None:
    """The reset's admin check asks Telegram first; the question must not overtake it."""
    async with running_bot(tmp_path, limits=LIMITS) as h:
        group = h.tg.supergroup()
        h.tg.set_admins(group, [])
        old = await h.ask(group, ALICE, f"{h.mention} old topic")
        await h.reply_text(group, old, echo("Alice", "old topic"))
        answer_check = h.tg.hold("getChatMember")
        reset = await h.ask(group, ALICE, "/reset")
        await h.tg.wait_until(lambda: [c for c in h.tg.calls if c.method == "getChatMember"], WAIT)
        typing_before = len(h.tg.calls_of("sendChatAction"))
        question = await h.ask(group, ALICE, f"{h.mention} new topic")
        # The question is in the service's hands (its reply shows "typing") while the reset
        # still waits for Telegram to say whether Alice is an admin.
        await h.tg.wait_until(lambda: len(h.tg.calls_of("sendChatAction")) > typing_before, WAIT)
        answer_check.set()
        await h.reply_text(group, question, echo("Alice", "new topic"))
        # The old answer may still be being saved when the reset comes (it is then waited for);
        # the question after the reset is never the reset's to stop.
        told = await h.tg.wait_until(lambda: replies(group, reset), WAIT)
        assert told[0].text in {
            describe_reset(ResetReport()),
            describe_reset(ResetReport(waited_for=("Alice",))),
        }
        assert h.llm.requests[-1].json["messages"][1:] == [
            {"role": "user", "content": "[Alice] new topic"}
        ]


async def test_a_429_storm_holds_the_whole_group_and_every_reply_completes(
    tmp_path: Path,
) -> None:
    async with running_bot(tmp_path, limits=LIMITS) as h:
        h.llm.echo_delay = WORD_DELAY
        group = h.tg.supergroup()
        h.tg.inject_429("editMessageText", count=4, retry_after=1)
        questions = [f"storm {i} {FILLER}" for i in range(len(PEOPLE))]
        requests = [
            await h.ask(group, person, f"{h.mention} {question}")
            for person, question in zip(PEOPLE, questions, strict=True)
        ]
        expected = [echo(p["first_name"], q) for p, q in zip(PEOPLE, questions, strict=True)]
        await answers(h, group, requests, expected)

        refused = group.refusals
        writes = h.tg.writes(group.id)
        assert refused, "the storm never hit"
        # A 429's retry_after held every reply in the group: no write inside any hold.
        for at in refused:
            assert not [w for w in writes if at + SLACK < w < at + 1.0 - SLACK], (at, writes)
        assert all(len(replies(group, request)) == 1 for request in requests)


async def test_five_people_in_a_discord_channel_share_its_bucket(tmp_path: Path) -> None:
    people = [ALICE_ID, BOB_ID] + [3000 + i for i in range(3)]
    bucket = (5, 1.0)
    async with FakeDiscord(channel_bucket=bucket) as fake:
        for number, person in enumerate(people[2:]):
            fake.add_member(person, f"Person{number}")
        limits = WriteLimits(*bucket, reserve=CHANNEL_LIMITS.reserve)
        async with _bot(tmp_path, fake, channel_limits=limits) as bot:
            bot.llm.echo_delay = WORD_DELAY
            questions = [f"channel {i} {FILLER}" for i in range(len(people))]
            for person, question in zip(people, questions, strict=True):
                await fake.push_message(f"{MENTION} {question}", author=person)

            def finished() -> list | None:
                sent = fake.bot_messages(GENERAL_ID)
                done = [m for m in sent if m.content.strip().endswith(FILLER)]
                return done if len(done) == len(people) else None

            messages = await fake.wait_for(finished, WAIT)
            assert fake.rate_limit_refusals(GENERAL_ID) == 0
            assert fake.max_writes_in_window(GENERAL_ID, bucket[1]) <= bucket[0]
            # At once: every answer began before any was finished.
            final_times = [m.edit_times[-1] if m.edit_times else m.created_at for m in messages]
            assert max(m.created_at for m in messages) < min(final_times)
            asked = sorted(m.content.split("] ")[1].split(" ")[1] for m in messages)
            assert asked == [str(i) for i in range(len(people))]
