"""The conversation service every bot uses: history in, streamed reply out, everything saved.

Why it owns the queues: one person's messages in a chat must be answered in the order they
wrote them, one at a time (each reply becomes context for their next), while different people,
in one chat or in many, are answered concurrently: in a group nobody waits for another's answer.
So `reply()` registers the message synchronously, in the order the adapter received it, and a
background task per message does the work: store the user message as soon as the chat's
previous arrival is stored (history keeps the order of arrival), wait for its author's previous
reply in the chat to finish, then stream. The consumer only reads deltas; a slow or vanished
consumer never holds the chat up.

A reply's context is the history as it stood when its question arrived: other people's replies
then in flight (queued or streaming) are left out even once they finish, so concurrent answers
never see each other's half-written text, and a question is answered as its asker saw the
chat. A reset takes its place in the same order of arrival: the messages before it end the old
conversation, those after it wait for the new one, even while the reset waits for the replies
in flight (it stops the caller's own, lets other people's finish: `reset.ResetReport`).

Before its model is called a reply passes the gate (`gate.py`): its author's rate, taken on
arrival; its budgets, at its turn; then one of the process's model slots, waiting in line. A
message refused there is stored all the same, and its reply is the line saying why.

Every state change is written as it happens: the user message before the model is called, the
reply row when streaming starts, its text every `CHECKPOINT_SECONDS`, and its outcome at the
end. A process killed mid-reply leaves the row `streaming`; `recover()` at start-up marks it
`interrupted`, keeping the text of the last checkpoint. The reply's own states and the moves
between them are in `reply.py`; this module decides when each move happens.

Delivery is the adapter's (`bots.relay`), but recorded here as it happens: the text before each
send or edit (`checkpoint`), the platform ids of each message as soon as it is sent, with the row
marked `delivery_pending` until the platform confirmed the reply's last text. What a crash left
pending, `recover()` finds, and a bot takes with `take_undelivered()` once it is connected, to
show the user the reply was cut off.

So a delivered reply's outcome is known only when its delivery ends, which may be long after the
model finished (the platform failing, the last edit retried): the observer hears of its end then
(`delivery_ended`), while the person's next reply goes ahead as soon as the model is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from core.chat_settings import parse_model, parse_system_prompt
from core.client import AsyncClient
from core.config import CoreSettings
from core.content import image_count
from core.errors import ParleyError
from core.model_menu import offered_models
from core.models import ContextWindow, context_window
from core.personas import Persona, Personas, parse_persona, personas_at
from core.pricing import PriceTable, cost_of
from core.providers.registry import ProviderRegistry
from core.usage import UsageKind, UsageRecord, charged_usage, utc_now
from storage import (
    ChatConfig,
    MessageImage,
    MessageStatus,
    ReplyOutcome,
    Role,
    StorageError,
    Store,
    StoredMessage,
    UndeliveredReply,
)

from .chain import REPLY_CHAIN_MAX_TURNS, ChainTurn, FetchChain
from .chat import Author, ChatRef
from .context import Context, prepare_context
from .gate import Gate
from .observer import NO_OBSERVER, ConversationObserver, provider_failures
from .reply import BLIND_MODEL_NOTE, Reply, ReplyState
from .reset import ResetReport, names_of
from .summary import Summariser, SummaryCall

log = logging.getLogger(__name__)

#: Longest a streaming reply goes unsaved; a crash loses at most this much of its text.
CHECKPOINT_SECONDS = 2.0
#: Waits before each further try of a reply's final save (a lock held by another process, a
#: disk briefly full); after them the row stays 'streaming' until the next start's recover().
FINAL_SAVE_RETRY_DELAYS = (1.0, 3.0)
#: Stored error reasons are cut to this length; the full error goes to the log.
ERROR_REASON_MAX_CHARS = 300


def _reason(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text[:ERROR_REASON_MAX_CHARS]


def _ms(start: float | None, end: float | None) -> int | None:
    if start is None or end is None:
        return None
    return round((end - start) * 1000)


@dataclass(frozen=True, slots=True)
class _Place:
    """Where a reply stood in its chat when its message arrived."""

    #: Set once the chat's arrival before it (a message or a reset) is in the store.
    stored_before: asyncio.Event | None
    #: Set once its own message is in the store, or never will be.
    stored: asyncio.Event
    #: Its author's previous reply in the chat, whose turn it waits for.
    previous: Reply | None
    #: Other people's replies in flight at its arrival: they are left out of its context.
    others: tuple[Reply, ...]
    #: Why it is not answered, decided on arrival (its author is over the rate limit).
    refusal: str | None = None


#: Seconds the chat's later messages wait, at most, for the place of a message whose files are
#: still being read. Photos and files take well under a second; a transcription can take minutes
#: when its endpoint is slow, and other people in a group must not wait for it (they are
#: answered at once): then they go ahead, and the message takes a new place at the end.
ARRIVAL_HOLD_SECONDS = 5.0


class Arrival:
    """A message's place in its chat's order of arrival, taken when it arrived, for a message
    that needs awaiting before its text is known (its files are read first): a message sent
    after it is stored after it, and so is answered knowing it. `ConversationService.reply`
    or `remember` fills the place; `abandon` gives it up (the reading failed or was
    cancelled), so the chat's next messages do not wait for it forever. Nor do they wait more
    than `ARRIVAL_HOLD_SECONDS`: then the place is given up for them, and the message, once
    read, is stored at the end of the chat's order."""

    __slots__ = (
        "_hold",
        "_late",
        "_service",
        "audio_seconds",
        "chat",
        "stored",
        "stored_before",
        "taken",
    )

    def __init__(self, service: ConversationService, chat: ChatRef, hold: float) -> None:
        self.chat = chat
        self._service = service
        self.stored_before, self.stored = service._place(chat, None)
        self.taken = False
        self._late = False
        #: Seconds of audio transcribed for the message: recorded as its author's usage when
        #: the message is stored (`reply` or `remember`), where the author is known.
        self.audio_seconds = 0.0
        self._hold = asyncio.get_running_loop().call_later(hold, self._let_others_pass)

    def take(self, chat: ChatRef) -> tuple[asyncio.Event | None, asyncio.Event]:
        """The place, for the message stored in it (once); a new one at the end of the chat's
        order when the hold ran out."""
        if self.taken or chat != self.chat:
            raise ValueError(f"An arrival in {self.chat} was filled already, or is another chat's.")
        self.taken = True
        self._hold.cancel()
        if self._late:
            return self._service._place(chat, None)
        return self.stored_before, self.stored

    def abandon(self) -> None:
        """Give the place up, if no message was stored in it."""
        if not self.taken:
            self.taken = True
            self._hold.cancel()
            self._service._arrived(self.chat, self.stored)

    def _let_others_pass(self) -> None:
        if not self.taken and not self._late:
            self._late = True
            self._service._arrived(self.chat, self.stored)


