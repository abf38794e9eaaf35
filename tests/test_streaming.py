"""StreamingEngine against a recording surface on a virtual clock.

Every timing assertion reads the virtual timestamps the surface recorded, so the tests are exact
and fast: the fake clock jumps to the next sleeper's deadline only once the event loop has
nothing else to run.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass

import pytest

from bots import streaming
from bots.clock import SystemClock
from bots.errors import MessageGone, RateLimited
from bots.splitting import fence_after, join_parts, split_message, utf16_length
from bots.streaming import (
    DELIVERY_TIMEOUT,
    EMPTY_NOTICE,
    TYPING_INTERVAL,
    WARNING_PREFIX,
    StreamingEngine,
    StreamResult,
)
from bots.write_budget import WriteBudget, WriteLimits
from core import errors
from core.conversation import INTERRUPTED_NOTE
from tests.test_splitting import markdown_reply

#: Loop iterations the fake clock lets pass before it decides the loop is idle.
SETTLE_STEPS = 50
#: Real seconds any one engine run may take before the test fails instead of hanging.
RUN_TIMEOUT = 30.0
#: Float slack when comparing virtual timestamps built from sums of sleeps.
EPSILON = 1e-9
#: The budget window of a surface that allows any pace (a window must be longer than nothing).
TINY_WINDOW = 1e-3


class FakeClock:
    """Virtual time: `sleep` parks the caller until the clock reaches its deadline; the clock
    advances to the earliest deadline only when every task has settled, one sleeper at a time."""

    def __init__(self) -> None:
        self.now = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._new_sleeper = asyncio.Event()

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        waiter = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + max(seconds, 0.0), next(self._order), waiter))
        self._new_sleeper.set()
        await waiter

    async def run(self) -> None:
        while True:
            for _ in range(SETTLE_STEPS):
                await asyncio.sleep(0)
            if not self._sleepers:
                self._new_sleeper.clear()
                await self._new_sleeper.wait()
                continue
            deadline, _, waiter = heapq.heappop(self._sleepers)
            if not waiter.done():  # a cancelled sleeper does not move time
                self.now = max(self.now, deadline)
                waiter.set_result(None)


@pytest.fixture
async def clock() -> AsyncIterator[FakeClock]:
    fake = FakeClock()
    runner = asyncio.create_task(fake.run())
    yield fake
    runner.cancel()


@dataclass
class Call:
    at: float
    op: str  # "send" | "edit" | "typing"
    handle: int | None
    text: str
    final: bool


class RecordingSurface:
    """Records every call with its virtual time; `fail` may turn a call into an exception and
    `delay` makes the platform slow."""

    def __init__(
        self,
        clock: FakeClock | SystemClock,
        *,
        max_length: int = 4096,
        min_edit_interval: float = 1.0,
        length: Callable[[str], int] | None = None,
        fail: Callable[[Call], BaseException | None] | None = None,
        delay: float = 0.0,
    ) -> None:
        self.clock = clock
        self.max_length = max_length
        #: The pace of a chat with this reply alone in it: one write per interval.
        self.min_edit_interval = min_edit_interval
        self.budget = WriteBudget(WriteLimits(1, max(min_edit_interval, TINY_WINDOW)), clock=clock)
        if length is not None:
            self.length = length
        self.fail = fail
        self.delay = delay
        self.calls: list[Call] = []
        self.messages: list[str] = []

    async def _record(self, call: Call) -> None:
        self.calls.append(call)
        if self.fail is not None and (error := self.fail(call)) is not None:
            raise error
        if self.delay:
            await self.clock.sleep(self.delay)

    async def send(self, text: str, *, final: bool) -> object:
        await self._record(Call(self.clock.monotonic(), "send", len(self.messages), text, final))
        self.messages.append(text)
        return len(self.messages) - 1

    async def edit(self, handle: object, text: str, *, final: bool) -> None:
        assert isinstance(handle, int)
        await self._record(Call(self.clock.monotonic(), "edit", handle, text, final))
        self.messages[handle] = text

    async def typing(self) -> None:
        await self._record(Call(self.clock.monotonic(), "typing", None, "", False))

    @property
    def updates(self) -> list[Call]:
        return [call for call in self.calls if call.op != "typing"]

    def calls_of(self, handle: int) -> list[Call]:
        return [call for call in self.updates if call.handle == handle]

    def final_texts(self) -> list[str]:
        """Each message's final text; fails if a message never got a successful final call."""
        texts = []
        for handle, text in enumerate(self.messages):
            finals = [call for call in self.calls_of(handle) if call.final]
            assert finals, f"message {handle} never got its final text"
            assert finals[-1].text == text
            texts.append(text)
        return texts


