"""The streaming engine every bot adapter shares: text deltas in, send/edit calls out.

It is llmcord's streaming loop as a class that knows only a `Surface` (send, edit, typing).
Two tasks share the reply text: one consumes the deltas and only appends, so a slow platform
never slows the model stream; the other delivers, one call at a time, always with the newest
text, so every delta that arrives while a call is in flight or waiting is folded into the next
edit. Each message keeps its own clock (llmcord has one global clock): its next edit starts no
sooner than `min_edit_interval` after its last send or edit started.

A reply longer than `max_length` is split exactly as `bots.splitting.split_message` splits the
whole text (see there for how the parts join back); a finished part gets a final edit and the
reply continues in a new message. A part holding only whitespace is never sent (platforms reject
such messages), so neither is a reply's trailing whitespace that overflows into a new part.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from bots.errors import MessageGone, RateLimited
from bots.splitting import Fence, fence_after, next_cut, reopening
from core import errors
from core.conversation import SHUTDOWN_NOTE

logger = logging.getLogger(__name__)

#: Seconds between typing indicators: Telegram's lasts 5 s, Discord's 10 s.
TYPING_INTERVAL = 4.0
#: Tries of a message's final text before it is given up (rate limits are waited out, not counted).
FINAL_ATTEMPTS = 3
#: Seconds a cancelled stream may spend on its last edit, and on stopping the deltas.
CANCEL_GRACE = 5.0
#: Floor under a surface's `min_edit_interval`, so a surface whose edits fail at once (or that
#: allows any rate) cannot make the engine retry in a tight loop.
MIN_EDIT_INTERVAL = 0.1
#: Starts the line that tells the user the model failed.
WARNING_PREFIX = "⚠️ "
#: Shown when the model answered nothing visible, as a message cannot be empty.
EMPTY_NOTICE = "(empty reply)"


class Clock(Protocol):
    """Time as the engine sees it; tests pass a virtual clock."""

    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock: `time.monotonic` and `asyncio.sleep`."""

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


SYSTEM_CLOCK = SystemClock()


class Surface(Protocol):
    """One reply's view of a platform; the adapter implements it.

    It may also have `length(text) -> int`, how the platform counts a message's length (Telegram
    counts UTF-16 code units: `bots.splitting.utf16_length`); without it, `len` is used.
    `final=True` marks the last text a message will ever get: the adapter may render formatting.
    A surface with `renders_final = False` (Discord renders Markdown itself) is spared a final
    edit that would repeat the text already shown.
    "Message is not modified" answers are the surface's to swallow.
    """

    max_length: int
    min_edit_interval: float

    async def send(self, text: str, *, final: bool) -> object:
        """Post a new message and return its handle: the first send replies to the user's
        message, each later one continues the reply."""
        ...

    async def edit(self, handle: object, text: str, *, final: bool) -> None: ...

    async def typing(self) -> None: ...


@dataclass
class StreamResult:
    """How a reply went. `text` is the model's text as streamed (without the warning or notice
    the engine may add); `handles` are the sent messages' handles, in order."""

    text: str
    handles: list[object] = field(default_factory=list)
    error: BaseException | None = None
    gone: bool = False


