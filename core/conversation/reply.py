"""One answer's life, written once: its states, the moves between them, and what the store records.

    QUEUED ──▶ STREAMING ──┬──▶ DONE
      │                    ├──▶ ERROR
      │                    ├──▶ STOPPED
      │                    └──▶ INTERRUPTED
      ├──▶ ERROR         its user message could not be stored
      ├──▶ STOPPED       a stop was asked while it waited: it never runs
      └──▶ INTERRUPTED   the task running it was cancelled while it waited

QUEUED lasts from the moment an adapter hands the message over until the reply's turn: its user
message is being stored, then it waits for its author's previous reply in the chat. STREAMING lasts from its
turn until its outcome is stored: loading the context, reading the model, saving. Only while the
model is being read (`stoppable()`) does a stop cut it; the final save is never cut, or the row
would stay 'streaming'. The four ends are final and the move to one is made after the save, so
a consumer that sees the end (`wait()`, the end of iteration) finds the outcome in the store.

STOPPED and INTERRUPTED are both stored as 'interrupted', with the partial text. STOPPED: someone
asked (`/stop`, the consumer leaving, the service closing). INTERRUPTED: the task running the
reply was cancelled by anything else (the event loop shutting down under it).

The consumer iterates the deltas and may `aclose()`. The conversation service drives the reply
through the methods under "The service's side"; every change of state goes through `_move`,
which refuses any move `MOVES` does not list, so a bug in the driver raises at once instead of,
say, ending a reply twice.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Awaitable, Iterator, Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import Any, TypeVar

from storage import MessageStatus

from ..errors import IllegalMoveError
from ..types import Reasoning
from .chat import Author, ChatRef

T = TypeVar("T")

#: The line a chat shows under a reply the user will never see finished: one a stop of the bot
#: cut short (SIGTERM, Ctrl-C, a restart), and one a crash or a long outage left cut off on
#: screen, marked at the next start. The text above it is all there is; the question can be
#: asked again. One text for both, so a user learns one sign.
INTERRUPTED_NOTE = "⏹ Interrupted: this reply was cut off before it was complete."
#: The line above a reply to a message with images, when the chat's model cannot see: the model
#: got the text only, and the user learns why its answer ignores the picture, and what to do.
BLIND_MODEL_NOTE = (
    "🖼 This model cannot see images; I read only your text. Switch to a vision model with /model."
)


class ReplyState(StrEnum):
    QUEUED = "queued"
    STREAMING = "streaming"
    DONE = "done"
    ERROR = "error"
    STOPPED = "stopped"
    INTERRUPTED = "interrupted"

    @property
    def final(self) -> bool:
        """No move leads out of it."""
        return not MOVES[self]

    @property
    def stored_status(self) -> MessageStatus:
        """The status the store records for a reply in this state."""
        return STORED_STATUS[self]


_ENDS = frozenset({ReplyState.ERROR, ReplyState.STOPPED, ReplyState.INTERRUPTED})

#: Every move a reply may make. A queued reply cannot be DONE: it has not said anything.
MOVES: Mapping[ReplyState, frozenset[ReplyState]] = MappingProxyType(
    {
        ReplyState.QUEUED: _ENDS | {ReplyState.STREAMING},
        ReplyState.STREAMING: _ENDS | {ReplyState.DONE},
        ReplyState.DONE: frozenset(),
        ReplyState.ERROR: frozenset(),
        ReplyState.STOPPED: frozenset(),
        ReplyState.INTERRUPTED: frozenset(),
    }
)

#: The storage status of each state. A queued reply has no row yet; it reads as 'streaming',
#: which is what its row says from the moment it exists until the outcome is saved.
STORED_STATUS: Mapping[ReplyState, MessageStatus] = MappingProxyType(
    {
        ReplyState.QUEUED: MessageStatus.STREAMING,
        ReplyState.STREAMING: MessageStatus.STREAMING,
        ReplyState.DONE: MessageStatus.COMPLETE,
        ReplyState.ERROR: MessageStatus.ERROR,
        ReplyState.STOPPED: MessageStatus.INTERRUPTED,
        ReplyState.INTERRUPTED: MessageStatus.INTERRUPTED,
    }
)


async def _first_of_future(task: asyncio.Future[T], event: asyncio.Event) -> None:
    """Until `task` is done or `event` set; at once if `event` is set already."""
    if event.is_set():
        return
    waiter = asyncio.ensure_future(event.wait())
    either: list[asyncio.Future[Any]] = [task, waiter]
    try:
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()


async def _first_of(*events: asyncio.Event) -> None:
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


class Reply:
    """One answer in the making: an async iterator of text deltas (`async for delta in reply`).

    A thinking model's reasoning is kept apart (`reasoning`): the plain iteration leaves it
    out, `pieces()` gives it in its place among the deltas, as `core.types.Reasoning`.
    It can be iterated once, either way. Leaving the iteration early (`break`, `aclose()`, the consuming
    task being cancelled) stops the reply and keeps its partial text as 'interrupted'.
    """

    def __init__(self, chat: ChatRef, author: Author, *, queued_behind_own: bool = False) -> None:
        self.chat = chat
        #: Whose question it answers: one person's replies in a chat take turns.
        self.author = author
        self._queued_behind_own = queued_behind_own
        #: DB id of the assistant row, set once streaming starts.
        self.message_id: int | None = None
        #: DB id of the user message this answers, set once it is stored.
        self.user_message_id: int | None = None
        self.model: str | None = None
        self.provider: str | None = None
        #: A line for the user to read above the answer (`BLIND_MODEL_NOTE`); not stored.
        self.notice: str | None = None
        #: Older turns of the conversation were left out of this reply's context, and the chat
        #: has not been told yet in this conversation: the bots add a footer line; not stored.
        self.history_cut = False
        #: Replies waiting ahead of it for a model call (MAX_CONCURRENT_REPLIES), while it
        #: waits too; None otherwise. `queue_moved` tells when it changes.
        self.queue_position: int | None = None
        self._queue_moved = asyncio.Event()
        #: How many characters of the text the store holds (its last checkpoint).
        self.saved_length = 0
        #: Why the reply failed (state ERROR); re-raised to the consumer.
        self.error: BaseException | None = None
        self._state = ReplyState.QUEUED
        self._parts: list[str] = []
        self._thoughts: list[str] = []
        self._deltas: asyncio.Queue[str | Reasoning | None] = asyncio.Queue()
        self._iterated = False
        self._task: asyncio.Task[None] | None = None
        #: True while the model is being read: then, and only then, a stop cancels the task.
        self._stoppable = False
        self._stop_asked = asyncio.Event()
        self._ended = asyncio.Event()
        self._turn_over = asyncio.Event()

    # The consumer's side.

    @property
    def state(self) -> ReplyState:
        return self._state

    @property
    def status(self) -> MessageStatus:
        """The state as the store records it: 'streaming' until the outcome is saved."""
        return self._state.stored_status

    @property
    def text(self) -> str:
        """The text so far."""
        return "".join(self._parts)

    @property
    def reasoning(self) -> str:
        """The model's thinking so far, apart from the text; stored apart, never context."""
        return "".join(self._thoughts)

    @property
    def queued_behind_own(self) -> bool:
        """When it arrived, its author's previous reply in the chat was still in flight, so
        it waits for that one's turn: a delivery shows it as queued rather than silent."""
        return self._queued_behind_own

    async def queue_moved(self) -> int | None:
        """Wait until `queue_position` changes (at once if it changed since the last call);
        return it. One consumer at a time."""
        await self._queue_moved.wait()
        self._queue_moved.clear()
        return self.queue_position

    def __aiter__(self) -> AsyncGenerator[str, None]:
        return self._text_deltas(self.pieces())

    @staticmethod
    async def _text_deltas(
        pieces: AsyncGenerator[str | Reasoning, None],
    ) -> AsyncGenerator[str, None]:
        async with contextlib.aclosing(pieces):
            async for piece in pieces:
                if isinstance(piece, str):
                    yield piece

    def pieces(self) -> AsyncGenerator[str | Reasoning, None]:
        """The text deltas and, in their place among them, the reasoning pieces."""
        if self._iterated:
            raise RuntimeError("A Reply can be iterated only once.")
        self._iterated = True
        return self._deltas_until_end()

    async def _deltas_until_end(self) -> AsyncGenerator[str | Reasoning, None]:
        # A fresh generator, not referenced by the Reply: when the consumer breaks out, it is
        # collected at once and the event loop's async-generator hook runs its `finally`.
        finished = False
        try:
            while (delta := await self._deltas.get()) is not None:
                yield delta
            finished = True
        finally:
            if not finished:
                await self.aclose()
        if self.error is not None:
            raise self.error

    async def wait(self) -> MessageStatus:
        """Wait until the reply's outcome is stored; return its status."""
        await self._ended.wait()
        return self.status

    async def aclose(self) -> None:
        """The consumer gave up: stop the reply, keep the partial text as 'interrupted'."""
        if self._ended.is_set():
            return
        self.stop()
        await self._ended.wait()

    # The service's side: the conversation service alone calls these, in this order of life.

    def attach(self, task: asyncio.Task[None]) -> None:
        """The task that does the reply's work; a stop cancels it while the model is read."""
        self._task = task

    def settle_user_message(self, message_id: int | None) -> None:
        """Its user message is stored (`message_id`) or never will be (None)."""
        self.user_message_id = message_id

    async def wait_turn(self, previous: Reply) -> None:
        """Until `previous`, its author's reply in the chat before this one, is over, or a
        stop is asked."""
        await _first_of(previous._turn_over, self._stop_asked)

    def move_in_queue(self, ahead: int | None) -> None:
        """How many replies wait ahead of it for a model call now (None: it waits no more)."""
        if ahead != self.queue_position:
            self.queue_position = ahead
            self._queue_moved.set()

    async def unless_stopped(self, waiting: Awaitable[T]) -> T | None:
        """`waiting`'s result; or None, with `waiting` cancelled, if a stop is asked first
        (a stop asked before also wins)."""
        task = asyncio.ensure_future(waiting)
        try:
            await _first_of_future(task, self._stop_asked)
        except asyncio.CancelledError:  # cancelled from outside: the wait must not live on
            task.cancel()  # (a slot or an admission it would take is never given back)
            await asyncio.wait([task])
            raise
        if task.done():
            return task.result()
        task.cancel()
        await asyncio.wait([task])  # its own cancellation is not ours: not raised here
        return None

    def begin(self) -> bool:
        """Its turn came: QUEUED → STREAMING, True. If a stop was asked while it waited, it
        never runs: QUEUED → STOPPED, False."""
        if self._stop_asked.is_set():
            self.end(ReplyState.STOPPED)
            return False
        self._move(ReplyState.STREAMING)
        return True

    @contextlib.contextmanager
    def stoppable(self) -> Iterator[None]:
        """Around the reading of the model: inside, `stop()` cancels the task doing it."""
        if self._state is not ReplyState.STREAMING:
            raise IllegalMoveError(
                f"Only a streaming reply can be stopped, not a {self._state} one."
            )
        self._stoppable = True
        try:
            yield
        finally:
            self._stoppable = False

    @property
    def stop_asked(self) -> bool:
        """Someone asked the reply to stop: a cancellation inside `stoppable()` is that stop."""
        return self._stop_asked.is_set()

    def stop(self) -> bool:
        """Ask the reply to stop. A queued one will never run; one reading the model is cut
        there (its task cancelled, once). True if it was reading the model."""
        asked_before = self._stop_asked.is_set()
        self._stop_asked.set()
        if not self._stoppable or self._task is None:
            return False
        if not asked_before:
            self._task.cancel()
        return True

    def add(self, piece: str) -> None:
        """A piece of the model's text: kept, and handed to the consumer."""
        self._parts.append(piece)
        self._deltas.put_nowait(piece)

    def add_reasoning(self, piece: str) -> None:
        """A piece of the model's thinking: kept apart from the text, and handed on."""
        self._thoughts.append(piece)
        self._deltas.put_nowait(Reasoning(piece))

    def end(self, state: ReplyState, error: BaseException | None = None) -> None:
        """The outcome is stored, or there was none to store: move to a final `state` and let
        the consumer see the end (and `error`, re-raised, for ERROR)."""
        if not state.final:
            raise IllegalMoveError(f"A reply ends in a final state, not {state}.")
        if (state is ReplyState.ERROR) != (error is not None):
            raise ValueError("A reply ends in ERROR with its error, and otherwise without one.")
        self._move(state)
        self.error = error
        self._deltas.put_nowait(None)
        self._ended.set()

    def end_turn(self) -> None:
        """The reply's task is done, and so is the turn of every reply queued before it."""
        self._turn_over.set()

    async def wait_turn_over(self) -> None:
        await self._turn_over.wait()

    def _move(self, to: ReplyState) -> None:
        if to not in MOVES[self._state]:
            raise IllegalMoveError(f"A reply cannot go from {self._state} to {to}.")
        self._state = to