async def paced(
    clock: FakeClock,
    pieces: Iterable[str],
    gap: float = 0.05,
    log: list[tuple[float, str]] | None = None,
) -> AsyncIterator[str]:
    """Yield `pieces` one per `gap` virtual seconds, logging when each was yielded."""
    for piece in pieces:
        await clock.sleep(gap)
        if log is not None:
            log.append((clock.now, piece))
        yield piece


async def run(engine: StreamingEngine, deltas) -> StreamResult:
    return await asyncio.wait_for(engine.run(deltas), RUN_TIMEOUT)


def text_at(log: list[tuple[float, str]], moment: float) -> str:
    return "".join(piece for at, piece in log if at <= moment)


def assert_spacing(surface: RecordingSurface) -> None:
    """The chat's budget of one write per interval held across all of the reply's messages."""
    times = [call.at for call in surface.updates]
    for earlier, later in itertools.pairwise(times):
        assert later - earlier >= surface.min_edit_interval - EPSILON, times


def chunks(text: str, rng: random.Random, largest: int = 40) -> list[str]:
    pieces, position = [], 0
    while position < len(text):
        step = rng.randint(1, largest)
        pieces.append(text[position : position + step])
        position += step
    return pieces


def balanced(part: str) -> bool:
    return fence_after(part + "\n", 0, len(part) + 1, None) is None


async def test_first_text_is_sent_as_soon_as_the_first_chunk_arrives(clock: FakeClock) -> None:
    surface = RecordingSurface(clock)

    async def deltas() -> AsyncIterator[str]:
        await clock.sleep(0.5)
        yield "Hello"
        await clock.sleep(100)
        yield " world"

    result = await run(StreamingEngine(surface, clock=clock), deltas())
    first = surface.updates[0]
    assert (first.op, first.text, first.final, first.at) == ("send", "Hello", False, 0.5)
    assert surface.final_texts() == ["Hello world"]
    assert result == StreamResult("Hello world", [0], None, False, delivered=True)


async def test_typing_repeats_until_the_first_text(clock: FakeClock) -> None:
    surface = RecordingSurface(clock)
    result = await run(StreamingEngine(surface, clock=clock), paced(clock, ["Hi"], gap=11))
    typing = [call.at for call in surface.calls if call.op == "typing"]
    sent_at = surface.updates[0].at
    assert typing[0] == 0.0
    assert len(typing) >= 3
    assert all(at < sent_at for at in typing)
    assert all(later - earlier <= TYPING_INTERVAL for earlier, later in itertools.pairwise(typing))
    assert sent_at - typing[-1] <= TYPING_INTERVAL
    assert result.text == "Hi"


async def test_typing_failures_do_not_stop_the_reply(clock: FakeClock) -> None:
    def fail(call: Call) -> BaseException | None:
        return RuntimeError("typing broke") if call.op == "typing" else None

    surface = RecordingSurface(clock, fail=fail)
    await run(StreamingEngine(surface, clock=clock), paced(clock, ["a", "b"], gap=9))
    assert sum(call.op == "typing" for call in surface.calls) >= 2
    assert surface.final_texts() == ["ab"]


async def test_whitespace_only_chunks_wait_for_visible_text(clock: FakeClock) -> None:
    surface = RecordingSurface(clock)
    pieces = ["", "  ", "\n", "\n", "Hi"]
    await run(StreamingEngine(surface, clock=clock), paced(clock, pieces, gap=1.0))
    first = surface.updates[0]
    assert (first.op, first.text, first.at) == ("send", "  \n\nHi", 5.0)
    assert sum(call.op == "typing" for call in surface.calls) >= 2