@dataclass(frozen=True, slots=True)
class _Continuation:
    """What a message replies to: `ConversationService.reply`'s `continue_from` and
    `fetch_chain`."""

    platform_message_id: str | None
    fetch: FetchChain | None


@dataclass(frozen=True, slots=True)
class _Chain:
    """A branch's context: from the store (`stored`), or as fetched from the platform."""

    stored: bool
    fetched: Sequence[ChainTurn] | None


@dataclass
class _Delivery:
    """A started reply a caller delivers: its end is reported once both parts are over."""

    #: When its turn came, known once the model's part is over.
    turn_started: float | None = None
    #: Whether the user got it whole, known once the delivery is over.
    whole: bool | None = None


class ConversationService:
    """Answers chat messages with the core, keeping every chat's history in the store."""

    def __init__(
        self,
        store: Store,
        client: AsyncClient,
        settings: CoreSettings,
        *,
        checkpoint_seconds: float = CHECKPOINT_SECONDS,
        observer: ConversationObserver = NO_OBSERVER,
        arrival_hold: float = ARRIVAL_HOLD_SECONDS,
        clock: Callable[[], datetime] = utc_now,
        prices: PriceTable | None = None,
        gate: Gate | None = None,
        personas: Personas | None = None,
    ) -> None:
        self._store = store
        #: What /persona offers (`core.personas`); by default PERSONAS_FILE's, read now, so a
        #: bad file stops the start with its line instead of failing the first /persona.
        self._personas = personas if personas is not None else personas_at(settings.personas_file)
        self._menu_registry: ProviderRegistry | None = None
        #: The rate limit, budgets and model slots every reply passes (`gate`).
        self._gate = gate or Gate.from_settings(store, settings, clock=clock)
        self._client = client
        self._settings = settings
        self._checkpoint_seconds = checkpoint_seconds
        #: `ARRIVAL_HOLD_SECONDS`, shorter in tests.
        self._arrival_hold = arrival_hold
        self._observer = observer
        #: Each chat's newest arrival (a message or a reset), set once it is in the store.
        self._arrivals: dict[ChatRef, asyncio.Event] = {}
        #: Each person's newest reply in a chat, until its turn is over.
        self._tails: dict[tuple[ChatRef, str], Reply] = {}
        #: Each chat's replies whose turn is not over, in arrival order (a dict as ordered set).
        self._in_flight: dict[ChatRef, dict[Reply, None]] = {}
        self._running: dict[asyncio.Task[None], Reply] = {}
        self._undelivered: dict[str, list[UndeliveredReply]] = {}
        self._deliveries: dict[Reply, _Delivery] = {}
        #: Aware UTC "now", for the usage ledger's days and months.
        self._clock = clock
        self._prices = prices if prices is not None else PriceTable.from_settings(settings)
        #: Conversations whose chat was told that older turns were left out: told once each
        #: (kept in memory: after a restart a conversation is told once more).
        self._told_cut: set[int] = set()
        self._summariser = (
            Summariser(client, settings.summary_model) if settings.summary_model else None
        )
        #: Usage records written in the background (transcriptions), awaited by `aclose`.
        self._recording: set[asyncio.Task[None]] = set()

    @property
    def observer(self) -> ConversationObserver:
        """Where replies' events go; adapters report their platform's 429s to it too."""
        return self._observer

    async def recover(self, platform: str | None = None) -> int:
        """At start-up: replies a crash left 'streaming', or 'complete' but never delivered,
        become 'interrupted'; return how many.

        `platform` limits it to one platform's chats (the console leaves the bots' alone). With
        a platform, the replies its users may see cut off are kept for `take_undelivered`.
        """
        count = await self._store.interrupt_streaming(platform)
        if count:
            log.warning(
                "Marked %d reply(ies) a previous run left unfinished or undelivered as "
                "interrupted.",
                count,
            )
        if platform is not None:
            self._undelivered[platform] = await self._store.undelivered_replies(platform)
        return count

    def take_undelivered(self, platform: str) -> list[UndeliveredReply]:
        """The replies `recover()` found cut off on `platform`'s screens; each is handed out
        once, so a bot that reconnects does not mark them again."""
        return self._undelivered.pop(platform, [])

    def reply(
        self,
        chat: ChatRef,
        author: Author,
        text: str,
        *,
        group: bool = False,
        platform_message_id: str | None = None,
        chat_title: str | None = None,
        delivery: bool = False,
        images: Sequence[MessageImage] = (),
        arrival: Arrival | None = None,
        continue_from: str | None = None,
        fetch_chain: FetchChain | None = None,
    ) -> Reply:
        """Queue an answer to `text`; the user message is stored at once, before the model runs.

        `chat_title` is the chat's name as its platform shows it now (stored with the chat,
        so `parley history list` can say which chat an id is). `delivery`: the caller delivers
        the reply and calls `delivery_ended` once when that is over; until then the reply is
        still in flight for the observer.
        `images` (prepared by `core.images.prepare_images`) are stored with the message, in the
        same transaction, and go to the model with it. `arrival` (from `arrive`): the place the
        message took in the chat's order when it arrived; None: it takes it now.
        `continue_from`: the platform id of the bot's message this one replies to; the answer
        continues from that point (`chain`): its context is the reply chain ending there, not
        the chat's newest history. When the store has no such reply of the bot (deleted,
        another bot's, from before the database), `fetch_chain` reads the chain from the
        platform; without it, or when it finds nothing, the message follows the newest
        conversation as any other.
        Raises ValueError for a message with neither text nor images, which adapters should
        answer themselves.
        """
        if not text.strip() and not images:
            raise ValueError("Cannot answer an empty message.")
        own = (chat, author.id)
        previous = self._tails.get(own)
        reply = Reply(chat, author, queued_behind_own=previous is not None)
        self._tails[own] = reply
        in_flight = self._in_flight.setdefault(chat, {})
        others = tuple(other for other in in_flight if other.author.id != author.id)
        in_flight[reply] = None
        stored_before, stored = self._place(chat, arrival)
        self._record_transcription(chat, author, arrival)
        refusal = self._gate.arrived(author, chat.platform)
        place = _Place(stored_before, stored, previous, others, refusal)
        if delivery:
            self._deliveries[reply] = _Delivery()
        self._observer.reply_queued(chat.platform)
        task = asyncio.create_task(
            self._run(
                reply,
                place,
                text,
                group,
                platform_message_id,
                chat_title,
                images,
                _Continuation(continue_from, fetch_chain),
            ),
            name=f"reply {chat.platform}:{chat.chat_id}:{chat.thread_id}",
        )
        reply.attach(task)
        self._running[task] = reply
        task.add_done_callback(self._running.pop)
        return reply

    async def stop(self, chat: ChatRef, author_id: str | None = None) -> int:
        """Cut the replies being written in the chat to `author_id`'s questions (None: to
        everyone's), keeping their partial text; return how many, once each is saved.

        Queued replies are left alone: the person's next question goes ahead.
        """
        stopped = [
            reply
            for reply in self._in_flight.get(chat, ())
            if (author_id is None or reply.author.id == author_id)
            and reply.state is ReplyState.STREAMING
            and reply.stop()
        ]
        await asyncio.gather(*(reply.wait() for reply in stopped))
        return len(stopped)

    async def reset(
        self, chat: ChatRef, author_id: str | Awaitable[str | None] | None = None
    ) -> ResetReport:
        """Start a new conversation; the old one stays in the history.

        The replies in flight to `author_id`'s questions (None: to everyone's), streaming or
        queued, are stopped; other people's are waited for, so they finish in the old
        conversation. Messages received before the reset belong to the old one, even those
        whose task has not stored them yet; those received after it, to the new one, even while
        it waits.

        `author_id` may be an awaitable (whether the caller may reset everyone's replies can
        take a question to the platform): the reset takes its place in the chat's order of
        arrival first, before anything is awaited, so a message sent right after the reset is
        never taken for one sent before it.
        """
        stored_before = self._arrivals.get(chat)
        opened = asyncio.Event()
        self._arrivals[chat] = opened
        met = [reply for reply in self._in_flight.get(chat, ()) if not reply.state.final]
        try:
            whose = await author_id if inspect.isawaitable(author_id) else author_id
            for reply in met:
                if whose is None or reply.author.id == whose:
                    reply.stop()
            if stored_before is not None:
                await stored_before.wait()
            await asyncio.gather(*(reply.wait() for reply in met))
            await self._store.new_conversation(chat)
        finally:
            self._arrived(chat, opened)
        # Named by how each ended: one that finished before the stop reached it was waited for.
        stopped = [reply for reply in met if reply.state is ReplyState.STOPPED]
        waited_for = [reply for reply in met if reply.state is not ReplyState.STOPPED]
        return ResetReport(
            stopped=names_of(reply.author for reply in stopped),
            waited_for=names_of(reply.author for reply in waited_for),
        )

    def arrive(self, chat: ChatRef) -> Arrival:
        """Take a message's place in the chat's order now, to be filled by `reply` or
        `remember` once its content is known (see `Arrival`)."""
        return Arrival(self, chat, self._arrival_hold)

    def _place(
        self, chat: ChatRef, arrival: Arrival | None
    ) -> tuple[asyncio.Event | None, asyncio.Event]:
        """The event a message waits for before it is stored, and the one it sets then."""
        if arrival is not None:
            return arrival.take(chat)
        stored = asyncio.Event()
        stored_before = self._arrivals.get(chat)
        self._arrivals[chat] = stored
        return stored_before, stored

    def remember(
        self,
        chat: ChatRef,
        author: Author,
        text: str,
        *,
        platform_message_id: str | None = None,
        chat_title: str | None = None,
        arrival: Arrival | None = None,
    ) -> asyncio.Task[None]:
        """Store a user message that no reply answers: one whose every attachment was refused
        (the adapter told the user why). The history keeps what was sent, in the chat's order
        of arrival: its place is taken by this call (not when the task is awaited), as for
        `reply` (or by `arrive`, whose `arrival` is given). Awaiting the task raises StorageError
        if the message could not be stored."""
        stored_before, stored = self._place(chat, arrival)
        self._record_transcription(chat, author, arrival)
        return asyncio.create_task(
            self._remember(
                chat, author, text, platform_message_id, chat_title, stored_before, stored
            ),
            name=f"remember {chat.platform}:{chat.chat_id}:{chat.thread_id}",
        )

    async def _remember(
        self,
        chat: ChatRef,
        author: Author,
        text: str,
        platform_message_id: str | None,
        chat_title: str | None,
        stored_before: asyncio.Event | None,
        stored: asyncio.Event,
    ) -> None:
        try:
            if stored_before is not None:
                await stored_before.wait()
            await self._store.add_user_message(
                chat,
                author_id=author.id,
                author_name=author.name,
                text=text,
                platform_message_id=platform_message_id,
                chat_title=chat_title,
            )
        finally:
            self._arrived(chat, stored)

    @property
    def gate(self) -> Gate:
        """The rate limit, budgets and model slots: /budget and /usage read and set budgets."""
        return self._gate

    @property
    def store(self) -> Store:
        """The history and the usage ledger: /usage and /stats read their figures from it."""
        return self._store

    @property
    def client(self) -> AsyncClient:
        """The completion client: the bots draw images (`/image`) with it too."""
        return self._client

    async def chat_config(self, chat: ChatRef) -> ChatConfig:
        """The chat's own settings; `None` in a field means the operator's default applies."""
        return await self._store.chat_config(chat)

    async def set_model(self, chat: ChatRef, model: str | None) -> str | None:
        """Set the chat's model from a user's argument, by `core.chat_settings`'s rule; None
        goes back to the operator's default. Returns what was stored (None: the default).

        Raises `InvalidSettingError`, whose message is the answer for the user.
        """
        value = None if model is None else parse_model(model)
        await self._store.set_chat_model(chat, value)
        return value

    async def set_system_prompt(self, chat: ChatRef, prompt: str | None) -> str | None:
        """Set the chat's system prompt from a user's argument, by `core.chat_settings`'s rule;
        None goes back to the operator's default. Returns what was stored (None: the default).

        Raises `InvalidSettingError`, whose message is the answer for the user.
        """
        value = None if prompt is None else parse_system_prompt(prompt)
        await self._store.set_chat_system_prompt(chat, value)
        return value

    async def carry_settings(self, source: ChatRef, target: ChatRef) -> None:
        """Give `target` `source`'s own settings (model, system prompt, persona, /image): a
        thread the bot opens for an answer goes on as its channel was set up, not with the
        operator's defaults."""
        config = await self._store.chat_config(source)
        if config.model is not None:
            await self._store.set_chat_model(target, config.model)
        if config.system_prompt is not None:
            await self._store.set_chat_system_prompt(target, config.system_prompt)
        if config.persona is not None:
            await self._store.set_chat_persona(target, config.persona)
        if config.image_generation is not None:
            await self._store.set_chat_image_generation(target, config.image_generation)

    @property
    def personas(self) -> Personas:
        """The personas a chat may choose."""
        return self._personas

    def offered_models(self) -> list[str]:
        """The models `/model` offers as a menu (`core.model_menu`)."""
        if self._menu_registry is None:  # the client's, else one from the service's settings
            self._menu_registry = self._client.registry or ProviderRegistry.from_settings(
                self._settings
            )
        return offered_models(self._menu_registry, self._personas)

    async def set_persona(self, chat: ChatRef, name: str | None) -> Persona | None:
        """Choose the chat's persona by a user's argument (`core.personas.parse_persona`);
        None, 'default' or 'reset' clears it. Returns the persona chosen (None: none).

        Raises `InvalidSettingError`, whose message is the answer for the user.
        """
        persona = None if name is None else parse_persona(self._personas, name)
        await self._store.set_chat_persona(chat, None if persona is None else persona.name)
        return persona

    async def set_image_generation(self, chat: ChatRef, enabled: bool | None) -> None:
        """Turn `/image` on or off in the chat (its admins' switch); None: the operator's
        default (on when IMAGE_MODEL is set)."""
        await self._store.set_chat_image_generation(chat, enabled)

    async def record_platform_ids(
        self, message_id: int, ids: list[str], *, delivery_pending: bool = False
    ) -> None:
        """The platform messages that carry a stored message (replaces earlier ones);
        `delivery_pending` as in `Store.set_platform_message_ids`."""
        await self._store.set_platform_message_ids(
            message_id, ids, delivery_pending=delivery_pending
        )

    async def checkpoint(self, reply: Reply) -> None:
        """Save the streaming reply's text now, if it grew since the last save. An adapter calls
        it before each send or edit, so the stored text is never behind what the user sees: the
        next start, finding the reply cut off, shows the stored text (`bots.repair`).

        Until the reply's first save (the periodic one, `CHECKPOINT_SECONDS` in) nothing is
        written here: a reply with no stored text is one the repair never edits (it sends the
        note as a reply instead), so no word on screen can be lost, and the first text a user
        sees waits for no database write. (With 200 chats streaming at once, that write queued
        behind the others' and held the first text back by about 330 ms: bench.telegram_load.)"""
        if reply.message_id is None or reply.state is not ReplyState.STREAMING:
            return
        if reply.saved_length and len(reply.text) != reply.saved_length:
            await self._checkpoint(reply)

    async def record_delivery(
        self, message_id: int, ids: list[str], *, whole: bool, pending: bool
    ) -> None:
        """How delivering a reply ended. Not `whole`: the user got only part of it (delivery
        gave up, the message was deleted, the bot stopped), so a 'complete' row becomes
        'interrupted'. `pending`: nothing on screen says so yet; the next start's recover()
        finds the reply."""
        if not whole:
            await self._store.interrupt_reply(message_id)
        await self.record_platform_ids(message_id, ids, delivery_pending=pending)

    def delivery_ended(self, reply: Reply, *, whole: bool) -> None:
        """The delivery of a reply queued with `delivery=True` is over, its record written
        (`record_delivery`); `whole`: the user got the whole reply. A second call changes
        nothing, so a caller may call it again from a `finally`."""
        pending = self._deliveries.get(reply)
        if pending is None or pending.whole is not None:
            return
        pending.whole = whole
        if pending.turn_started is not None:  # the model's part is over too
            del self._deliveries[reply]
            self._report_end(reply, pending.turn_started, cut_in_delivery=not whole)

    async def history(self, chat: ChatRef) -> list[StoredMessage]:
        """The messages of the chat's current conversation, in turn order."""
        conversation = await self._store.current_conversation(chat)
        if conversation is None:
            return []
        return await self._store.conversation_messages(conversation)

    async def aclose(self) -> None:
        """Stop every reply (partial text kept as 'interrupted') and wait for all to be saved."""
        for reply in list(self._running.values()):
            reply.stop()
        while self._running or self._recording:
            await asyncio.gather(*self._running, *self._recording, return_exceptions=True)

    # The work behind one reply.

    async def _run(
        self,
        reply: Reply,
        place: _Place,
        text: str,
        group: bool,
        platform_message_id: str | None,
        chat_title: str | None,
        images: Sequence[MessageImage],
        continuation: _Continuation,
    ) -> None:
        previous = place.previous
        turn_started: float | None = None
        try:
            user_message_id, parent = await self._store_user_message(
                reply,
                place,
                text,
                platform_message_id,
                chat_title,
                images,
                continuation.platform_message_id,
            )
            if user_message_id is None:
                return
            fetched = None
            if parent is None and continuation.fetch is not None:
                fetched = await self._fetch_chain(reply.chat, continuation.fetch)
            if previous is not None:
                await reply.wait_turn(previous)
            passage = await self._gate.through(reply, place.refusal)
            if passage is None:  # refused, or stopped while it waited: it has ended
                return
            try:
                if not reply.begin():  # stopped while it waited
                    return
                turn_started = time.monotonic()
                self._observer.reply_started(reply.chat.platform)
                # Stored before this one's message, so their ids are known by now.
                leave_out = {
                    other.user_message_id
                    for other in place.others
                    if other.user_message_id is not None
                }
                await self._stream(
                    reply,
                    user_message_id,
                    group,
                    leave_out,
                    text,
                    bool(images),
                    _Chain(parent is not None, fetched),
                )
            finally:  # charged by now (the outcome's save records the usage)
                await passage.leave()
        finally:
            if not reply.state.final:  # only when cancelled from outside
                reply.end(ReplyState.INTERRUPTED)
            self._model_part_over(reply, turn_started)
            try:
                if previous is not None:  # a turn never ends before the one queued before it
                    await previous.wait_turn_over()
            finally:
                reply.end_turn()
                self._turn_over(reply)

    def _turn_over(self, reply: Reply) -> None:
        """Forget a reply whose turn is over, so no chat or person leaves an entry behind."""
        own = (reply.chat, reply.author.id)
        if self._tails.get(own) is reply:
            del self._tails[own]
        in_flight = self._in_flight[reply.chat]
        del in_flight[reply]
        if not in_flight:
            del self._in_flight[reply.chat]

    def _arrived(self, chat: ChatRef, stored: asyncio.Event) -> None:
        """An arrival is in the store (or never will be): the chat's next one may follow."""
        stored.set()
        if self._arrivals.get(chat) is stored:
            del self._arrivals[chat]

    def _model_part_over(self, reply: Reply, turn_started: float | None) -> None:
        """Report the reply's end, unless its delivery is still going on (`delivery_ended`
        reports it then)."""
        pending = self._deliveries.get(reply)
        if pending is None or turn_started is None:
            # Nobody delivers it; or it never had its turn, so it has no row and nothing its
            # delivery does can change its outcome.
            self._deliveries.pop(reply, None)
            self._report_end(reply, turn_started)
            return
        pending.turn_started = turn_started
        if pending.whole is not None:  # its delivery ended first
            del self._deliveries[reply]
            self._report_end(reply, turn_started, cut_in_delivery=not pending.whole)

    def _report_end(
        self, reply: Reply, turn_started: float | None, *, cut_in_delivery: bool = False
    ) -> None:
        """Tell the observer the reply's outcome as stored: a complete reply the user did not
        get whole is 'interrupted', as `record_delivery` (or the next start's recover())
        stores it."""
        outcome = reply.status
        if cut_in_delivery and outcome is MessageStatus.COMPLETE:
            outcome = MessageStatus.INTERRUPTED
        in_flight = None if turn_started is None else time.monotonic() - turn_started
        self._observer.reply_finished(reply.chat.platform, outcome, in_flight)

    async def _store_user_message(
        self,
        reply: Reply,
        place: _Place,
        text: str,
        platform_message_id: str | None,
        chat_title: str | None,
        images: Sequence[MessageImage],
        continue_from: str | None = None,
    ) -> tuple[int | None, int | None]:
        """Store the message, after what the chat received before it (a message, a reset); its
        id, or None on failure, and the stored reply it continues from (`continue_from`, a
        branch) or None."""
        message_id = parent = None
        try:
            parent = await self._parent(reply.chat, continue_from)
            if place.stored_before is not None:
                await place.stored_before.wait()
            message_id = await self._store.add_user_message(
                reply.chat,
                author_id=reply.author.id,
                author_name=reply.author.name,
                text=text,
                platform_message_id=platform_message_id,
                chat_title=chat_title,
                images=images,
                parent=parent,
            )
        except StorageError as exc:
            log.error(
                "Could not store a message of %s: %s", reply.chat, exc, extra={"chat": reply.chat}
            )
            reply.end(ReplyState.ERROR, exc)
        finally:
            reply.settle_user_message(message_id)
            self._arrived(reply.chat, place.stored)
        return message_id, parent

    async def _stream(
        self,
        reply: Reply,
        user_message_id: int,
        group: bool,
        leave_out: set[int],
        text: str,
        with_images: bool,
        chain: _Chain | None = None,
    ) -> None:
        state = ReplyState.DONE
        error: BaseException | None = None
        usage: Any = None
        messages: list[dict[str, Any]] = []
        started = first_token = None
        outside_cancel = False
        summary_call: SummaryCall | None = None
        with reply.stoppable():
            try:
                persona = self._personas.get((await self._store.chat_config(reply.chat)).persona)
                context = await prepare_context(
                    self._store,
                    self._settings,
                    reply.chat,
                    user_message_id,
                    group=group,
                    leave_out=leave_out,
                    sees_images=self._sees_images,
                    window_of=self._window_of,
                    summariser=self._summariser,
                    branch=chain is not None and chain.stored,
                    fetched=chain.fetched if chain is not None else None,
                    persona=persona,
                )
                messages, reply.model = context.messages, context.model
                summary_call = context.summary_call
                self._tell_cut(reply, context)
                if with_images and not self._sees_images(reply.model):
                    reply.notice = BLIND_MODEL_NOTE
                    if not text.strip():  # only images: the notice is the whole answer
                        reply.end(ReplyState.DONE)
                        return
                await self._open_row(reply, user_message_id)
                started = last_save = time.monotonic()
                stream = self._client.chat.completions.create(
                    messages,
                    model=reply.model,
                    stream=True,
                    # The persona's, else none is sent: the provider's default.
                    temperature=None if persona is None else persona.temperature,
                )
                async with contextlib.aclosing(stream):
                    async for chunk in stream:
                        reply.provider = chunk.provider or reply.provider
                        reply.model = chunk.model or reply.model
                        usage = chunk.usage or usage
                        delta = chunk.choices[0].delta
                        piece = delta.content
                        if not piece:
                            if delta.reasoning_content:
                                reply.add_reasoning(delta.reasoning_content)
                            continue
                        if first_token is None:
                            first_token = time.monotonic()
                            self._observer.reply_first_token(
                                reply.chat.platform, first_token - started
                            )
                        reply.add(piece)
                        if time.monotonic() - last_save >= self._checkpoint_seconds:
                            await self._checkpoint(reply)
                            last_save = time.monotonic()
            except asyncio.CancelledError:
                if reply.stop_asked:  # our own stop: the reply ends here, the task goes on
                    state = ReplyState.STOPPED
                    task = asyncio.current_task()
                    assert task is not None  # a reply streams inside its own task
                    task.uncancel()
                else:
                    state, outside_cancel = ReplyState.INTERRUPTED, True
            except Exception as exc:
                state, error = ReplyState.ERROR, exc
                log.warning(
                    "Reply in %s failed: %s", reply.chat, _reason(exc), extra={"chat": reply.chat}
                )
                for provider, kind in provider_failures(exc):
                    self._observer.provider_error(provider, kind)
        if summary_call is not None:  # spent whatever became of the reply
            await self._record_summary_usage(reply, summary_call)
        if reply.message_id is not None:
            await self._save_outcome(reply, state, error, usage, started, first_token)
            await self._record_chat_usage(reply, state, usage, messages)
        reply.end(state, error)
        if outside_cancel:
            raise asyncio.CancelledError

    def _window_of(self, model: str) -> ContextWindow:
        """The chat's model's window; a model the registry cannot place gets the presets'."""
        try:
            return self._client.context_window(model)
        except ParleyError:
            return context_window(model)

    def _tell_cut(self, reply: Reply, context: Context) -> None:
        """Mark the reply for the footer the first time its conversation's history is cut."""
        conversation = context.conversation_id
        if context.cut and conversation is not None and conversation not in self._told_cut:
            self._told_cut.add(conversation)
            reply.history_cut = True

    async def _parent(self, chat: ChatRef, platform_message_id: str | None) -> int | None:
        """The stored reply of the bot that platform message `platform_message_id` carries,
        which a message replying to it continues from; None when there is none (deleted,
        someone else's message) or the store cannot say: the message then follows the newest
        conversation, as one that replies to nothing."""
        if platform_message_id is None:
            return None
        try:
            found = await self._store.find_message(chat, platform_message_id)
        except StorageError as exc:
            log.warning("Could not look up replied-to message %s: %s", platform_message_id, exc)
            return None
        return found.id if found is not None and found.role is Role.ASSISTANT else None

    async def _fetch_chain(self, chat: ChatRef, fetch: FetchChain) -> Sequence[ChainTurn] | None:
        """The reply chain as the platform has it (at most what a context can hold); None when
        it has none, or reading it failed: the message then follows the newest conversation."""
        most = min(self._settings.context_max_messages, 2 * REPLY_CHAIN_MAX_TURNS)
        try:
            turns = await fetch(most)
        except Exception as exc:  # the platform's failure costs the chain, never the answer
            log.warning("Could not read a reply chain in %s: %s", chat, _reason(exc))
            return None
        return list(turns)[-most:] or None

    def _sees_images(self, model: str) -> bool:
        """Whether the chat's model takes images; a model the registry cannot place is given
        them (the request then fails with the provider's own, clearer, error)."""
        try:
            return self._client.sees_images(model)
        except ParleyError:
            return True

    async def _open_row(self, reply: Reply, user_message_id: int) -> None:
        """Create the reply's row; a stop arriving meanwhile still learns the row's id."""
        insert = asyncio.ensure_future(self._store.start_reply(user_message_id, reply.model))
        try:
            reply.message_id = await asyncio.shield(insert)
        except asyncio.CancelledError:
            with contextlib.suppress(StorageError):
                reply.message_id = await insert
            raise

    async def _checkpoint(self, reply: Reply) -> None:
        assert reply.message_id is not None
        text = reply.text
        try:
            await self._store.save_partial_reply(reply.message_id, text)
        except StorageError as exc:  # the final save tries again; the user still gets the text
            log.warning("Could not checkpoint reply %s: %s", reply.message_id, exc)
        else:
            reply.saved_length = max(reply.saved_length, len(text))

    async def _save_outcome(
        self,
        reply: Reply,
        state: ReplyState,
        error: BaseException | None,
        usage: Any,
        started: float | None,
        first_token: float | None,
    ) -> None:
        assert reply.message_id is not None
        now = time.monotonic()
        outcome = ReplyOutcome(
            status=state.stored_status,
            text=reply.text,
            model=reply.model,
            provider=reply.provider,
            first_token_ms=_ms(started, first_token),
            total_ms=_ms(started, now),
            prompt_tokens=getattr(usage, "prompt_tokens", None),
            completion_tokens=getattr(usage, "completion_tokens", None),
            total_tokens=getattr(usage, "total_tokens", None),
            tokens_estimated=getattr(usage, "estimated", False),
            error=_reason(error) if error is not None else None,
            reasoning=reply.reasoning or None,
        )
        for delay in (*FINAL_SAVE_RETRY_DELAYS, None):
            try:
                await self._store.finish_reply(reply.message_id, outcome)
                return
            except StorageError as exc:
                if delay is None:  # the user has the text; recover() fixes the row at start-up
                    log.error("Could not save reply %s: %s", reply.message_id, exc)
                    return
                log.warning("Saving reply %s failed (%s); retrying", reply.message_id, exc)
                await asyncio.sleep(delay)

    # The usage ledger: what each model call used, recorded once it is over.

    async def record_usage(
        self,
        chat: ChatRef,
        author: Author,
        kind: UsageKind,
        model: str | None,
        provider: str | None,
        *,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        estimated: bool = False,
        images_in: int = 0,
        audio_seconds: float = 0.0,
        images_out: int = 0,
        message_id: int | None = None,
    ) -> None:
        """Write one call's use to the ledger, priced by the PriceTable (no price: no cost).
        Never raises: the user has had what they asked for, and a ledger that cannot be
        written is the operator's to hear about, in the log."""
        try:
            price = self._prices.price(model, provider)
            cost = None
            if price is not None:
                cost = cost_of(
                    price,
                    prompt_tokens=prompt_tokens,
                    completion_tokens=completion_tokens,
                    images_in=images_in,
                    audio_seconds=audio_seconds,
                    images_out=images_out,
                )
            record = UsageRecord(
                kind=kind,
                at=self._clock(),
                platform=chat.platform,
                chat_id=chat.chat_id,
                thread_id=chat.thread_id,
                user_id=author.id,
                user_name=author.name or None,
                model=model,
                provider=provider,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                estimated=estimated,
                images_in=images_in,
                audio_seconds=audio_seconds,
                images_out=images_out,
                cost_micros=cost,
                guest=author.guest,
                message_id=message_id,
            )
            await self._store.record_usage(record)
        except Exception:  # a bug here must not cost the reply it comes after
            log.exception("Could not record the %s usage of %s in %s", kind, author.id, chat)

    async def _record_chat_usage(
        self, reply: Reply, state: ReplyState, usage: Any, messages: list[dict[str, Any]]
    ) -> None:
        """Record a reply's tokens: the provider's count, else (none, or nonsense) the
        estimate, marked. A request that failed before any text costs nothing: providers do
        not bill a refused request."""
        if state is ReplyState.ERROR and usage is None and not reply.text:
            return
        charged = charged_usage(usage, messages, len(reply.text))
        await self.record_usage(
            reply.chat,
            reply.author,
            UsageKind.CHAT,
            reply.model,
            reply.provider,
            prompt_tokens=charged.prompt_tokens,
            completion_tokens=charged.completion_tokens,
            estimated=charged.estimated,
            images_in=sum(image_count(message.get("content")) for message in messages),
            message_id=reply.message_id,
        )

    async def _record_summary_usage(self, reply: Reply, call: SummaryCall) -> None:
        """Charge the summary written while `reply`'s context was made to `reply`'s user and
        chat: it was written on its behalf. A chat completion like the reply's, so recorded
        as one (`UsageKind.CHAT`), under the summary model's name, and tied to the reply."""
        await self.record_usage(
            reply.chat,
            reply.author,
            UsageKind.CHAT,
            call.model,
            call.provider,
            prompt_tokens=call.usage.prompt_tokens,
            completion_tokens=call.usage.completion_tokens,
            estimated=call.usage.estimated,
            message_id=reply.message_id,
        )

    def _record_transcription(self, chat: ChatRef, author: Author, arrival: Arrival | None) -> None:
        """Record, in the background, the transcription behind a message now being stored."""
        if arrival is None or not arrival.audio_seconds:
            return
        provider = urlsplit(self._settings.transcribe_base_url or "").hostname
        task = asyncio.create_task(
            self.record_usage(
                chat,
                author,
                UsageKind.TRANSCRIPTION,
                self._settings.transcribe_model,
                provider,
                audio_seconds=arrival.audio_seconds,
            )
        )
        self._recording.add(task)
        task.add_done_callback(self._recording.discard)
