"""The streaming engine when the platform fails: backoff, the delivery timeout, the listener, and
the interrupted notice of a cancelled stream. A recording surface on the virtual clock of
`tests.test_streaming`, so every wait is exact and no test sleeps."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator

import pytest

from bots.backoff import Backoff
from bots.errors import MessageGone, RateLimited
from bots.streaming import StreamingEngine, StreamResult, with_interrupted_note
from core.conversation import INTERRUPTED_NOTE
from tests.test_streaming import EPSILON, RUN_TIMEOUT, Call, FakeClock, RecordingSurface, paced


@pytest.fixture
async def vclock() -> AsyncIterator[FakeClock]:
    fake = FakeClock()
    runner = asyncio.create_task(fake.run())
    yield fake
    runner.cancel()


class Listener:
    """Records what the engine tells a `DeliveryListener`, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []
        self.result: StreamResult | None = None

    async def showing(self) -> None:
        self.events.append(("showing", None))

    async def sent(self, handles: list[object]) -> None:
        self.events.append(("sent", list(handles)))

    async def ended(self, result: StreamResult) -> None:
        assert self.result is None, "ended twice"
        self.result = result
        self.events.append(("ended", None))


def outage(until: float, clock: FakeClock, ops: tuple[str, ...] = ("edit",)):
    """Calls of `ops` fail with a server error until virtual time `until`."""

    def fail(call: Call) -> BaseException | None:
        if call.op in ops and clock.now < until:
            return ConnectionError("502 Bad Gateway")
        return None

    return fail


def engine_log(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "bots.streaming"]