@pytest.mark.parametrize("interval", [1.0, 3.0])
async def test_edits_of_one_message_are_never_closer_than_the_interval(
    clock: FakeClock, interval: float
) -> None:
    surface = RecordingSurface(clock, min_edit_interval=interval)
    pieces = [f"word{i} " for i in range(400)]  # 20 virtual seconds of streaming
    await run(StreamingEngine(surface, clock=clock), paced(clock, pieces, gap=0.05))
    assert_spacing(surface)
    assert len(surface.updates) <= 20 / interval + 2
    assert len(surface.updates) >= 20 / interval - 1
    assert surface.final_texts() == ["".join(pieces)]


async def test_a_burst_is_coalesced_into_few_edits(clock: FakeClock) -> None:
    surface = RecordingSurface(clock)
    pieces = [f"{i} " for i in range(100)]
    await run(StreamingEngine(surface, clock=clock), paced(clock, pieces, gap=0.0))
    assert len(surface.updates) <= 3
    assert surface.updates[-1].final
    assert surface.final_texts() == ["".join(pieces)]


async def test_a_stream_that_never_yields_to_the_loop_is_one_final_send(clock: FakeClock) -> None:
    async def instant() -> AsyncIterator[str]:
        for i in range(100):
            yield f"{i} "

    surface = RecordingSurface(clock)
    await run(StreamingEngine(surface, clock=clock), instant())
    assert [(call.op, call.final) for call in surface.updates] == [("send", True)]
    assert surface.messages == ["".join(f"{i} " for i in range(100))]


async def test_final_text_waits_out_the_interval_then_is_delivered(clock: FakeClock) -> None:
    surface = RecordingSurface(clock, min_edit_interval=3.0)
    await run(StreamingEngine(surface, clock=clock), paced(clock, ["one", " two", " three"], 1.0))
    calls = surface.updates
    assert [(call.op, call.text, call.final) for call in calls] == [
        ("send", "one", False),
        ("edit", "one two three", True),
    ]
    assert calls[1].at == pytest.approx(calls[0].at + 3.0)


async def test_a_surface_that_renders_as_it_goes_is_spared_a_repeat_final_edit(
    clock: FakeClock,
) -> None:
    surface = RecordingSurface(clock, min_edit_interval=1.0)
    surface.renders_final = False  # type: ignore[attr-defined]
    pieces = ["one", " two", " three"]
    await run(StreamingEngine(surface, clock=clock), paced(clock, pieces, 2.0))
    # Every piece came after the interval, so each was shown as it arrived; nothing to repeat.
    assert [(call.op, call.text) for call in surface.updates] == [
        ("send", "one"),
        ("edit", "one two"),
        ("edit", "one two three"),
    ]


async def test_a_rendering_surface_gets_its_final_edit_even_when_the_text_is_shown(
    clock: FakeClock,
) -> None:
    surface = RecordingSurface(clock, min_edit_interval=1.0)
    await run(StreamingEngine(surface, clock=clock), paced(clock, ["one", " two"], 2.0))
    assert [(call.op, call.text, call.final) for call in surface.updates][-1] == (
        "edit",
        "one two",
        True,
    )


async def test_consuming_never_waits_for_a_slow_platform(clock: FakeClock) -> None:
    surface = RecordingSurface(clock, delay=30.0)
    log: list[tuple[float, str]] = []
    pieces = [f"{i} " for i in range(100)]
    result = await run(StreamingEngine(surface, clock=clock), paced(clock, pieces, 0.1, log))
    assert log[-1][0] == pytest.approx(10.0)  # the whole stream read while the first send hung
    assert surface.updates[0].at < 1.0
    assert surface.final_texts() == ["".join(pieces)]
    assert result.text == "".join(pieces)


@pytest.mark.parametrize(
    ("limit", "length", "emoji"),
    [(4096, None, False), (4096, utf16_length, True), (2000, None, True)],
)
async def test_long_reply_continues_in_new_messages(
    clock: FakeClock, limit: int, length, emoji: bool
) -> None:
    rng = random.Random(limit + emoji)
    text = markdown_reply(rng, 10_000, emoji=emoji)
    surface = RecordingSurface(clock, max_length=limit, length=length)
    result = await run(StreamingEngine(surface, clock=clock), paced(clock, chunks(text, rng), 0.02))
    count = length or len
    parts = surface.final_texts()
    assert len(parts) >= 3
    assert all(count(call.text) <= limit for call in surface.updates)
    assert all(balanced(part) for part in parts)
    assert join_parts(parts) == text
    assert parts == split_message(text, limit, count)
    assert result.handles == list(range(len(parts)))
    assert_spacing(surface)  # a new message waits its turn too: the chat counts every write


