"""The streaming engine every bot adapter shares: text deltas in, send/edit calls out.

It is llmcord's streaming loop as a class that knows only a `Surface` (send, edit, typing).
Two tasks share the reply text: one consumes the deltas and only appends, so a slow platform
never slows the model stream; the other delivers, one call at a time, always with the newest
text, so every delta that arrives while a call is in flight or waiting is folded into the next
edit. Every send and edit waits for its turn in the chat's `WriteBudget` (`bots.write_budget`),
which every reply streaming into that chat shares: one reply alone is paced as the platform
allows, several take turns (first texts first, then the longest waiting), never meeting a 429.
A reply queued behind its asker's earlier one may show a `placeholder` until its text comes;
one waiting for a model slot shows its place in the queue, edited as it moves (`placeholders`),
each edit taking its turn in the chat's budget like any other.

A reply longer than `max_length` is split exactly as `bots.splitting.split_message` splits the
whole text (see there for how the parts join back); a finished part gets a final edit and the
reply continues in a new message. A part holding only whitespace is never sent (platforms reject
such messages), so neither is a reply's trailing whitespace that overflows into a new part.

A send or edit that fails is retried with capped, jittered exponential backoff (`Backoff`), the
newest text each time, until it gets through, the message is gone, or the platform has kept
failing for `delivery_timeout` seconds: then delivery gives up. A rate limit holds the whole
chat's budget for its `retry_after` and does not count as a failure. Each failure is one log line; so is the success after failures, or giving up. Only
this reply's own tasks wait meanwhile: other chats' replies run in their own.

The deltas may carry a `Lead`: a block to show above the text in the reply's first message
(a thinking model's reasoning, `bots.reasoning_view`), each one replacing the one before. It
is not part of the text: it takes its room in the first message only (at most half of it, cut
beyond: `LEAD_SHARE`), and once that message is finished (its part cut at the limit) a new
lead no longer shows.

A surface that can stream a draft (`drafting`: Telegram's `sendMessageDraft` in a private chat)
shows each message's text so far as a draft instead: one call per update, paced by its own
`draft_budget` rather than the chat's message budget, and the message is sent once, with its
final text (a part of a long reply when it is cut, as above). A draft left unchanged for
`DRAFT_REFRESH` seconds is sent again, as the platform drops a draft it stops hearing about.
When the platform refuses drafts (`draft` returns False), the surface stops `drafting` and the
reply goes on as sends and edits.

A stream cancelled from outside (the bot stopping) mid-reply makes one bounded last edit that
ends with `INTERRUPTED_NOTE`. A `DeliveryListener` hears before each send or edit, of each
message as it is sent, and of how the delivery ended, so the caller can record it all as it
happens (`bots.relay`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass, field
from typing import Protocol, cast

from bots.backoff import Backoff
from bots.clock import SYSTEM_CLOCK, Clock
from bots.errors import MessageGone, RateLimited
from bots.splitting import Fence, fence_after, next_cut, reopening
from bots.write_budget import Claim, Urgency, WriteBudget
from core import errors
from core.conversation import INTERRUPTED_NOTE

logger = logging.getLogger(__name__)

#: Seconds between typing indicators: Telegram's lasts 5 s, Discord's 10 s.
TYPING_INTERVAL = 4.0
#: Seconds the platform may keep failing a reply's sends and edits before delivery gives up
#: (`DELIVERY_TIMEOUT_SECONDS` sets it for the bots).
DELIVERY_TIMEOUT = 600.0
#: Seconds a cancelled stream may spend on its last edit, and on stopping the deltas.
CANCEL_GRACE = 5.0
#: Starts the line that tells the user the model failed.
WARNING_PREFIX = "⚠️ "
#: Shown when the model answered nothing visible, as a message cannot be empty.
EMPTY_NOTICE = "(empty reply)"
#: Longest description of a failed call in the log line that reports it.
FAILURE_LOG_CHARS = 200
#: A `Lead` takes at most this share of a message's limit (1/2): a longer one is cut, ending
#: with `LEAD_CUT`, so the text under it always has room.
LEAD_SHARE = 2
LEAD_CUT = "…\n\n"
#: Seconds a draft may stay unchanged before it is sent again: Telegram shows a draft for about
#: 30 s after its last update.
DRAFT_REFRESH = 20.0
#: Waits between tries of a failing send or edit: 1 s doubling to 30 s, jittered.
DELIVERY_BACKOFF = Backoff(first=1.0, cap=30.0, jitter=True)


@dataclass(frozen=True, slots=True)
class Lead:
    """The block shown above the text of a reply's first message, in place of the last one."""

    text: str


