"""The reply's state machine on its own: the table of moves, the storage status of each state, and
the guards of the methods the conversation service drives it with."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from core.conversation import Author, ChatRef, IllegalMoveError, Reply, ReplyState
from core.conversation.reply import MOVES
from core.fair_use import ReplySlots
from storage import MessageStatus
from tests.test_conversation_fakes import ALICE, WAIT, chat

Q, S = ReplyState.QUEUED, ReplyState.STREAMING
DONE, ERROR = ReplyState.DONE, ReplyState.ERROR
STOPPED, INTERRUPTED = ReplyState.STOPPED, ReplyState.INTERRUPTED

#: The life of a reply as the service's docstring tells it, written out pair by pair.
ALLOWED = {
    (Q, S),
    (Q, ERROR),
    (Q, STOPPED),
    (Q, INTERRUPTED),
    (S, DONE),
    (S, ERROR),
    (S, STOPPED),
    (S, INTERRUPTED),
}
PAIRS = list(itertools.product(ReplyState, repeat=2))


def reach(state: ReplyState) -> Reply:
    """A reply brought to `state` the way the service brings one there."""
    reply = Reply(chat(), ALICE)
    if state is S or state is DONE:
        assert reply.begin()
    if state is DONE:
        reply.end(DONE)
    elif state is ERROR:
        reply.end(ERROR, RuntimeError("store down"))
    elif state is STOPPED:
        reply.stop()
        assert not reply.begin()
    elif state is INTERRUPTED:
        reply.end(INTERRUPTED)
    assert reply.state is state
    return reply


def attempt(reply: Reply, target: ReplyState) -> None:
    """Ask for the move to `target` through the method the service would use."""
    if target is Q:  # nothing puts a reply back in the queue; only the table can say so
        reply._move(Q)
    elif target is S:
        reply.begin()
    else:
        reply.end(target, RuntimeError("failed") if target is ERROR else None)


def test_the_table_is_the_documented_life() -> None:
    assert {(a, b) for a, b in PAIRS if b in MOVES[a]} == ALLOWED
    assert {state for state in ReplyState if state.final} == {DONE, ERROR, STOPPED, INTERRUPTED}


@pytest.mark.parametrize(("start", "target"), PAIRS, ids=[f"{a}-{b}" for a, b in PAIRS])
async def test_every_allowed_move_works_and_every_other_raises(
    start: ReplyState, target: ReplyState
) -> None:
    reply = reach(start)
    if (start, target) in ALLOWED:
        attempt(reply, target)
        assert reply.state is target
    else:
        with pytest.raises(IllegalMoveError):
            attempt(reply, target)
        assert reply.state is start


def test_the_storage_status_follows_from_the_state() -> None:
    assert {state: state.stored_status for state in ReplyState} == {
        Q: MessageStatus.STREAMING,
        S: MessageStatus.STREAMING,
        DONE: MessageStatus.COMPLETE,
        ERROR: MessageStatus.ERROR,
        STOPPED: MessageStatus.INTERRUPTED,
        INTERRUPTED: MessageStatus.INTERRUPTED,
    }
    for state in ReplyState:
        assert reach(state).status is state.stored_status


async def test_an_end_is_final_and_carries_an_error_exactly_when_it_is_one() -> None:
    reply = reach(S)
    with pytest.raises(IllegalMoveError):
        reply.end(S)
    with pytest.raises(ValueError):
        reply.end(ERROR)
    with pytest.raises(ValueError):
        reply.end(DONE, RuntimeError("not an error end"))
    assert reply.state is S


async def test_only_a_streaming_reply_is_stoppable() -> None:
    for state in ReplyState:
        reply = reach(state)
        if state is S:
            with reply.stoppable():
                pass
        else:
            with pytest.raises(IllegalMoveError), reply.stoppable():
                pass


async def test_a_stop_cancels_the_reading_of_the_model_once() -> None:
    reply = reach(S)
    entered = asyncio.Event()

    async def read_model() -> None:
        with reply.stoppable():
            entered.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(read_model())
    reply.attach(task)
    await asyncio.wait_for(entered.wait(), WAIT)
    assert reply.stop() and reply.stop()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, WAIT)
    assert task.cancelling() == 1  # asked twice, cancelled once
    assert reply.stop_asked and not reply.stop()  # out of the window: nothing left to cut


async def test_the_consumer_sees_the_pieces_then_the_end() -> None:
    reply = reach(S)
    reply.add("a")
    reply.add("b")
    reply.end(DONE)
    assert [piece async for piece in reply] == ["a", "b"]
    assert await asyncio.wait_for(reply.wait(), WAIT) is MessageStatus.COMPLETE
    failed = reach(S)
    failed.end(ERROR, RuntimeError("provider down"))
    with pytest.raises(RuntimeError, match="provider down"):
        [piece async for piece in failed]


async def test_a_wait_cancelled_from_outside_takes_no_model_slot_with_it() -> None:
    """`unless_stopped` cancelled by its caller's cancellation (not a stop) cancels the wait:
    left running, it would take the slot when its turn came and never give it back."""
    slots = ReplySlots(1)
    await slots.acquire(lambda ahead: None)  # the one slot is held
    reply = Reply(ChatRef("telegram", "1", ""), Author("1", "A"))
    queued = asyncio.Event()
    waiting = asyncio.ensure_future(reply.unless_stopped(slots.acquire(lambda ahead: queued.set())))
    await asyncio.wait_for(queued.wait(), 1)
    waiting.cancel()
    await asyncio.wait([waiting])
    assert slots.waiting == 0  # the cancelled wait left the queue
    slots.release()
    await asyncio.wait_for(slots.acquire(lambda ahead: None), 1)  # and the slot is free