async def test_rate_limit_is_waited_out_then_the_newest_text_is_sent(clock: FakeClock) -> None:
    def fail(call: Call) -> BaseException | None:
        first_edit = call.op == "edit" and not any(c.op == "edit" for c in surface.calls[:-1])
        return RateLimited(7.1) if first_edit else None

    surface = RecordingSurface(clock, fail=fail)
    log: list[tuple[float, str]] = []
    pieces = [f"{i} " for i in range(80)]  # 20 virtual seconds
    await run(StreamingEngine(surface, clock=clock), paced(clock, pieces, 0.25, log))
    edits = [call for call in surface.updates if call.op == "edit"]
    limited, retry = edits[0], edits[1]
    assert retry.at >= limited.at + 7.1 - EPSILON
    assert retry.text == text_at(log, retry.at)
    assert len(retry.text) > len(limited.text)
    assert surface.final_texts() == ["".join(pieces)]


async def test_rate_limited_send_is_retried_not_dropped(clock: FakeClock) -> None:
    def fail(call: Call) -> BaseException | None:
        return RateLimited(5.0) if call.op == "send" and len(surface.updates) == 1 else None

    surface = RecordingSurface(clock, fail=fail)
    await run(StreamingEngine(surface, clock=clock), paced(clock, ["a", "b", "c"], 1.0))
    sends = [call for call in surface.updates if call.op == "send"]
    assert len(sends) == 2
    assert sends[1].at >= sends[0].at + 5.0 - EPSILON
    assert surface.final_texts() == ["abc"]


async def test_flaky_edits_are_retried_at_the_next_interval(clock: FakeClock) -> None:
    def fail(call: Call) -> BaseException | None:
        return ConnectionError("flaky") if call.op == "edit" and len(surface.calls) % 3 else None

    surface = RecordingSurface(clock, fail=fail)
    pieces = [f"{i} " for i in range(100)]
    await run(StreamingEngine(surface, clock=clock), paced(clock, pieces, 0.1))
    assert any(call.op == "edit" and call.final for call in surface.updates)
    assert_spacing(surface)
    assert surface.final_texts() == ["".join(pieces)]


async def test_final_edit_is_retried_until_the_delivery_timeout_then_given_up(
    clock: FakeClock,
) -> None:
    def fail(call: Call) -> BaseException | None:
        return RuntimeError("edit broken") if call.final else None

    surface = RecordingSurface(clock, fail=fail)
    result = await run(StreamingEngine(surface, clock=clock), paced(clock, ["a", "b"], 2.0))
    finals = [call for call in surface.updates if call.final]
    first, last = finals[0].at, finals[-1].at
    # The last try is at the timeout, or as soon after it as the chat's write pace allows: the
    # jittered backoff can put the try before it less than one interval earlier (2 runs in 40).
    assert (
        DELIVERY_TIMEOUT - EPSILON <= last - first <= DELIVERY_TIMEOUT + surface.min_edit_interval
    )
    # Backoff doubles from 1 s to a 30 s cap, each wait cut by up to half: 20 to ~45 tries.
    assert DELIVERY_TIMEOUT / 30 <= len(finals) <= DELIVERY_TIMEOUT / 15 + 8
    assert_spacing(surface)
    assert result.error is None
    assert not result.delivered and not result.gone


async def test_final_edit_failing_twice_still_lands(clock: FakeClock) -> None:
    failures = iter([True, True])

    def fail(call: Call) -> BaseException | None:
        return RuntimeError("blip") if call.final and next(failures, False) else None

    surface = RecordingSurface(clock, fail=fail)
    await run(StreamingEngine(surface, clock=clock), paced(clock, ["a", "b"], 2.0))
    assert surface.final_texts() == ["ab"]


async def test_provider_error_mid_stream_shows_partial_text_and_warning(clock: FakeClock) -> None:
    failure = errors.ResponseStatusError("upstream 502", status_code=502)

    async def deltas() -> AsyncIterator[str]:
        yield "partial"
        await clock.sleep(0.5)
        yield " answer"
        raise failure

    surface = RecordingSurface(clock)
    result = await run(StreamingEngine(surface, clock=clock), deltas())
    warning = WARNING_PREFIX + errors.describe(failure)
    assert surface.final_texts() == ["partial answer\n\n" + warning]
    assert result.error is failure
    assert result.text == "partial answer"