class Surface(Protocol):
    """One reply's view of a platform; the adapter implements it.

    It may also have `length(text) -> int`, how the platform counts a message's length (Telegram
    counts UTF-16 code units: `bots.splitting.utf16_length`); without it, `len` is used.
    `final=True` marks the last text a message will ever get: the adapter may render formatting.
    A surface with `renders_final = False` (Discord renders Markdown itself) is spared a final
    edit that would repeat the text already shown. One whose calls may return well after the
    platform answered them (discord.py sleeps after a call that used up its bucket) says when
    that was in `answered_at` (monotonic seconds, None if no answer came), so the chat's
    budget counts the write from then.
    "Message is not modified" answers are the surface's to swallow.

    A surface may also stream drafts: `drafting` (read before each write: it may turn False),
    `draft_budget` (the chat's drafts, apart from its messages) and `draft(text) -> bool`, which
    shows `text` as the draft of the message being written, or returns False when the platform
    refused drafts (the surface then stops `drafting`).
    """

    max_length: int
    #: The chat's writes, shared with every other reply streaming into the same chat.
    budget: WriteBudget

    async def send(self, text: str, *, final: bool) -> object:
        """Post a new message and return its handle: the first send replies to the user's
        message, each later one continues the reply."""
        ...

    async def edit(self, handle: object, text: str, *, final: bool) -> None: ...

    async def typing(self) -> None: ...


class DraftSurface(Surface, Protocol):
    """A surface that can show a message's text so far as a draft (see `Surface`)."""

    #: Drafts may be used now; turns False for good once the platform refused them.
    drafting: bool
    #: The chat's drafts, paced apart from its messages.
    draft_budget: WriteBudget

    async def draft(self, text: str) -> bool:
        """Show `text` as the draft of the message being written; False if the platform
        refused drafts (it does not have the method, or not for this chat)."""
        ...


@dataclass
class StreamResult:
    """How a reply went. `text` is the model's text as streamed (without the warning or notice
    the engine may add); `handles` are the sent messages' handles, in order."""

    text: str
    handles: list[object] = field(default_factory=list)
    error: BaseException | None = None
    gone: bool = False
    #: The platform confirmed each message's last text (a `gone` message never is).
    delivered: bool = False
    #: A cancellation (the bot stopping) cut the model's text short: the last text carries
    #: `INTERRUPTED_NOTE` (on screen if `delivered`).
    interrupted: bool = False

    @property
    def whole(self) -> bool:
        """The user has the whole reply as the model gave it."""
        return self.delivered and not self.interrupted

    @property
    def settled(self) -> bool:
        """Nothing more can be shown: the last text is on screen, or the message is gone."""
        return self.delivered or self.gone


class DeliveryListener(Protocol):
    """Hears how a reply's delivery goes, so the caller can record it as it happens."""

    async def showing(self) -> None:
        """A send or edit is about to put the reply's text so far on screen."""
        ...

    async def sent(self, handles: list[object]) -> None:
        """A new message went out; `handles` are all of the reply's so far, in order."""
        ...

    async def ended(self, result: StreamResult) -> None:
        """Delivery is over, however it ended (a cancellation included); called once."""
        ...


