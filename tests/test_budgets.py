"""Budgets, the rate limit and the model slots, through the conversation service over real HTTP
to the fake LLM server, on a real SQLite store. Each reply reports 100 tokens (60 + 40).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import ValidationError

from bots.access import Access, access, standing
from bots.config import Settings, setting_problems
from core import AsyncClient
from core.budget_command import ADMINS_ONLY, Change, Show, parse
from core.budgets import DAILY_TOKENS, resets_at, setting_limits
from core.config import CoreSettings
from core.conversation import Author, ConversationService, Gate, Reply, ReplyState
from core.errors import InvalidSettingError
from core.usage import UsageKey
from storage import MessageStatus, Store
from tests.budget_support import MovableClock, Ticker, at
from tests.fakes.llm_server import FakeLLMServer, Script
from tests.test_conversation_fakes import WAIT, chat, collect

ALICE = Author("100", "Alice")
BOB = Author("200", "Bob")
OPERATOR = Author("1", "Operator", admin=True)
USAGE = {"prompt_tokens": 60, "completion_tokens": 40}


@pytest.fixture
async def llm() -> AsyncIterator[FakeLLMServer]:
    async with FakeLLMServer() as server:
        yield server


def service_for(
    store: Store,
    llm: FakeLLMServer,
    *,
    clock: MovableClock | None = None,
    ticker: Ticker | None = None,
    **settings: Any,
) -> ConversationService:
    core = CoreSettings(_env_file=None, default_model="fake-model", max_retries=0, **settings)
    wall = clock or MovableClock(at("2026-12-01T12:00"))
    gate = Gate.from_settings(store, core, clock=wall, monotonic=ticker or Ticker())
    client = AsyncClient(base_url=llm.base_url, api_key="test-key")
    return ConversationService(store, client, core, gate=gate, clock=wall)


def scripts(llm: FakeLLMServer, count: int, **kw: Any) -> None:
    llm.enqueue(*(Script(pieces=["fine"], usage=USAGE, **kw) for _ in range(count)))


async def answer(service: ConversationService, author: Author, text: str, where: str = "1") -> str:
    """The model's text, or the refusal line when the model was not called."""
    return await said(service.reply(chat(where), author, text))


async def said(reply: Reply) -> str:
    text = await asyncio.wait_for(collect(reply), WAIT)
    return text or reply.notice or ""


async def spent(store: Store, author: Author, clock_now: Any) -> int:
    key = UsageKey.user("telegram", author.id, "day")
    return (await store.usage_totals([key], clock_now))[key].tokens


async def test_a_budget_crossed_mid_conversation_refuses_politely_and_keeps_the_message(
    store: Store, llm: FakeLLMServer
) -> None:
    clock = MovableClock(at("2026-12-01T20:48"))
    service = service_for(store, llm, clock=clock, user_daily_tokens=250)
    scripts(llm, 5)
    assert [await answer(service, ALICE, f"q{i}") for i in range(3)] == ["fine"] * 3
    refused = await answer(service, ALICE, "one more?")
    assert refused == (
        "You have used your daily 250 tokens; it resets at 00:00 UTC (in 3 h 12 min). "
        "I kept your message but will not answer it."
    )
    assert len(llm.requests) == 3  # the model was not called
    history = await service.history(chat())
    assert [m.text for m in history if m.role == "user"] == ["q0", "q1", "q2", "one more?"]
    assert await spent(store, ALICE, clock()) == 300  # the third reply was not cut by its charge
    # Others and the operator are not bound by Alice's budget.
    assert await answer(service, BOB, "me?") == "fine"
    assert await answer(service, OPERATOR, "and me?") == "fine"


async def test_the_daily_budget_resets_at_midnight_utc(store: Store, llm: FakeLLMServer) -> None:
    clock = MovableClock(at("2026-12-01T23:59:30"))
    service = service_for(store, llm, clock=clock, user_daily_tokens=100)
    scripts(llm, 2)
    assert await answer(service, ALICE, "late") == "fine"
    assert "in 1 min" in await answer(service, ALICE, "later")
    clock.advance(seconds=31)  # 00:00:01 on 2 December
    assert await answer(service, ALICE, "next day") == "fine"
    assert len(llm.requests) == 2


