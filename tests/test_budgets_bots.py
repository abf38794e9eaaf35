"""Budgets and fair use through the real bots: aiogram against the fake Bot API, discord.py
against the fake Discord, the fake LLM server as the model, a real SQLite store.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bots.telegram.middlewares import REFUSAL
from core import budget_command
from core.usage import UsageKind, UsageRecord
from storage import open_store
from tests.fakes.discord_api import ALICE_ID, BOB_ID, FakeDiscord
from tests.fakes.llm_server import Script
from tests.fakes.telegram_api import user
from tests.test_discord_bot import Harness as DiscordHarness
from tests.test_discord_bot import _bot
from tests.test_telegram_bot import ALICE, BOB, CAROL, WAIT, replies, running_bot

QUEUED = "⏳ Queued ("


async def _spend(
    database_url: str, platform: str, user_id: int, tokens: int, *, guest: bool = False
) -> None:
    """`user_id` has spent `tokens` today (as a guest: from the guests' pool too), as the
    ledger records a reply."""
    store = await open_store(database_url)
    try:
        await store.record_usage(
            UsageRecord(
                kind=UsageKind.CHAT,
                at=datetime.now(UTC),
                platform=platform,
                chat_id="0",
                thread_id="",
                user_id=str(user_id),
                prompt_tokens=tokens,
                guest=guest,
            )
        )
    finally:
        await store.close()


async def test_telegram_budget_is_the_operators_and_an_over_budget_user_reads_the_line(
    tmp_path: Path,
) -> None:
    async with running_bot(tmp_path, admin_ids=[CAROL["id"]]) as h:
        group = h.tg.supergroup()
        h.tg.set_admins(group, [ALICE["id"]])
        denied = await h.ask(group, ALICE, "/budget chat daily_tokens 100")  # a group admin
        await h.reply_text(group, denied, budget_command.ADMINS_ONLY)
        shown = await h.ask(group, BOB, "/budget")
        await h.reply_text(
            group,
            shown,
            "Budgets (days and months are UTC):\nThis chat: no limit\nYou: no limit\n"
            "Guests, all together: no limit",
        )
        bad = await h.ask(group, CAROL, "/budget chat daily_tokens -3")
        assert "above 0" in (await h.any_reply(group, bad)).text
        said = await h.ask(group, BOB, "hello all")
        by_reply = await h.ask(
            group, CAROL, "/budget user daily_tokens 100", reply_to=said["message_id"]
        )
        await h.reply_text(
            group, by_reply, f"User {BOB['id']}'s daily tokens budget is now 100 tokens."
        )
        by_id = await h.ask(group, CAROL, f"/budget user {BOB['id']} monthly_cost 2.5")
        await h.reply_text(group, by_id, f"User {BOB['id']}'s monthly cost budget is now $2.50.")
        await _spend(h.settings.database_url, "telegram", BOB["id"], 100)
        asked = len(h.llm.requests)
        question = await h.ask(group, BOB, "/ask one more?")
        line = (await h.any_reply(group, question)).text
        assert line is not None and line.startswith(
            "You have used your daily 100 tokens; it resets at 00:00 UTC (in "
        )
        assert len(h.llm.requests) == asked  # stored, not answered
        operator = await h.ask(group, CAROL, "/ask me?")
        await h.reply_text(group, operator, "echo: [Carol] me?")


async def test_telegram_guests_are_let_in_beside_a_list_only_when_allowed(
    tmp_path: Path,
) -> None:
    async with running_bot(
        tmp_path, telegram_allowed_ids=[ALICE["id"]], guest_daily_tokens=100
    ) as h:
        stranger = h.tg.private_chat(BOB)
        refused = await h.ask(stranger, BOB, "hi")
        await h.reply_text(
            stranger, refused, REFUSAL.format(user_id=BOB["id"], chat_id=stranger.id)
        )
    async with running_bot(
        tmp_path, telegram_allowed_ids=[ALICE["id"]], allow_guests=True, guest_daily_tokens=100
    ) as h:
        stranger = h.tg.private_chat(BOB)
        first = await h.ask(stranger, BOB, "hi")
        await h.reply_text(stranger, first, "echo: hi")
        await _spend(h.settings.database_url, "telegram", BOB["id"], 100, guest=True)
        second = await h.ask(stranger, BOB, "again")
        line = (await h.any_reply(stranger, second)).text
        assert line is not None and line.startswith(
            "Guests of this bot have used their shared daily 100 tokens"
        )
        member = h.tg.private_chat(ALICE)
        answered = await h.ask(member, ALICE, "and me?")
        await h.reply_text(member, answered, "echo: and me?")


async def test_telegram_two_model_slots_for_ten_chats_show_the_queue_then_answer_all(
    tmp_path: Path,
) -> None:
    async with running_bot(tmp_path, max_concurrent_replies=2) as h:
        held = [Script(pieces=["a", "b"], hold_after=1) for _ in range(10)]
        h.llm.enqueue(*held)
        people = [user(2000 + n, f"User {n}") for n in range(10)]
        chats = [h.tg.private_chat(person) for person in people]
        asked = [
            await h.ask(c, p, f"question {n}")
            for n, (c, p) in enumerate(zip(chats, people, strict=True))
        ]
        await h.llm.wait_for_active_streams(2)

        def queued() -> list[str] | None:
            shown = [
                m.text
                for c, q in zip(chats, asked, strict=True)
                for m in replies(c, q)
                if m.text and m.text.startswith(QUEUED)
            ]
            return shown if len(shown) == 8 else None

        shown = await h.tg.wait_until(queued, WAIT)
        assert sorted(shown) == sorted(f"⏳ Queued ({n} ahead)" for n in range(8))
        for script in held:
            script.release.set()
        for c, q in zip(chats, asked, strict=True):
            answer = await h.reply_text(c, q, "ab")
            positions = [
                int(text.removeprefix(QUEUED).split()[0])
                for text, _, _ in answer.history
                if text and text.startswith(QUEUED)
            ]
            assert positions == sorted(positions, reverse=True)  # the queue only moves forward
        assert h.llm.active_streams == 0


@pytest.fixture
async def discord_fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as server:
        yield server


async def test_discord_budget_is_the_operators(tmp_path: Path, discord_fake: FakeDiscord) -> None:
    async with _bot(tmp_path, discord_fake, admin_ids=[ALICE_ID]) as bot:
        await _discord_budget(bot)


async def _discord_budget(bot: DiscordHarness) -> None:
    denied = await bot.fake.push_interaction(
        "budget", {"change": "chat daily_tokens 5"}, user=BOB_ID
    )
    assert await bot.fake.wait_answered(denied) == budget_command.ADMINS_ONLY
    shown = await bot.fake.push_interaction("budget", {}, user=BOB_ID)
    assert (await bot.fake.wait_answered(shown)).startswith("Budgets (days and months are UTC)")
    bad = await bot.fake.push_interaction(
        "budget", {"change": "chat monthly_cost lots"}, user=ALICE_ID
    )
    assert "in dollars" in await bot.fake.wait_answered(bad)
    granted = await bot.fake.push_interaction(
        "budget", {"change": "chat daily_tokens 50,000"}, user=ALICE_ID
    )
    assert (
        await bot.fake.wait_answered(granted)
        == "This chat's daily tokens budget is now 50,000 tokens."
    )
    again = await bot.fake.push_interaction("budget", {}, user=BOB_ID)
    assert "This chat: daily 50,000 tokens (set here by an admin)" in (
        await asyncio.wait_for(bot.fake.wait_answered(again), WAIT)
    )
