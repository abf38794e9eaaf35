"""`/usage` and `/stats` end to end: the real aiogram bot against the fake Bot API and the real
discord.py client against the fake Discord, on a real SQLite store whose ledger rows are written
through `Store.record_usage`, as the service writes them."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from bots.telegram.handlers import commands as texts
from bots.usage_view import ESTIMATED_NOTE
from core.usage import UsageKind, UsageRecord
from storage import Store
from tests.test_telegram_bot import ALICE, BOB, CAROL, replies, running_bot

GROUP_ID = -1001000000001


async def spend(
    store: Store,
    platform: str,
    chat_id: int | str,
    user: dict | int,
    *,
    model: str = "fake-model",
    prompt: int = 1000,
    completion: int = 234,
    cost: int | None = 420_000,
    estimated: bool = False,
    name: str | None = None,
) -> None:
    user_id = user["id"] if isinstance(user, dict) else user
    shown = name or (user["first_name"] if isinstance(user, dict) else str(user))
    await store.record_usage(
        UsageRecord(
            kind=UsageKind.CHAT,
            at=datetime.now(UTC),
            platform=platform,
            chat_id=str(chat_id),
            thread_id="",
            user_id=str(user_id),
            user_name=shown,
            model=model,
            provider="OpenAI",
            prompt_tokens=prompt,
            completion_tokens=completion,
            estimated=estimated,
            cost_micros=cost,
        )
    )


async def test_telegram_usage_in_private_and_in_a_group(
    tmp_path: Path, clean_logs: Callable[[], None]
) -> None:
    async with running_bot(tmp_path) as h:
        store = h.service.store
        await spend(store, "telegram", ALICE["id"], ALICE)
        await spend(store, "telegram", GROUP_ID, ALICE, estimated=True, cost=2_500)
        await spend(store, "telegram", GROUP_ID, BOB, prompt=10_000, completion=0)

        mine = h.tg.private_chat(ALICE)
        asked = await h.ask(mine, ALICE, "/usage")
        answer = (await h.any_reply(mine, asked)).text or ""
        assert answer.startswith("Your use\nToday: 2,468 tokens*, $0.42\n")  # $0.4225
        assert "This month: 2,468 tokens*, $0.42" in answer
        assert ESTIMATED_NOTE in answer and "This chat" not in answer

        group = h.tg.supergroup(GROUP_ID)
        in_group = await h.ask(group, ALICE, "/usage")
        await h.reply_text(group, in_group, texts.SENT_PRIVATELY)
        private = (await h.tg.wait_until(lambda: mine.bot_messages()[1:], 10.0))[0].text or ""
        assert "This chat\nToday: 11,234 tokens*, $0.42" in private  # Bob's and Alice's

        # Bob never started the bot: Telegram will not let it write to him first.
        bobs = await h.ask(group, BOB, "/usage")
        refused = (await h.any_reply(group, bobs)).text or ""
        assert refused.startswith("I cannot write to you privately")
        assert "Today: 10,000 tokens, $0.42" in refused
    clean_logs()


async def test_telegram_stats_are_for_admins_and_show_their_group(
    tmp_path: Path, clean_logs: Callable[[], None]
) -> None:
    async with running_bot(tmp_path, admin_ids=[CAROL["id"]]) as h:
        store = h.service.store
        await spend(store, "telegram", GROUP_ID, ALICE, cost=1_500_000)
        await spend(store, "telegram", GROUP_ID, BOB, model="other-model", cost=None)
        await spend(store, "telegram", -5, CAROL, name="Elsewhere", cost=9_000_000)
        group = h.tg.supergroup(GROUP_ID)
        h.tg.set_admins(group, [ALICE["id"]])
        h.tg.private_chat(ALICE)  # Alice started the bot, so it may write to her

        denied = await h.ask(group, BOB, "/stats")
        await h.reply_text(group, denied, texts.STATS_ADMINS_ONLY)
        own_chat = h.tg.private_chat(BOB)
        denied = await h.ask(own_chat, BOB, "/stats")  # a private chat makes no one an admin
        await h.reply_text(own_chat, denied, texts.STATS_ADMINS_ONLY)

        asked = await h.ask(group, ALICE, "/stats")
        await h.reply_text(group, asked, texts.SENT_PRIVATELY)
        alice = h.tg.private_chat(ALICE)
        stats = (await h.tg.wait_until(alice.bot_messages, 10.0))[0].text or ""
        assert stats.startswith("Usage of this chat\n\nToday: 2,468 tokens, $1.50 in 2 calls")
        assert "Alice: 1,234 tokens, $1.50" in stats
        assert "other-model: 1,234 tokens, $0.00 (+1 unpriced)" in stats
        assert "Elsewhere" not in stats and "$9.00" not in stats  # another chat's

        carol = h.tg.private_chat(CAROL)
        whole = await h.ask(carol, CAROL, "/stats")
        answer = (await h.any_reply(carol, whole)).text or ""
        assert answer.startswith("Usage of the whole bot\n\nToday: 3,702 tokens, $10.50 in 3")
        assert answer.index("Elsewhere") < answer.index("Alice")  # the costliest first
        assert "This week (since Monday)" in answer and "This month:" in answer
        assert replies(group, asked)  # answered in the group, once

        # An admin posting as the group has no private chat: the figures are not posted.
        anonymous = await h.tg.message(group, None, "/stats", sender_chat=group)
        await h.reply_text(group, anonymous, texts.STATS_NOT_ANONYMOUSLY)
    clean_logs()


async def test_usage_shows_what_is_left_of_each_budget_that_applies(tmp_path: Path) -> None:
    from bots.usage_view import Limits, UsageLimits, money, usage_text
    from core.conversation import ChatRef
    from storage import open_store

    store = await open_store(f"sqlite:///{tmp_path}/parley.db")
    try:
        await spend(store, "telegram", 5, 7, prompt=19_000, completion=500, cost=600_000)
        limits = UsageLimits(
            user=Limits(daily_tokens=20_000, monthly_cost_micros=2_500_000),
            chat=Limits(daily_tokens=10_000),
            guests=Limits(daily_tokens=100_000),
        )
        now = datetime.now(UTC)
        text = await usage_text(store, ChatRef("telegram", "5"), "7", limits, now, in_private=False)
        assert "Left of your daily 20,000 tokens: 500" in text
        assert "Left of your monthly $2.50: $1.90" in text
        assert "Left of this chat's daily 10,000 tokens: 0" in text  # never below zero
        assert "Left of the guests' shared daily 100,000 tokens: 100,000" in text
        exempt = UsageLimits(user=Limits(daily_tokens=1), exempt=True)
        text = await usage_text(store, ChatRef("telegram", "5"), "7", exempt, now, in_private=True)
        assert "No budget applies to you (ADMIN_IDS)." in text and "Left of" not in text
    finally:
        await store.close()
    assert [money(m) for m in (0, 4_200, 420_000, 1_234_560_000)] == [
        "$0.00",
        "$0.0042",
        "$0.42",
        "$1,234.56",
    ]


async def test_discord_usage_is_ephemeral_and_stats_need_manage_server(tmp_path: Path) -> None:
    from bots.discord.commands import STATS_ADMINS_ONLY
    from tests.fakes.discord_api import ALICE_ID, BOB_ID, GENERAL_ID, FakeDiscord
    from tests.test_discord_bot import _bot

    async with FakeDiscord() as fake, _bot(tmp_path, fake) as bot:
        store = bot.service.store
        await spend(store, "discord", GENERAL_ID, BOB_ID, name="Bob", estimated=True)
        await spend(store, "discord", GENERAL_ID, ALICE_ID, name="Alice", cost=1_000_000)
        await spend(store, "discord", 77, ALICE_ID, name="Alice", cost=5_000_000)

        usage = await fake.push_interaction("usage", user=BOB_ID)
        text = await fake.wait_answered(usage)
        assert usage.callback is not None and usage.callback["data"]["flags"] & 64  # ephemeral
        assert text.startswith("Your use\nToday: 1,234 tokens*, $0.42\n")
        assert "This chat\nToday: 2,468 tokens*, $1.42" in text and ESTIMATED_NOTE in text

        refused = await fake.push_interaction("stats", user=BOB_ID)
        assert await fake.wait_answered(refused) == STATS_ADMINS_ONLY
        in_dm = await fake.push_interaction(
            "stats", user=ALICE_ID, channel=fake.dm_channel_id(ALICE_ID)
        )
        assert await fake.wait_answered(in_dm) == STATS_ADMINS_ONLY  # no server, no Manage Server

        stats = await fake.push_interaction("stats", user=ALICE_ID)
        text = await fake.wait_answered(stats)
        assert stats.callback is not None and stats.callback["data"]["flags"] & 64
        assert text.startswith("Usage of this chat\n\nToday: 2,468 tokens*, $1.42 in 2 calls")
        assert text.index("Alice: 1,234 tokens, $1.00") < text.index("Bob: 1,234 tokens*")
        assert "$5.00" not in text  # another channel's


async def test_telegram_usage_shows_the_budgets_in_force_with_an_admins_override(
    tmp_path: Path, clean_logs: Callable[[], None]
) -> None:
    """The limits come from the settings and the /budget overrides the gate enforces, so
    what /usage says is left is what the next check sees."""
    async with running_bot(tmp_path, user_daily_tokens=20_000, chat_monthly_cost=5.0) as h:
        await spend(h.service.store, "telegram", ALICE["id"], ALICE)  # 1,234 tokens
        mine = h.tg.private_chat(ALICE)
        asked = await h.ask(mine, ALICE, "/usage")
        answer = (await h.any_reply(mine, asked)).text or ""
        assert "Left of your daily 20,000 tokens: 18,766" in answer
        assert "Left of this chat's monthly $5.00: $4.58" in answer
        budgets = h.service.gate.budgets
        await budgets.set_override("user", f"telegram:{ALICE['id']}", "daily_tokens", 2_000)
        again = await h.ask(mine, ALICE, "/usage")
        assert "Left of your daily 2,000 tokens: 766" in (
            (await h.any_reply(mine, again)).text or ""
        )