async def test_the_monthly_budget_resets_on_the_first(store: Store, llm: FakeLLMServer) -> None:
    clock = MovableClock(at("2026-12-19T10:00"))
    service = service_for(store, llm, clock=clock, user_monthly_tokens=100)
    scripts(llm, 2)
    assert await answer(service, ALICE, "once") == "fine"
    line = await answer(service, ALICE, "twice")
    assert line.startswith("You have used your monthly 100 tokens; it resets on 1 January at ")
    assert "(in 12 days 14 h)" in line
    clock.now = at("2027-01-01T00:00")
    assert await answer(service, ALICE, "new year") == "fine"
    assert resets_at(at("2026-12-31T23:00"), "month") == at("2027-01-01T00:00")


async def test_concurrent_messages_of_one_user_overspend_by_one_reply_at_most(
    store: Store, llm: FakeLLMServer
) -> None:
    """Eight chats at once (a DM and groups): without admission all eight would pass the
    check before any is charged; the budget is crossed by at most one reply."""
    clock = MovableClock(at("2026-12-01T12:00"))
    service = service_for(store, llm, clock=clock, user_daily_tokens=250)
    scripts(llm, 8)
    replies = [service.reply(chat(str(n)), ALICE, f"q{n}") for n in range(8)]
    texts = await asyncio.gather(*(said(r) for r in replies))
    answered = texts.count("fine")
    assert len(llm.requests) == answered
    total = await spent(store, ALICE, clock())
    assert total == answered * 100
    assert 250 <= total <= 250 + 100
    assert all(t == "fine" or t.startswith("You have used your daily 250 tokens") for t in texts)


async def test_a_chat_budget_binds_everyone_in_it(store: Store, llm: FakeLLMServer) -> None:
    service = service_for(store, llm, chat_daily_tokens=200)
    scripts(llm, 3)
    assert await answer(service, ALICE, "a", where="-5") == "fine"
    assert await answer(service, BOB, "b", where="-5") == "fine"
    assert (await answer(service, BOB, "c", where="-5")).startswith(
        "This chat has used its daily 200 tokens"
    )
    assert await answer(service, BOB, "elsewhere", where="-6") == "fine"


async def test_guests_share_one_pool_on_every_platform(store: Store, llm: FakeLLMServer) -> None:
    service = service_for(store, llm, guest_daily_tokens=200)
    scripts(llm, 4)
    guest, other_guest = Author("7", "Guest", guest=True), Author("8", "Other", guest=True)
    assert await answer(service, guest, "hi") == "fine"
    discord = service.reply(chat("9", platform="discord"), other_guest, "hello")
    assert await said(discord) == "fine"
    refused = await answer(service, other_guest, "again")
    assert refused.startswith("Guests of this bot have used their shared daily 200 tokens")
    assert await answer(service, ALICE, "a member") == "fine"  # members spend no guest budget


async def test_an_admins_override_replaces_the_setting_for_one_user(
    store: Store, llm: FakeLLMServer
) -> None:
    service = service_for(store, llm, user_daily_tokens=100)
    scripts(llm, 3)
    key = UsageKey.user("telegram", ALICE.id, "day").key
    await service.gate.budgets.set_override("user", key, "daily_tokens", 300)
    assert [await answer(service, ALICE, f"q{i}") for i in range(3)] == ["fine"] * 3
    # Read back by a new policy, as after a restart.
    fresh = service_for(store, llm, user_daily_tokens=100)
    assert await fresh.gate.budgets.limits("user", key) == {"daily_tokens": (300, True)}
    await fresh.gate.budgets.set_override("user", key, "daily_tokens", None)
    assert await fresh.gate.budgets.limits("user", key) == {"daily_tokens": (100, False)}


async def test_over_the_rate_a_message_is_stored_and_not_answered(
    store: Store, llm: FakeLLMServer
) -> None:
    ticker = Ticker()
    service = service_for(store, llm, ticker=ticker, user_messages_per_minute=2)
    scripts(llm, 4)
    assert [await answer(service, ALICE, f"q{i}") for i in range(2)] == ["fine"] * 2
    line = await answer(service, ALICE, "too fast")
    assert line.startswith("⏳ Slow down: at most 2 messages a minute each.")
    assert "try again in 30 s" in line
    assert await answer(service, OPERATOR, "admins are not limited") == "fine"
    ticker.now += 30  # one message's worth refilled
    assert await answer(service, ALICE, "now") == "fine"
    assert len(llm.requests) == 4
    user_texts = [m.text for m in await service.history(chat()) if m.role == "user"]
    assert "too fast" in user_texts