async def test_provider_error_before_any_text_is_just_the_warning(clock: FakeClock) -> None:
    async def deltas() -> AsyncIterator[str]:
        await clock.sleep(1)
        raise errors.TimeoutError("no answer in 60 s")
        yield ""  # pragma: no cover - makes this an async generator

    surface = RecordingSurface(clock)
    engine = StreamingEngine(surface, clock=clock, describe_error=lambda exc: f"failed: {exc}")
    result = await run(engine, deltas())
    assert surface.final_texts() == [WARNING_PREFIX + "failed: no answer in 60 s"]
    assert isinstance(result.error, errors.TimeoutError)


async def test_failing_describe_error_falls_back_to_the_core_description(
    clock: FakeClock,
) -> None:
    def broken(exc: BaseException) -> str:
        raise KeyError("no translation")

    async def deltas() -> AsyncIterator[str]:
        yield "text"
        raise errors.MissingAuthError("401")

    surface = RecordingSurface(clock)
    result = await run(StreamingEngine(surface, clock=clock, describe_error=broken), deltas())
    hint = errors.MissingAuthError.user_hint
    assert surface.final_texts() == [f"text\n\n{WARNING_PREFIX}{hint}"]
    assert isinstance(result.error, errors.MissingAuthError)


async def test_edits_failing_at_once_with_no_interval_do_not_spin(clock: FakeClock) -> None:
    def fail(call: Call) -> BaseException | None:
        return RuntimeError("always") if call.op == "edit" else None

    surface = RecordingSurface(clock, min_edit_interval=0.0, fail=fail)
    pieces = [f"{i} " for i in range(50)]
    await run(StreamingEngine(surface, clock=clock), paced(clock, pieces, 0.1))
    times = [call.at for call in surface.calls_of(0) if call.op == "edit"]
    # The least backoff (1 s, jittered down to half) spaces the tries, not the tiny window;
    # only the last try, made at the delivery timeout itself, may follow the one before sooner.
    assert all(b - a >= 0.5 - EPSILON for a, b in itertools.pairwise(times[:-1]))
    assert times[-1] - times[-2] > 0
    assert len(times) <= DELIVERY_TIMEOUT / 15 + 12  # backed off, not one try per interval


async def test_provider_error_inside_code_closes_the_block_before_the_warning(
    clock: FakeClock,
) -> None:
    async def deltas() -> AsyncIterator[str]:
        yield "```python\nprint(1)"
        raise errors.RateLimitError("429")

    surface = RecordingSurface(clock)
    await run(StreamingEngine(surface, clock=clock), deltas())
    hint = errors.RateLimitError.user_hint
    assert surface.final_texts() == [f"```python\nprint(1)\n```\n\n{WARNING_PREFIX}{hint}"]


async def test_cancellation_makes_a_final_edit_and_propagates(clock: FakeClock) -> None:
    closed = asyncio.Event()

    async def deltas() -> AsyncIterator[str]:
        try:
            yield "Hello"
            await clock.sleep(0.2)
            yield " world"
            await clock.sleep(1000)
            yield " never"
        finally:
            closed.set()

    surface = RecordingSurface(clock, min_edit_interval=3.0)
    task = asyncio.create_task(StreamingEngine(surface, clock=clock).run(deltas()))
    await clock.sleep(1.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, RUN_TIMEOUT)
    assert closed.is_set()
    assert surface.final_texts() == [f"Hello world\n\n{INTERRUPTED_NOTE}"]
    assert_spacing(surface)


async def test_cancellation_closes_an_open_code_block_before_the_note(clock: FakeClock) -> None:
    async def deltas() -> AsyncIterator[str]:
        yield "```python\nprint(1)"
        await clock.sleep(1000)

    surface = RecordingSurface(clock)
    task = asyncio.create_task(StreamingEngine(surface, clock=clock).run(deltas()))
    await clock.sleep(1.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, RUN_TIMEOUT)
    assert surface.final_texts() == [f"```python\nprint(1)\n```\n\n{INTERRUPTED_NOTE}"]