class StreamingEngine:
    """Streams replies onto one surface; `run` may be called once per reply."""

    def __init__(
        self,
        surface: Surface,
        *,
        describe_error: Callable[[BaseException], str] = errors.describe,
        clock: Clock = SYSTEM_CLOCK,
        delivery_timeout: float = DELIVERY_TIMEOUT,
        backoff: Backoff | None = None,
        listener: DeliveryListener | None = None,
    ) -> None:
        self._surface = surface
        self._describe_error = describe_error
        self._clock = clock
        self._delivery = _Delivery(delivery_timeout, backoff or DELIVERY_BACKOFF, listener)

    async def run(
        self,
        deltas: AsyncIterable[str | Lead],
        *,
        placeholder: str | None = None,
        placeholders: AsyncIterable[str] | None = None,
    ) -> StreamResult:
        """Stream `deltas` into messages until the final text is delivered, or delivery gave up.

        `placeholder` is shown at once, until the first text replaces it (a reply that waits its
        turn says so); each text of `placeholders` replaces it meanwhile (a queued reply's place
        in the queue), the newest one only when they come faster than the chat's budget allows
        an edit. An Exception from `deltas` is shown as a warning line and returned as
        `.error`, never raised. Cancellation makes a bounded best-effort final edit, then
        propagates.
        """
        stream = _Stream(
            self._surface, self._describe_error, self._clock, self._delivery, placeholder
        )
        return await stream.run(deltas, placeholders)


@dataclass(frozen=True, slots=True)
class _Delivery:
    """How hard a stream tries to deliver, and whom it tells."""

    timeout: float
    backoff: Backoff
    listener: DeliveryListener | None


@dataclass
class _Message:
    """One platform message of the reply: its content is the text from `start` on."""

    start: int
    fence: Fence | None
    prefix: str
    handle: object | None = None
    shown: str | None = None