async def test_two_model_slots_queue_ten_chats_in_order_and_answer_all(
    store: Store, llm: FakeLLMServer
) -> None:
    service = service_for(store, llm, max_concurrent_replies=2)
    held = [Script(pieces=["a", "b"], usage=USAGE, hold_after=1) for _ in range(10)]
    llm.enqueue(*held)
    replies = [service.reply(chat(str(n)), ALICE, f"q{n}") for n in range(10)]
    await llm.wait_for_active_streams(2)
    for ahead, reply in enumerate(replies[2:]):
        await _at(reply, ahead)
    assert [r.queue_position for r in replies[:2]] == [None, None]
    assert all(r.state is ReplyState.QUEUED for r in replies[2:])
    collecting = [asyncio.ensure_future(collect(r)) for r in replies]
    for script in held:  # each release frees a slot for the next in line
        script.release.set()
    assert await asyncio.wait_for(asyncio.gather(*collecting), WAIT) == ["ab"] * 10
    assert service.gate.slots is not None and service.gate.slots.waiting == 0


async def test_a_reply_stopped_while_queued_leaves_the_queue(
    store: Store, llm: FakeLLMServer
) -> None:
    service = service_for(store, llm, max_concurrent_replies=1)
    first = Script(pieces=["a", "b"], usage=USAGE, hold_after=1)
    llm.enqueue(first, Script(pieces=["c"], usage=USAGE))
    running = service.reply(chat("1"), ALICE, "one")
    await llm.wait_for_active_streams(1)
    stopped = service.reply(chat("2"), ALICE, "two")
    after = service.reply(chat("3"), BOB, "three")
    await _at(after, 1)
    stopped.stop()
    await _at(after, 0)
    assert await stopped.wait() is MessageStatus.INTERRUPTED
    first.release.set()
    assert await asyncio.wait_for(collect(running), WAIT) == "ab"
    assert await asyncio.wait_for(collect(after), WAIT) == "c"