async def test_cancellation_before_any_text_sends_the_note_alone(clock: FakeClock) -> None:
    async def deltas() -> AsyncIterator[str]:
        await clock.sleep(1000)
        yield "late"

    surface = RecordingSurface(clock)
    task = asyncio.create_task(StreamingEngine(surface, clock=clock).run(deltas()))
    await clock.sleep(5.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, RUN_TIMEOUT)
    # The question was taken and will not be answered: the user is told so.
    assert surface.final_texts() == [INTERRUPTED_NOTE]


async def test_cancellation_gives_up_on_a_hung_platform_within_the_grace(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(streaming, "CANCEL_GRACE", 0.05)
    hung = asyncio.Event()
    abandoned = asyncio.Event()

    class HungSurface(RecordingSurface):
        async def edit(self, handle: object, text: str, *, final: bool) -> None:
            try:
                await hung.wait()  # never set: the platform does not answer
            finally:
                abandoned.set()

    async def deltas() -> AsyncIterator[str]:
        yield "Hello"
        await clock.sleep(2)
        yield " world"
        await clock.sleep(1000)

    task = asyncio.create_task(StreamingEngine(HungSurface(clock), clock=clock).run(deltas()))
    await clock.sleep(5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, RUN_TIMEOUT)
    await asyncio.wait_for(abandoned.wait(), RUN_TIMEOUT)


async def test_cancelled_error_from_the_deltas_is_not_swallowed(clock: FakeClock) -> None:
    async def deltas() -> AsyncIterator[str]:
        yield "Hello"
        await clock.sleep(2)
        raise asyncio.CancelledError

    surface = RecordingSurface(clock)
    with pytest.raises(asyncio.CancelledError):
        await run(StreamingEngine(surface, clock=clock), deltas())
    assert surface.final_texts() == [f"Hello\n\n{INTERRUPTED_NOTE}"]


@pytest.mark.parametrize("on", ["send", "edit"])
async def test_message_gone_stops_delivery_and_consumption(clock: FakeClock, on: str) -> None:
    closed = asyncio.Event()
    read: list[str] = []

    async def endless() -> AsyncIterator[str]:
        try:
            for i in itertools.count():
                await clock.sleep(0.1)
                read.append(str(i))
                yield f"{i} "
        finally:
            closed.set()

    def fail(call: Call) -> BaseException | None:
        return MessageGone("deleted") if call.op == on else None

    surface = RecordingSurface(clock, fail=fail)
    result = await run(StreamingEngine(surface, clock=clock), endless())
    assert result.gone
    assert closed.is_set()
    assert surface.updates[-1].op == on
    assert result.handles == ([] if on == "send" else [0])
    count = len(read)
    await clock.sleep(10)
    assert len(read) == count


async def test_gone_calls_aclose_on_the_reply(clock: FakeClock) -> None:
    class Reply:
        """Like core.conversation.Reply: an async iterator with aclose, not a generator."""

        def __init__(self) -> None:
            self.closed = False

        def __aiter__(self) -> Reply:
            return self

        async def __anext__(self) -> str:
            await clock.sleep(0.1)
            return "x"

        async def aclose(self) -> None:
            self.closed = True

    surface = RecordingSurface(
        clock, fail=lambda call: MessageGone() if call.op == "edit" else None
    )
    reply = Reply()
    result = await run(StreamingEngine(surface, clock=clock), reply)
    assert result.gone and reply.closed


@pytest.mark.parametrize("pieces", [[], ["", ""], [" ", "\n\n"]])
async def test_empty_stream_sends_a_notice(clock: FakeClock, pieces: list[str]) -> None:
    surface = RecordingSurface(clock)
    result = await run(StreamingEngine(surface, clock=clock), paced(clock, pieces))
    assert [(call.op, call.final) for call in surface.updates] == [("send", True)]
    assert surface.messages[0].strip() == EMPTY_NOTICE
    assert result.text == "".join(pieces)


async def test_works_with_the_real_clock() -> None:
    async def deltas() -> AsyncIterator[str]:
        for i in range(20):
            await asyncio.sleep(0.001)
            yield f"{i} "

    real = SystemClock()
    surface = RecordingSurface(real, min_edit_interval=0.01)
    result = await run(StreamingEngine(surface, clock=real), deltas())
    assert_spacing(surface)
    assert surface.final_texts() == [result.text]
    assert result.text == "".join(f"{i} " for i in range(20))
