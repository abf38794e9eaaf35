"""The per-chat write budget, alone and shared by several streaming engines, in virtual time.

The end-to-end versions (real aiogram and discord.py against fakes that refuse writes over the
platform's limits) are in `test_group_concurrency.py`."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

import pytest

from bots.errors import RateLimited
from bots.streaming import StreamingEngine
from bots.write_budget import PRUNE_ABOVE, ChatBudgets, Urgency, WriteBudget, WriteLimits
from tests.test_streaming import EPSILON, RUN_TIMEOUT, Call, FakeClock, RecordingSurface, paced

GROUP = WriteLimits(20, 60.0, reserve=5)


@pytest.fixture
async def clock() -> AsyncIterator[FakeClock]:
    fake = FakeClock()
    runner = asyncio.create_task(fake.run())
    yield fake
    runner.cancel()


async def write(
    budget: WriteBudget, clock: FakeClock, urgency: Urgency, took: float = 0.0
) -> float:
    """One write through the budget: returns when it started (virtual time)."""
    claim = budget.claim(urgency)
    await claim.wait()
    started = clock.now
    if took:
        await clock.sleep(took)
    claim.release(wrote=True)
    return started


def most_in_any_window(times: list[float], window: float) -> int:
    return max(sum(t <= at < t + window - EPSILON for at in times) for t in times)


def test_impossible_limits_are_refused() -> None:
    for limit, window, reserve in [(0, 1.0, 0), (1, 0.0, 0), (5, 5.0, 5), (5, 5.0, -1)]:
        with pytest.raises(ValueError, match="Impossible"):
            WriteLimits(limit, window, reserve)
    assert GROUP.pace == 4.0


async def test_first_texts_use_the_whole_window_then_wait_for_the_oldest_to_leave(
    clock: FakeClock,
) -> None:
    budget = WriteBudget(GROUP, clock=clock)
    starts = await asyncio.gather(*(write(budget, clock, Urgency.FIRST) for _ in range(21)))
    assert sorted(starts)[:20] == [0.0] * 20
    assert max(starts) == pytest.approx(60.0)


async def test_ordinary_edits_are_paced_from_the_end_of_the_last_write(clock: FakeClock) -> None:
    budget = WriteBudget(GROUP, clock=clock)
    await write(budget, clock, Urgency.FIRST, took=3.0)  # held back by the platform: ends at 3
    assert await write(budget, clock, Urgency.ROUTINE) == pytest.approx(3.0 + GROUP.pace)


async def test_a_write_counts_from_when_it_landed_if_the_call_returned_later(
    clock: FakeClock,
) -> None:
    """discord.py returns from a call that used up its bucket only once the bucket refills."""
    budget = WriteBudget(WriteLimits(1, 5.0), clock=clock)
    claim = budget.claim(Urgency.FIRST)
    await claim.wait()
    await clock.sleep(5.0)  # the client slept on the way out
    claim.release(wrote=True, landed=0.1)
    assert await write(budget, clock, Urgency.FIRST) == pytest.approx(5.1)


async def test_ordinary_edits_leave_the_reserve_to_first_and_final_texts(clock: FakeClock) -> None:
    budget = WriteBudget(WriteLimits(4, 10.0, reserve=2), clock=clock)
    routine = [await write(budget, clock, Urgency.ROUTINE) for _ in range(3)]
    # Two fit the window's non-reserved share (paced 5 s apart); the third waits for the first
    # to leave the window.
    assert routine == pytest.approx([0.0, 5.0, 10.0])
    assert await write(budget, clock, Urgency.FINAL) == pytest.approx(10.0)  # from the reserve


async def test_a_first_text_goes_ahead_of_everything_waiting(clock: FakeClock) -> None:
    budget = WriteBudget(WriteLimits(1, 1.0), clock=clock)
    await write(budget, clock, Urgency.FIRST)
    order: list[str] = []

    async def queued(name: str, urgency: Urgency, since: float) -> None:
        claim = budget.claim(urgency, since=since)
        await claim.wait()
        order.append(name)
        claim.release(wrote=True)

    await asyncio.gather(
        queued("edit waited longest", Urgency.ROUTINE, since=-5.0),
        queued("final", Urgency.FINAL, since=-1.0),
        queued("first text", Urgency.FIRST, since=0.0),
    )
    assert order == ["first text", "edit waited longest", "final"]


async def test_a_waiting_edit_that_becomes_final_may_use_the_reserve(clock: FakeClock) -> None:
    budget = WriteBudget(WriteLimits(2, 10.0, reserve=1), clock=clock)
    await write(budget, clock, Urgency.FIRST)
    claim = budget.claim(Urgency.ROUTINE)
    waiting = asyncio.create_task(claim.wait())
    await clock.sleep(1.0)
    assert not waiting.done()  # the one ordinary write of the window is used
    claim.raise_to(Urgency.FINAL)
    await asyncio.wait_for(waiting, RUN_TIMEOUT)
    assert clock.now == pytest.approx(1.0)
    claim.release(wrote=True)


async def test_a_429_holds_every_write_to_the_chat(clock: FakeClock) -> None:
    budget = WriteBudget(GROUP, clock=clock)
    budget.hold(7.5)
    starts = await asyncio.gather(*(write(budget, clock, Urgency.FIRST) for _ in range(3)))
    assert starts == [pytest.approx(7.5)] * 3


async def test_a_cancelled_wait_gives_its_turn_back_uncounted(clock: FakeClock) -> None:
    budget = WriteBudget(WriteLimits(1, 10.0), clock=clock)
    blocked = budget.claim(Urgency.FIRST)
    await blocked.wait()
    waiting = asyncio.create_task(budget.claim(Urgency.FIRST).wait())
    await clock.sleep(1.0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    blocked.release(wrote=False)  # granted but never written: the window stays empty
    assert await write(budget, clock, Urgency.ROUTINE) == pytest.approx(1.0)
    assert not budget.idle
    await clock.sleep(10.0)
    assert budget.idle


async def test_idle_budgets_are_dropped_and_busy_ones_kept(clock: FakeClock) -> None:
    budgets: ChatBudgets[int] = ChatBudgets(clock)
    busy = budgets.get(-1, GROUP)
    await write(busy, clock, Urgency.FIRST)
    thinking = budgets.get(-2, GROUP)  # a reply waiting for the model's first words
    with thinking.in_use():
        idle = [budgets.get(chat, GROUP) for chat in range(PRUNE_ABOVE + 1)]
        budgets.get(10_000, GROUP)  # over the bound: the idle ones go
        assert budgets.get(-2, GROUP) is thinking
    assert budgets.get(-1, GROUP) is busy
    assert budgets.get(0, GROUP) is not idle[0]


# Several replies streaming into one chat through the engine.


def five_replies(clock: FakeClock, budget: WriteBudget) -> list[RecordingSurface]:
    surfaces = []
    for _ in range(5):
        surface = RecordingSurface(clock, max_length=4096)
        surface.budget = budget
        surfaces.append(surface)
    return surfaces


async def test_five_replies_in_a_group_start_at_once_and_stay_within_its_budget(
    clock: FakeClock,
) -> None:
    budget = WriteBudget(GROUP, clock=clock)
    surfaces = five_replies(clock, budget)
    pieces = [f"w{i} " for i in range(300)]  # 1,500 characters over 4.5 virtual seconds
    results = await asyncio.wait_for(
        asyncio.gather(
            *(StreamingEngine(s, clock=clock).run(paced(clock, pieces, 0.015)) for s in surfaces)
        ),
        RUN_TIMEOUT,
    )
    answer = "".join(pieces)
    assert all(result.whole for result in results)
    assert all(surface.final_texts() == [answer] for surface in surfaces)
    firsts = [surface.updates[0].at for surface in surfaces]
    assert max(firsts) == pytest.approx(0.015)  # everyone sees an answer begin at once
    writes = sorted(call.at for surface in surfaces for call in surface.updates)
    assert most_in_any_window(writes, GROUP.window) <= GROUP.limit
    finals = [surface.updates[-1].at for surface in surfaces]
    assert max(finals) < 5.0  # the reserve carries the five final texts


async def test_a_long_group_reply_never_drains_the_window_and_stands_still(
    clock: FakeClock,
) -> None:
    budget = WriteBudget(GROUP, clock=clock)
    (surface, *_) = five_replies(clock, budget)
    pieces = [f"w{i} " for i in range(1800)]  # three virtual minutes of streaming
    await asyncio.wait_for(
        StreamingEngine(surface, clock=clock).run(paced(clock, pieces, 0.1)), RUN_TIMEOUT
    )
    times = [call.at for call in surface.updates]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # Paced all along; where a message is full its final text takes one more write, which
    # delays the next by at most one pace.
    assert len(surface.final_texts()) == 3
    assert max(gaps) <= 2 * GROUP.pace + EPSILON
    assert sum(gap > GROUP.pace + EPSILON for gap in gaps) <= 2
    assert most_in_any_window(times, GROUP.window) <= GROUP.limit


async def test_a_429_storm_holds_every_reply_in_the_chat_and_all_finish(clock: FakeClock) -> None:
    budget = WriteBudget(GROUP, clock=clock)
    surfaces = five_replies(clock, budget)
    refused: list[float] = []

    def storm(call: Call) -> BaseException | None:
        if call.op != "typing" and 2.0 <= call.at < 20.0:
            refused.append(call.at)
            return RateLimited(5)
        return None

    for surface in surfaces:
        surface.fail = storm
    pieces = [f"w{i} " for i in range(100)]
    results = await asyncio.wait_for(
        asyncio.gather(
            *(StreamingEngine(s, clock=clock).run(paced(clock, pieces, 0.05)) for s in surfaces)
        ),
        RUN_TIMEOUT,
    )
    assert all(result.whole for result in results)
    # Each 429 held the whole chat for its 5 s: never a second try within a hold.
    assert all(b - a >= 5.0 - EPSILON for a, b in itertools.pairwise(sorted(set(refused))))
    assert len(refused) <= 5 * 4


async def test_a_placeholder_shows_at_once_and_the_answer_replaces_it(clock: FakeClock) -> None:
    surface = RecordingSurface(clock)

    async def later() -> AsyncIterator[str]:
        await clock.sleep(30.0)  # the turn of the asker's earlier question
        yield "Here"
        await clock.sleep(0.1)
        yield " it is."

    result = await asyncio.wait_for(
        StreamingEngine(surface, clock=clock).run(later(), placeholder="⏳ Queued"), RUN_TIMEOUT
    )
    ops = [(call.op, call.text, call.at) for call in surface.updates]
    assert ops[0] == ("send", "⏳ Queued", 0.0)
    # "typing…" under the placeholder while the reply waits, not after its text came
    typing = [call.at for call in surface.calls if call.op == "typing"]
    assert max(typing) == pytest.approx(28.0)
    assert ops[1][:2] == ("edit", "Here") and ops[1][2] == pytest.approx(30.0)
    assert surface.final_texts() == ["Here it is."]
    assert result.handles == [0]