class _Stream:
    """The state of one run: the text so far, shared by the consuming and delivering tasks."""

    def __init__(
        self,
        surface: Surface,
        describe_error: Callable[[BaseException], str],
        clock: Clock,
        delivery: _Delivery,
        placeholder: str | None,
    ) -> None:
        self._surface = surface
        self._describe_error = describe_error
        self._clock = clock
        self._delivery = delivery
        self._length: Callable[[str], int] = getattr(surface, "length", len)
        self._limit = surface.max_length
        self._renders_final: bool = getattr(surface, "renders_final", True)
        self._budget = surface.budget
        self._draft_budget: WriteBudget | None = getattr(surface, "draft_budget", None)
        self._placeholder = placeholder
        #: The write holding (or waiting for) a turn in the chat's budget, if any, and whether
        #: that turn is in the drafts' budget.
        self._claim: Claim | None = None
        self._claim_draft = False
        #: Since when this reply has been waiting for its next write: the budget serves the
        #: longest-waiting first.
        self._idle_since = clock.monotonic()
        #: Some of the model's text (not just the placeholder) is on screen.
        self._text_shown = False
        self._text = ""
        #: The block above the text of the first message (`Lead`), while that one is open.
        self._lead = ""
        self._final: str | None = None
        self._error: BaseException | None = None
        self._gone = False
        self._gave_up = False
        self._delivered = False
        self._interrupted = False
        #: Failed calls in a row, since when, and the earliest time of the next try.
        self._failures = 0
        self._failing_since: float | None = None
        self._retry_at: float | None = None
        self._handles: list[object] = []
        #: When the draft on screen was last sent (`DRAFT_REFRESH`).
        self._drafted_at = clock.monotonic()
        self._changed = asyncio.Event()
        self._typing: asyncio.Task[None] | None = None

    async def run(
        self, deltas: AsyncIterable[str | Lead], placeholders: AsyncIterable[str] | None = None
    ) -> StreamResult:
        with contextlib.ExitStack() as stack:
            stack.enter_context(self._budget.in_use())
            if self._draft_budget is not None:
                stack.enter_context(self._draft_budget.in_use())
            follow = (
                None if placeholders is None else asyncio.create_task(self._follow(placeholders))
            )
            try:
                return await self._run(deltas)
            finally:
                if follow is not None:
                    follow.cancel()

    async def _follow(self, placeholders: AsyncIterable[str]) -> None:
        """Each new placeholder replaces the one to show, while no text is on screen."""
        async for text in placeholders:
            self._placeholder = text
            self._changed.set()

    async def _run(self, deltas: AsyncIterable[str | Lead]) -> StreamResult:
        consume = asyncio.create_task(self._consume(deltas))
        deliver = asyncio.create_task(self._deliver())
        self._typing = asyncio.create_task(self._keep_typing())
        try:
            await asyncio.wait({consume, deliver}, return_when=asyncio.FIRST_COMPLETED)
            if consume.done() and consume.cancelled():
                raise asyncio.CancelledError  # the deltas themselves were cancelled
            if not consume.done():  # delivery stopped first: the message is gone, or it gave up
                await self._stop_consuming(consume, deltas)
            await asyncio.wait({deliver})
            deliver.result()  # a bug in delivery surfaces here rather than hiding
        except asyncio.CancelledError:
            await self._finish_cancelled(consume, deliver, deltas)
            await self._report_end()
            raise
        finally:
            self._stop_typing()
            self._release_turn(wrote=False)
        return await self._report_end()

    def _result(self) -> StreamResult:
        return StreamResult(
            self._text,
            list(self._handles),
            self._error,
            self._gone,
            self._delivered,
            self._interrupted,
        )

    async def _report_end(self) -> StreamResult:
        result = self._result()
        if self._delivery.listener is not None:
            await self._delivery.listener.ended(result)
        return result

    @property
    def _stopped(self) -> bool:
        """Delivery is over before its end: the message is gone, or the platform kept failing."""
        return self._gone or self._gave_up

    async def _consume(self, deltas: AsyncIterable[str | Lead]) -> None:
        try:
            async for delta in deltas:
                if isinstance(delta, Lead):
                    self._lead = self._fitted_lead(delta.text)
                    self._changed.set()
                elif delta:
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

    def _fitted_lead(self, lead: str) -> str:
        """`lead`, or its longest beginning that fits `LEAD_SHARE` of a message with `LEAD_CUT`
        (a reasoning shown whole can be longer than a Discord message)."""
        room = self._limit // LEAD_SHARE
        if self._length(lead) <= room:
            return lead
        low, high = 0, len(lead)
        while low < high:  # the longest beginning within the room, the mark included
            middle = (low + high + 1) // 2
            if self._length(lead[:middle] + LEAD_CUT) <= room:
                low = middle
            else:
                high = middle - 1
        return lead[:low].rstrip() + LEAD_CUT

    def _close_with(self, final_text: str) -> None:
        if self._final is None:
            self._set_final(final_text)

    def _set_final(self, final_text: str) -> None:
        """The reply's last text is known: a write waiting its turn now carries it."""
        self._final = final_text
        self._changed.set()
        if self._claim is not None:
            self._claim.raise_to(Urgency.FINAL)

    async def _deliver(self) -> None:
        message = self._new_message(0, None)
        while not self._stopped:
            self._changed.clear()
            finished = self._final is not None
            text = self._final if self._final is not None else self._text
            lead = self._lead if not self._handles or message.handle == self._handles[0] else ""
            limit = self._limit - self._length(lead) if lead else self._limit
            cut = next_cut(text, message.start, message.fence, limit, self._length)
            if cut is not None:
                if (lead or text[message.start : cut.end].strip()) and not await self._write(
                    message, lead + cut.part, final=True
                ):
                    continue  # not through yet: the part's text is fixed, so try it again
                self._lead = ""  # the first message is finished: a later lead has no place
                message = self._new_message(cut.end, cut.fence)
                continue
            has_text = bool(lead or text[message.start :].strip())
            current = lead + message.prefix + text[message.start :]
            if finished:
                if not has_text or await self._write(message, current, final=True):
                    self._delivered = not self._stopped
                    return
            elif has_text and current != message.shown:
                await self._write(message, current, final=False)
            elif (
                self._placeholder is not None
                and not self._text_shown
                and not has_text
                and message.shown != self._placeholder
            ):
                await self._write(message, self._placeholder, final=False, placeholder=True)
            elif self._drafts(message) and message.shown is not None and self._draft_stale():
                await self._write(message, message.shown, final=False, placeholder=True)
            else:
                self._release_turn(wrote=False)  # nothing to show after all
                await self._wait_change(message)

    def _drafts(self, message: _Message) -> bool:
        """The message's text so far goes out as a draft: it is not sent yet, and the surface
        streams drafts."""
        return message.handle is None and bool(getattr(self._surface, "drafting", False))

    def _draft_stale(self) -> bool:
        return self._clock.monotonic() - self._drafted_at >= DRAFT_REFRESH

    async def _wait_change(self, message: _Message) -> None:
        """Until the text changes; a draft on screen is also refreshed before it fades."""
        if not (self._drafts(message) and message.shown is not None):
            await self._changed.wait()
            return
        left = DRAFT_REFRESH - (self._clock.monotonic() - self._drafted_at)
        changed = asyncio.ensure_future(self._changed.wait())
        timer = asyncio.ensure_future(self._clock.sleep(max(left, 0.0)))
        try:
            await asyncio.wait({changed, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            changed.cancel()
            timer.cancel()

    def _new_message(self, start: int, fence: Fence | None) -> _Message:
        return _Message(start, fence, reopening(fence, self._limit, self._length))

    async def _write(
        self, message: _Message, text: str, *, final: bool, placeholder: bool = False
    ) -> bool:
        """One step towards showing `text`: wait out a backoff, or wait for a turn in the chat's
        budget, or make one try. True once it got through (or needs no call). After any wait
        the caller loops, re-reading the text, which grew meanwhile (or became final, or a
        cancellation extended it with the interrupted notice): the turn is kept for that."""
        if final and text == message.shown and not self._renders_final:
            return True
        draft = not final and self._drafts(message)
        if self._claim is not None and self._claim_draft != draft:
            self._release_turn(wrote=False)  # a turn in the other budget: the write changed
        if self._claim is None:
            if (wait := self._backoff_left()) > 0:
                await self._clock.sleep(wait)
                return False
            # A placeholder moving in the queue is no first text: it waits behind those.
            moved = placeholder and message.shown is not None
            await self._take_turn(Urgency.ROUTINE if moved else self._urgency(final), draft=draft)
            return False
        return await self._attempt(message, text, final=final, placeholder=placeholder, draft=draft)

    def _urgency(self, final: bool) -> Urgency:
        if not self._text_shown:
            return Urgency.FIRST
        return Urgency.FINAL if final else Urgency.ROUTINE

    async def _take_turn(self, urgency: Urgency, *, draft: bool = False) -> None:
        budget = self._draft_budget if draft and self._draft_budget is not None else self._budget
        claim = self._claim = budget.claim(urgency, since=self._idle_since)
        self._claim_draft = draft
        if self._final is not None:
            claim.raise_to(Urgency.FINAL)
        await claim.wait()

    def _release_turn(self, *, wrote: bool, landed: float | None = None) -> None:
        if self._claim is not None:
            self._claim.release(wrote=wrote, landed=landed)
            self._claim = None
            self._idle_since = self._clock.monotonic()

    def _backoff_left(self) -> float:
        """Seconds until the next try after a failure (0 if none failed)."""
        if self._retry_at is None:
            return 0.0
        return self._retry_at - self._clock.monotonic()

    async def _attempt(
        self,
        message: _Message,
        text: str,
        *,
        final: bool,
        placeholder: bool = False,
        draft: bool = False,
    ) -> bool:
        """One send, edit or draft in the turn the reply holds; True if it got through. A rate
        limit holds the budget it counts in, MessageGone ends the stream, drafts refused leave
        the message to sends and edits, any other error is logged (one line) and backed off
        from."""
        started = self._clock.monotonic()
        action = "draft" if draft else "send" if message.handle is None else "edit"
        budget = self._draft_budget if draft and self._draft_budget is not None else self._budget
        if self._delivery.listener is not None:
            await self._delivery.listener.showing()
        try:
            if draft:
                if not await cast(DraftSurface, self._surface).draft(text):
                    return False  # refused: the next try sends and edits instead
                self._drafted_at = self._clock.monotonic()
            elif message.handle is None:
                message.handle = await self._surface.send(text, final=final)
                self._handles.append(message.handle)
            else:
                await self._surface.edit(message.handle, text, final=final)
        except RateLimited as limit:
            logger.info("rate limited on %s; the chat waits %.1f s", action, limit.retry_after)
            budget.hold(limit.retry_after)
            return False
        except MessageGone:
            logger.info("reply message gone on %s; streaming stops", action)
            self._gone = True
            return False
        except Exception as exc:
            self._failed(action, exc, started=started)
            return False
        finally:
            self._release_turn(wrote=True, landed=getattr(self._surface, "answered_at", None))
        message.shown = text
        if not placeholder:  # a queued reply's asker sees it "typing" under the placeholder
            self._text_shown = True
            self._stop_typing()
        self._succeeded(action)
        if action == "send" and self._delivery.listener is not None:
            await self._delivery.listener.sent(list(self._handles))
        return True

    def _failed(self, action: str, exc: Exception, *, started: float) -> None:
        """Count a failure and set when to try again, or give up once the platform has been
        failing for the delivery timeout. The last try is made at the timeout itself."""
        now = self._clock.monotonic()
        if self._failing_since is None:
            self._failing_since = started
        self._failures += 1
        deadline = self._failing_since + self._delivery.timeout
        if now >= deadline:
            logger.error(
                "gave up delivering a reply after %d failed tries over %.0f s (%s); "
                "the user may see it cut off",
                self._failures,
                now - self._failing_since,
                _brief(exc),
            )
            self._gave_up = True
            return
        self._retry_at = min(now + self._delivery.backoff.delay(self._failures), deadline)
        logger.warning(
            "could not %s a reply message (%s); retrying in %.1f s",
            action,
            _brief(exc),
            self._retry_at - now,
        )

    def _succeeded(self, action: str) -> None:
        if self._failing_since is not None:
            logger.info(
                "%s of a reply message got through after %d failed tries over %.1f s",
                action,
                self._failures,
                self._clock.monotonic() - self._failing_since,
            )
        self._failures = 0
        self._failing_since = self._retry_at = None

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
        self, consume: asyncio.Task[None], deltas: AsyncIterable[str | Lead]
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
        self,
        consume: asyncio.Task[None],
        deliver: asyncio.Task[None],
        deltas: AsyncIterable[str | Lead],
    ) -> None:
        """Best effort, bounded: stop the deltas and show what the reply had. A reply the model
        had not finished ends with the interrupted note (alone if no text came yet: the question
        went unanswered); a finished one only gets its final text delivered (if that fails, the
        next start adds the note, `bots.repair`). The delivery runs on in its own task, so the
        cancellation of `run` does not interrupt a send half-way."""
        if not consume.done():
            await self._stop_consuming(consume, deltas)
        if self._final is None and not deliver.done():
            self._interrupted = True
            self._set_final(with_interrupted_note(self._text))
        else:
            self._close_with(self._text)
        await asyncio.wait({deliver}, timeout=CANCEL_GRACE)
        if not deliver.done():
            deliver.cancel()
        elif not deliver.cancelled() and (crash := deliver.exception()) is not None:
            logger.error("reply delivery failed", exc_info=crash)


def _brief(exc: BaseException) -> str:
    """An exception as one short log phrase: its type and message, no traceback."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    text = " ".join(text.split())
    return text if len(text) <= FAILURE_LOG_CHARS else text[: FAILURE_LOG_CHARS - 1] + "…"


def with_interrupted_note(text: str) -> str:
    """`text` ending with `INTERRUPTED_NOTE`, after any code block it leaves open; the note
    alone when there is no text.

    Only a stop of the bot cancels a reply's engine (`/stop` and a deleted message end the
    deltas instead), so the note is never shown for those.
    """
    if not text.strip():
        return INTERRUPTED_NOTE
    return text + _close_open_fence(text) + "\n\n" + INTERRUPTED_NOTE


def _close_open_fence(text: str) -> str:
    """The fence line that closes a code block `text` leaves open, so a warning after it shows
    as text rather than code."""
    fence = fence_after(text + "\n", 0, len(text) + 1, None)
    if fence is None:
        return ""
    return ("" if text.endswith("\n") else "\n") + fence.marker