async def _at(reply: Reply, ahead: int) -> None:
    """Until `reply` has `ahead` replies ahead of it in the queue for a model slot."""

    async def moved() -> None:
        while reply.queue_position != ahead:
            await reply.queue_moved()

    await asyncio.wait_for(moved(), WAIT)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("USER_DAILY_TOKENS", "-5"),
        ("USER_DAILY_TOKENS", "0"),
        ("USER_MONTHLY_TOKENS", "lots"),
        ("CHAT_DAILY_TOKENS", "1.5"),
        ("GUEST_DAILY_TOKENS", str(10**12 + 1)),
        ("USER_DAILY_COST", "-0.5"),
        ("USER_MONTHLY_COST", "nan"),
        ("CHAT_MONTHLY_COST", "inf"),
        ("USER_MESSAGES_PER_MINUTE", "0"),
        ("MAX_CONCURRENT_REPLIES", "many"),
    ],
)
def test_a_bad_budget_setting_is_refused_naming_it(
    name: str, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as caught:
        Settings(_env_file=None)
    assert [field.upper() for field, _ in setting_problems(caught.value)] == [name]


def test_budget_settings_read_dollars_and_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USER_DAILY_COST", "0.50")
    monkeypatch.setenv("USER_DAILY_TOKENS", "20000")
    settings = Settings(_env_file=None)
    assert (settings.user_daily_cost, settings.user_daily_tokens) == (0.5, 20000)


def test_the_budget_command_parses_one_grammar_for_both_bots() -> None:
    assert parse(None) == Show()
    assert parse("  ", target_user="42") == Show("42")
    assert parse("chat daily_tokens 50,000") == Change("chat", None, DAILY_TOKENS, 50_000)
    assert parse("user 42 monthly_cost $2.5").value == 2_500_000
    assert parse("user monthly_cost 2.5", target_user="42").user_id == "42"
    assert parse("user 42 daily_tokens off").value is None
    assert parse("user 42") == Show("42")


@pytest.mark.parametrize(
    ("argument", "says"),
    [
        ("chat daily_tokens -5", "above 0"),
        ("chat daily_tokens 0", "above 0"),
        ("chat daily_tokens lots", "whole number"),
        ("chat daily_tokens 1e99", "whole number"),
        ("chat monthly_cost -1", "in dollars"),
        ("chat monthly_cost 1e12", "in dollars"),
        ("chat monthly_cost 99999999999999", "at most"),
        ("chat weekly_tokens 5", "no budget 'weekly_tokens'"),
        ("user daily_tokens 5", "Which user?"),
        ("everyone 5", "Usage: /budget"),
    ],
)
def test_a_bad_budget_command_gets_a_clear_line(argument: str, says: str) -> None:
    with pytest.raises(InvalidSettingError, match=says.replace("?", r"\?").replace("$", r"\$")):
        parse(argument)


def test_the_admins_only_line_names_the_setting() -> None:
    assert "ADMIN_IDS" in ADMINS_ONLY


async def test_a_check_says_when_a_spent_budget_resets(store: Store, llm: FakeLLMServer) -> None:
    """`check` is the look /usage takes: no admission, what is charged only."""
    service = service_for(store, llm, user_daily_tokens=100)
    scripts(llm, 1)
    assert await service.gate.budgets.check(ALICE, chat()) is None
    assert await answer(service, ALICE, "q") == "fine"
    over = await service.gate.budgets.check(ALICE, chat())
    assert over is not None and over.resets_at == at("2026-12-02T00:00")


@pytest.mark.parametrize(
    ("listed", "allowed_ids", "allow_guests", "expected"),
    [
        (False, [], False, "guest"),  # an open bot: everyone is a guest
        (False, [], True, "guest"),
        (True, [5], False, "member"),
        (False, [5], False, "refused"),
        (False, [5], True, "guest"),
    ],
)
def test_one_access_rule_for_both_bots(
    listed: bool, allowed_ids: list[int], allow_guests: bool, expected: str
) -> None:
    level = access(listed=listed, allowed_ids=allowed_ids, allow_guests=allow_guests)
    assert level == expected


def test_an_admin_is_never_a_guest() -> None:
    admin = standing(Author("9", "Op"), 9, Access.GUEST, admin_ids=[9])
    guest = standing(Author("8", "Someone"), 8, Access.GUEST, admin_ids=[9])
    assert (admin.admin, admin.guest, guest.admin, guest.guest) == (True, False, False, True)


async def test_bigger_replies_racing_a_users_budget_overspend_by_one_reply_at_most(
    store: Store, llm: FakeLLMServer
) -> None:
    """Found in review: sized by the largest reply seen (100 tokens), eight racing replies of
    400 tokens each all passed, 3,300 spent of 1,000. A user's own budget now admits one reply at
    a time, so the limit is crossed by one reply, whatever its size."""
    clock = MovableClock(at("2026-12-01T12:00"))
    service = service_for(store, llm, clock=clock, user_daily_tokens=1000)
    llm.enqueue(Script(pieces=["fine"], usage={"prompt_tokens": 60, "completion_tokens": 40}))
    assert await answer(service, ALICE, "small") == "fine"
    big = {"prompt_tokens": 300, "completion_tokens": 100}
    llm.enqueue(*(Script(pieces=["fine"], usage=big) for _ in range(8)))
    replies = [service.reply(chat(str(n + 10)), ALICE, f"q{n}") for n in range(8)]
    texts = await asyncio.gather(*(said(r) for r in replies))
    total = await spent(store, ALICE, clock())
    assert 1000 <= total <= 1000 + 400
    assert texts.count("fine") == 3  # 100 + 3 x 400 = 1,300: the third crossed it
    await service.aclose()


def test_a_tiny_cost_limit_never_rounds_down_to_nothing() -> None:
    """Found in review: USER_DAILY_COST=0.0000001 is above 0, but rounded to 0 micro-dollars it
    refused every message as over a "$0.00" budget."""
    limits = setting_limits(CoreSettings(_env_file=None, user_daily_cost=0.0000001))
    assert limits["user"]["daily_cost"] == 1