class StreamingEngine:
    """Streams replies onto one surface; `run` may be called once per reply."""

    def __init__(
        self,
        surface: Surface,
        *,
        describe_error: Callable[[BaseException], str] = errors.describe,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._surface = surface
        self._describe_error = describe_error
        self._clock = clock

    async def run(self, deltas: AsyncIterable[str]) -> StreamResult:
        """Stream `deltas` into messages until the final text is delivered.

        An Exception from `deltas` is shown as a warning line and returned as `.error`, never
        raised. Cancellation makes a bounded best-effort final edit, then propagates.
        """
        return await _Stream(self._surface, self._describe_error, self._clock).run(deltas)


@dataclass
class _Message:
    """One platform message of the reply: its content is the text from `start` on."""

    start: int
    fence: Fence | None
    prefix: str
    handle: object | None = None
    shown: str | None = None
    last_call: float | None = None
    failures: int = 0


class _Stream:
    """The state of one run: the text so far, shared by the consuming and delivering tasks."""

    def __init__(
        self, surface: Surface, describe_error: Callable[[BaseException], str], clock: Clock
    ) -> None:
        self._surface = surface
        self._describe_error = describe_error
        self._clock = clock
        self._length: Callable[[str], int] = getattr(surface, "length", len)
        self._limit = surface.max_length
        self._renders_final: bool = getattr(surface, "renders_final", True)
        self._interval = max(surface.min_edit_interval, MIN_EDIT_INTERVAL)
        self._text = ""
        self._final: str | None = None
        self._error: BaseException | None = None
        self._gone = False
        self._handles: list[object] = []
        self._changed = asyncio.Event()
        self._typing: asyncio.Task[None] | None = None

    async def run(self, deltas: AsyncIterable[str]) -> StreamResult:
        consume = asyncio.create_task(self._consume(deltas))
        deliver = asyncio.create_task(self._deliver())
        self._typing = asyncio.create_task(self._keep_typing())
        try:
            await asyncio.wait({consume, deliver}, return_when=asyncio.FIRST_COMPLETED)
            if consume.done() and consume.cancelled():
                raise asyncio.CancelledError  # the deltas themselves were cancelled
            if not consume.done():  # delivery stopped first: the message is gone
                await self._stop_consuming(consume, deltas)
            await asyncio.wait({deliver})
            deliver.result()  # a bug in delivery surfaces here rather than hiding
        except asyncio.CancelledError:
            await self._finish_cancelled(consume, deliver, deltas)
            raise
        finally:
            self._stop_typing()
        return StreamResult(self._text, list(self._handles), self._error, self._gone)

    async def _consume(self, deltas: AsyncIterable[str]) -> None:
        try:
            async for delta in deltas:
                if delta:
                    self._text += delta
                    self._changed.set()
        except Exception as exc:  # the provider failed: the user sees a warning instead
            logger.warning("reply stream failed: %r", exc)
            self._error = exc
        self._close_with(self._closing_text())

    def _closing_text(self) -> str:
        text = self._text
        if self._error is not None:
            warning = WARNING_PREFIX + self._describe(self._error)
            return text + _close_open_fence(text) + "\n\n" + warning if text.strip() else warning
        return text if text.strip() else text + EMPTY_NOTICE

    def _describe(self, exc: BaseException) -> str:
        """The injected description, falling back to the core's: a failing describer must not
        leave the reply without its final text."""
        try:
            return self._describe_error(exc)
        except Exception:
            logger.exception("describe_error failed")
            return errors.describe(exc)

    def _close_with(self, final_text: str) -> None:
        if self._final is None:
            self._final = final_text
            self._changed.set()

    async def _deliver(self) -> None:
        message = self._new_message(0, None)
        while not self._gone:
            self._changed.clear()
            finished = self._final is not None
            text = self._final if self._final is not None else self._text
            cut = next_cut(text, message.start, message.fence, self._limit, self._length)
            if cut is not None:
                if text[message.start : cut.end].strip():
                    await self._finish(message, cut.part)
                message = self._new_message(cut.end, cut.fence)
                continue
            has_text = bool(text[message.start :].strip())
            current = message.prefix + text[message.start :]
            if finished:
                if has_text:
                    await self._finish(message, current)
                return
            if not has_text or current == message.shown:
                await self._changed.wait()
            elif (wait := self._wait_time(message)) > 0:
                await self._clock.sleep(wait)
            else:
                await self._attempt(message, current, final=False)

    def _new_message(self, start: int, fence: Fence | None) -> _Message:
        return _Message(start, fence, reopening(fence, self._limit, self._length))

    async def _finish(self, message: _Message, text: str) -> None:
        """Deliver a message's final text: wait out its interval, retry a bounded number of times."""
        message.failures = 0
        if text == message.shown and not self._renders_final:
            return
        while not self._gone:
            if message.failures >= FINAL_ATTEMPTS:
                logger.error(
                    "gave up on a reply message's final text after %d tries", FINAL_ATTEMPTS
                )
                return
            if (wait := self._wait_time(message)) > 0:
                await self._clock.sleep(wait)
            elif await self._attempt(message, text, final=True):
                return

    def _wait_time(self, message: _Message) -> float:
        if message.last_call is None:
            return 0.0
        return message.last_call + self._interval - self._clock.monotonic()

    async def _attempt(self, message: _Message, text: str, *, final: bool) -> bool:
        """One send or edit; True if it got through. A rate limit is waited out here, MessageGone
        ends the stream, any other error is logged and counted."""
        message.last_call = self._clock.monotonic()
        action = "send" if message.handle is None else "edit"
        try:
            if message.handle is None:
                message.handle = await self._surface.send(text, final=final)
                self._handles.append(message.handle)
                self._stop_typing()
            else:
                await self._surface.edit(message.handle, text, final=final)
        except RateLimited as limit:
            logger.info("rate limited on %s; waiting %.1f s", action, limit.retry_after)
            await self._clock.sleep(limit.retry_after)
            return False
        except MessageGone:
            logger.info("reply message gone on %s; streaming stops", action)
            self._gone = True
            return False
        except Exception:
            logger.warning("could not %s a reply message", action, exc_info=True)
            message.failures += 1
            return False
        message.shown = text
        return True

    async def _keep_typing(self) -> None:
        while True:
            try:
                await self._surface.typing()
            except Exception:  # the indicator is cosmetic: never worth failing a reply over
                logger.debug("typing indicator failed", exc_info=True)
            await self._clock.sleep(TYPING_INTERVAL)

    def _stop_typing(self) -> None:
        if self._typing is not None:
            self._typing.cancel()

    async def _stop_consuming(
        self, consume: asyncio.Task[None], deltas: AsyncIterable[str]
    ) -> None:
        """Stop reading the model and tell the deltas' owner (e.g. `Reply.aclose`) we gave up."""
        consume.cancel()
        await asyncio.wait({consume}, timeout=CANCEL_GRACE)
        aclose = getattr(deltas, "aclose", None)
        if aclose is not None:
            try:
                await asyncio.wait_for(aclose(), CANCEL_GRACE)
            except Exception:
                logger.warning("could not close the reply stream", exc_info=True)

    async def _finish_cancelled(
        self, consume: asyncio.Task[None], deliver: asyncio.Task[None], deltas: AsyncIterable[str]
    ) -> None:
        """Best effort, bounded: show what the reply had, with the shutdown note; stop the deltas.
        The delivery runs on in its own task, so the cancellation of `run` does not interrupt a
        send half-way."""
        if not consume.done():
            await self._stop_consuming(consume, deltas)
        self._close_with(_with_shutdown_note(self._text))
        await asyncio.wait({deliver}, timeout=CANCEL_GRACE)
        if not deliver.done():
            deliver.cancel()
        elif not deliver.cancelled() and (crash := deliver.exception()) is not None:
            logger.error("reply delivery failed", exc_info=crash)


def _with_shutdown_note(text: str) -> str:
    """The text so far and, under it, the note that the bot's stop cut the reply short.

    Only a stop of the bot cancels a reply's engine (`/stop` and a deleted message end the
    deltas instead), so the note is never shown for those. A reply cut before its first text
    still gets the note, so the user knows the question went unanswered.
    """
    if not text.strip():
        return SHUTDOWN_NOTE
    return text + _close_open_fence(text) + "\n\n" + SHUTDOWN_NOTE


def _close_open_fence(text: str) -> str:
    """The fence line that closes a code block `text` leaves open, so a warning after it shows
    as text rather than code."""
    fence = fence_after(text + "\n", 0, len(text) + 1, None)
    if fence is None:
        return ""
    return ("" if text.endswith("\n") else "\n") + fence.marker