async def test_an_outage_is_ridden_out_and_the_final_text_lands(
    vclock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bots.streaming")
    surface = RecordingSurface(vclock)
    surface.fail = outage(until=40.0, clock=vclock)
    pieces = [f"{i} " for i in range(30)]  # 3 s of model, then 37 s of outage
    engine = StreamingEngine(surface, clock=vclock)
    result = await asyncio.wait_for(engine.run(paced(vclock, pieces, 0.1)), RUN_TIMEOUT)
    assert result.delivered and result.whole
    assert surface.final_texts() == ["".join(pieces)]
    failed = [call for call in surface.updates if call.at < 40.0 and call.op == "edit"]
    # One warning line per failed try, without a traceback; one line when it got through.
    warnings = [r for r in engine_log(caplog) if r.levelno == logging.WARNING]
    assert len(warnings) == len(failed) and all(r.exc_info is None for r in warnings)
    assert all("ConnectionError: 502 Bad Gateway" in r.getMessage() for r in warnings)
    through = [r.getMessage() for r in engine_log(caplog) if "got through" in r.getMessage()]
    assert len(through) == 1 and f"after {len(failed)} failed tries" in through[0]


async def test_retries_back_off_doubling_to_the_cap(vclock: FakeClock) -> None:
    surface = RecordingSurface(vclock, min_edit_interval=0.1)
    surface.fail = outage(until=10_000.0, clock=vclock)
    backoff = Backoff(first=1.0, cap=8.0, jitter=True)
    engine = StreamingEngine(surface, clock=vclock, backoff=backoff, delivery_timeout=200.0)
    result = await asyncio.wait_for(engine.run(paced(vclock, ["a", "b"], 2.0)), RUN_TIMEOUT)
    edits = [call.at for call in surface.updates if call.op == "edit"]
    assert len(edits) > 10
    for number, (earlier, later) in enumerate(itertools.pairwise(edits), start=1):
        step = min(8.0, 2.0 ** (number - 1))
        if later < edits[0] + 200.0 - EPSILON:  # the last try is pulled in to the timeout
            assert step / 2 - EPSILON <= later - earlier <= step + EPSILON, (number, edits)
    assert not result.delivered


async def test_the_delivery_timeout_counts_from_the_first_failure_in_a_row(
    vclock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    surface = RecordingSurface(vclock)
    surface.fail = outage(until=10_000.0, clock=vclock)
    engine = StreamingEngine(surface, clock=vclock, delivery_timeout=30.0)
    result = await asyncio.wait_for(engine.run(paced(vclock, ["a", "b"], 2.0)), RUN_TIMEOUT)
    edits = [call.at for call in surface.updates if call.op == "edit"]
    # The last try is made at the timeout, or at the chat's next write after it when the try
    # before came less than one write interval earlier (the jitter decides).
    spent = edits[-1] - edits[0]
    assert 30.0 - EPSILON <= spent <= 30.0 + surface.min_edit_interval + EPSILON, edits
    assert not result.delivered and not result.gone
    errors = [r.getMessage() for r in engine_log(caplog) if r.levelno == logging.ERROR]
    assert errors == [
        f"gave up delivering a reply after {len(edits)} failed tries over {spent:.0f} s "
        "(ConnectionError: 502 Bad Gateway); the user may see it cut off"
    ]


async def test_giving_up_mid_stream_stops_reading_the_model(vclock: FakeClock) -> None:
    closed = asyncio.Event()

    async def endless() -> AsyncIterator[str]:
        try:
            for i in range(100_000):
                await vclock.sleep(0.1)
                yield f"{i} "
        finally:
            closed.set()

    surface = RecordingSurface(vclock)
    surface.fail = outage(until=10_000.0, clock=vclock)
    listener = Listener()
    engine = StreamingEngine(surface, clock=vclock, delivery_timeout=20.0, listener=listener)
    result = await asyncio.wait_for(engine.run(endless()), RUN_TIMEOUT)
    assert closed.is_set()
    assert not result.delivered and not result.settled and not result.whole
    assert listener.result == result


async def test_rate_limits_are_waited_out_and_do_not_count_as_failures(
    vclock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    def fail(call: Call) -> BaseException | None:
        return RateLimited(50.0) if call.op == "edit" and vclock.now < 400 else None

    surface = RecordingSurface(vclock, fail=fail)
    engine = StreamingEngine(surface, clock=vclock, delivery_timeout=60.0)
    result = await asyncio.wait_for(engine.run(paced(vclock, ["a", "b"], 2.0)), RUN_TIMEOUT)
    assert result.delivered  # 400 s of flood control, yet no give-up after 60 s
    assert not [r for r in engine_log(caplog) if r.levelno >= logging.WARNING]


async def test_the_listener_hears_each_send_before_the_next_call_and_the_end_once(
    vclock: FakeClock,
) -> None:
    surface = RecordingSurface(vclock, max_length=20)
    listener = Listener()
    engine = StreamingEngine(surface, clock=vclock, listener=listener)
    pieces = [f"word{i} " for i in range(8)]  # 48 characters: several messages
    result = await asyncio.wait_for(engine.run(paced(vclock, pieces, 0.5)), RUN_TIMEOUT)
    sent = [handles for kind, handles in listener.events if kind == "sent"]
    assert len(sent) >= 3
    assert sent == [list(range(count)) for count in range(1, len(sent) + 1)]
    # Every send or edit is announced first, so a caller can save the text before it shows.
    assert [kind for kind, _ in listener.events].count("showing") == len(surface.updates)
    assert listener.events[0][0] == "showing" and listener.events[-1][0] == "ended"
    assert listener.result == result and result.delivered and result.handles == sent[-1]


async def test_a_gone_message_is_settled_but_not_whole(vclock: FakeClock) -> None:
    surface = RecordingSurface(
        vclock, fail=lambda call: MessageGone("deleted") if call.op == "edit" else None
    )
    listener = Listener()
    engine = StreamingEngine(surface, clock=vclock, listener=listener)
    result = await asyncio.wait_for(engine.run(paced(vclock, ["a", "b"], 2.0)), RUN_TIMEOUT)
    assert result.gone and result.settled and not result.whole and not result.delivered


async def test_a_cancelled_stream_ends_with_the_notice_and_says_so(vclock: FakeClock) -> None:
    async def deltas() -> AsyncIterator[str]:
        yield "```python\nprint(1)"
        await vclock.sleep(1000)
        yield "never"

    surface = RecordingSurface(vclock)
    listener = Listener()
    task = asyncio.create_task(
        StreamingEngine(surface, clock=vclock, listener=listener).run(deltas())
    )
    await vclock.sleep(3.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, RUN_TIMEOUT)
    assert surface.final_texts() == ["```python\nprint(1)\n```\n\n" + INTERRUPTED_NOTE]
    assert listener.result is not None
    assert listener.result.interrupted and listener.result.delivered
    assert listener.result.settled and not listener.result.whole


async def test_a_cancelled_stream_whose_last_edit_fails_is_not_settled(
    vclock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def deltas() -> AsyncIterator[str]:
        yield "Hello"
        await vclock.sleep(1000)
        yield "never"

    surface = RecordingSurface(vclock)
    listener = Listener()
    task = asyncio.create_task(
        StreamingEngine(surface, clock=vclock, listener=listener).run(deltas())
    )
    await vclock.sleep(3.0)
    surface.fail = outage(until=10_000.0, clock=vclock)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, RUN_TIMEOUT)
    assert listener.result is not None
    assert listener.result.interrupted and not listener.result.settled
    assert surface.messages == ["Hello"]  # the notice never got through: the next start adds it


async def test_a_stream_cancelled_after_the_model_finished_only_delivers_its_text(
    vclock: FakeClock,
) -> None:
    surface = RecordingSurface(vclock)
    surface.fail = outage(until=10.0, clock=vclock)  # the final edit (at 4 s) has to wait
    listener = Listener()
    engine = StreamingEngine(surface, clock=vclock, listener=listener)
    task = asyncio.create_task(engine.run(paced(vclock, ["a", "b"], 2.0)))
    await vclock.sleep(6.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, RUN_TIMEOUT)
    assert surface.final_texts() == ["ab"]  # the whole reply: nothing to call incomplete
    assert listener.result is not None and listener.result.whole


def test_backoff_doubles_to_its_cap_and_jitters_down_by_at_most_half() -> None:
    backoff = Backoff(first=1.0, cap=30.0, jitter=True)
    for failures, ceiling in [(1, 1.0), (2, 2.0), (5, 16.0), (6, 30.0), (1000, 30.0)]:
        delays = [backoff.delay(failures) for _ in range(200)]
        assert all(ceiling / 2 <= delay <= ceiling for delay in delays)
        assert max(delays) - min(delays) > ceiling / 10  # jittered, not in step


def test_the_notice_closes_an_open_code_block_first() -> None:
    assert with_interrupted_note("text") == "text\n\n" + INTERRUPTED_NOTE
    assert with_interrupted_note("~~~\ncode\n") == "~~~\ncode\n~~~\n\n" + INTERRUPTED_NOTE
