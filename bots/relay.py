"""The conversation plumbing: a user's message in, the streamed reply out on one surface.

Platform-free on purpose (a `Surface` is all it knows of the chat): the Telegram and Discord
adapters share it.

What the database says about a reply's delivery, and when (`DeliveryRecord`):
- the text so far is checkpointed before each send or edit once the reply has a stored text
  (before its first save nothing is stored, which the repair treats as unknown: see
  `ConversationService.checkpoint`), so the store is never behind the screen; each message's
  platform id is stored as soon as the message is sent, with the row
  marked `delivery_pending`: a crash leaves a row that names the messages the user sees and holds
  at least their text. The extra writes are bounded by the platform's own edit rate (about one
  per second per reply);
- when delivery ends, the ids are stored again, pending only if nothing on screen shows how the
  reply ended (delivery gave up, or a stopping bot's last edit failed): the next start finds such
  a reply and marks it (`bots.repair`);
- a reply the user did not get whole (delivery gave up, the message was deleted, the bot stopped
  mid-reply) is `interrupted`, even if the model finished it: the row's status says what the user
  has, its text what the model said.

A reply waiting for a model slot (MAX_CONCURRENT_REPLIES) shows `QUEUE_POSITION_NOTE`, edited as
the queue moves, then streams. A message refused before the model (over the rate limit or a
budget) is answered with its line, the reply's notice. A reply that waits for the same person's
earlier one shows `QUEUED_NOTE` until its turn comes
(other people's questions are answered meanwhile: the service queues per person); one stopped
before it said anything (`/reset` stops the asker's queued questions) ends with `NOT_ANSWERED`.
The core's notice for the user (`Reply.notice`: the chat's model cannot see the images sent) is
shown above the answer, and is the whole answer to a message that was only images. When older
turns were left out of the context (`Reply.history_cut`), `HISTORY_CUT_NOTE` ends the answer.

A thinking model's reasoning shows above the answer as `bots.reasoning_view` draws it
(`SHOW_REASONING`), as the engine's `Lead`: never part of the reply's text, so never stored as
it. A reply that is all reasoning and no answer shows the whole reasoning (unless `off`): it is
all the model said.

The service hears when delivery ended (`ConversationService.delivery_ended`), after the record is
written: only then is a reply's outcome known, so only then does it count in the metrics.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence

from bots.reasoning_view import ShowReasoning, thinking_block, thought_block
from bots.streaming import DELIVERY_TIMEOUT, Lead, StreamingEngine, StreamResult, Surface
from core.conversation import (
    Arrival,
    Author,
    ChatRef,
    ConversationService,
    FetchChain,
    Reply,
    ReplyState,
)
from core.errors import describe
from storage import MessageImage, StorageError

log = logging.getLogger(__name__)


#: What a chat user is told when the history could not be saved; the log has the details.
STORAGE_TROUBLE = "I could not save this conversation. Please tell the bot's operator."
#: Shown while a question waits for the answer to the asker's previous one.
QUEUED_NOTE = "⏳ Queued: I will answer this after your previous question."
#: Shown while a question waits for one of the process's model slots (MAX_CONCURRENT_REPLIES),
#: edited as the queue moves.
QUEUE_POSITION_NOTE = "⏳ Queued ({ahead} ahead)"
#: The last text of a reply stopped before it said anything.
NOT_ANSWERED = "⏹ Stopped before I answered this."
#: The footer of the first reply of a conversation whose older turns did not fit the model's
#: context window (`Reply.history_cut`): said once, so the user knows why early details fade.
HISTORY_CUT_NOTE = "ℹ️ Older messages were left out to fit the model's context."


def describe_failure(exc: BaseException) -> str:
    """The core's short explanation, or the storage one: storage is not a model problem."""
    return STORAGE_TROUBLE if isinstance(exc, StorageError) else describe(exc)


class DeliveryRecord:
    """The engine's `DeliveryListener` for one reply: writes its delivery to the database.

    A storage failure costs only the record (logged), never the reply the user is reading.
    """

    def __init__(self, service: ConversationService, reply: Reply) -> None:
        self._service = service
        self._reply = reply
        #: The user got the whole reply; known once delivery ended (False until then).
        self.whole = False

    async def showing(self) -> None:
        await self._service.checkpoint(self._reply)  # logs a storage failure itself

    async def sent(self, handles: list[object]) -> None:
        """Ids sent before the row exists are stored with the next write, which holds them all."""
        message_id = self._reply.message_id
        if message_id is None:
            return
        try:
            await self._service.record_platform_ids(
                message_id, _ids(handles), delivery_pending=True
            )
        except StorageError as exc:
            log.warning("Could not record the message ids of reply %s: %s", message_id, exc)

    async def ended(self, result: StreamResult) -> None:
        self.whole = result.whole
        message_id = self._reply.message_id
        if message_id is None:
            return  # no row: nothing to record
        # Nothing ever sent: the user has none of it (so it is interrupted), but there is no
        # message for the next start to mark either.
        pending = bool(result.handles) and not result.settled
        try:
            await self._service.record_delivery(
                message_id, _ids(result.handles), whole=result.whole, pending=pending
            )
        except StorageError as exc:  # the user has the reply; only the record is lost
            log.warning("Could not record the delivery of reply %s: %s", message_id, exc)


async def relay(
    service: ConversationService,
    surface: Surface,
    chat: ChatRef,
    author: Author,
    text: str,
    *,
    group: bool,
    platform_message_id: str,
    chat_title: str | None = None,
    delivery_timeout: float = DELIVERY_TIMEOUT,
    images: Sequence[MessageImage] = (),
    arrival: Arrival | None = None,
    show_reasoning: ShowReasoning = "collapsed",
    continue_from: str | None = None,
    fetch_chain: FetchChain | None = None,
) -> StreamResult:
    """Answer `text` (and `images`, from `bots.attachments.gather`) on `surface`, recording
    which platform messages carry the reply; `chat_title` is stored as the chat's name;
    `arrival`: the place the message took in the chat's order when it came, if it was taken
    before its files were read (`ConversationService.arrive`); `show_reasoning`: how a
    thinking model's reasoning shows (`SHOW_REASONING`). `continue_from` and `fetch_chain`: the
    reply chain it continues, as `ConversationService.reply` takes them.

    Provider failures end up in the message as a short warning (the engine's job); a message
    deleted mid-stream stops the reply, which the engine reports to the service via `aclose`,
    keeping the partial text as 'interrupted'. `delivery_timeout`: how long the platform may
    keep failing before delivery gives up (`DELIVERY_TIMEOUT_SECONDS`).
    """
    reply = service.reply(
        chat,
        author,
        text,
        group=group,
        platform_message_id=platform_message_id,
        chat_title=chat_title,
        delivery=True,
        images=images,
        arrival=arrival,
        continue_from=continue_from,
        fetch_chain=fetch_chain,
    )
    record = DeliveryRecord(service, reply)
    engine = StreamingEngine(
        surface,
        describe_error=describe_failure,
        delivery_timeout=delivery_timeout,
        listener=record,
    )
    placeholder = QUEUED_NOTE if reply.queued_behind_own else None
    try:
        return await engine.run(
            _shown(reply, show_reasoning),
            placeholder=placeholder,
            placeholders=_queue_positions(reply),
        )
    finally:  # however delivery ended: cancelled, or even a bug in the engine
        service.delivery_ended(reply, whole=record.whole)


async def _shown(reply: Reply, show: ShowReasoning) -> AsyncIterator[str | Lead]:
    """The reply's deltas under its notice, if any; and `NOT_ANSWERED` if it was stopped before
    saying anything (a message cannot be empty, and "(empty reply)" would blame the model).
    Its reasoning is the `Lead` above them, redrawn as it grows and once it is over.

    The notice is set before the first delta, so it is known by then; a reply with no delta
    shows it at the end (it is the answer to a message of images alone), or above the error."""
    noticed = False
    began: float | None = None  # when the model began to think
    thought: float | None = None  # how long it thought, once its answer began
    async with contextlib.aclosing(reply.pieces()) as pieces:
        try:
            async for piece in pieces:
                if not isinstance(piece, str):
                    began = time.monotonic() if began is None else began
                    if thought is None:
                        yield Lead(thinking_block(reply.reasoning, show))
                    continue
                if thought is None and began is not None:
                    thought = time.monotonic() - began
                    yield Lead(thought_block(reply.reasoning, thought, show))
                if not noticed and reply.notice:
                    yield f"{reply.notice}\n\n"
                noticed = True
                yield piece
        except Exception:
            if thought is None and began is not None:  # it failed while thinking
                yield _unanswered_lead(reply, began, show)
            if reply.notice and not noticed:  # the model failed: the line still explains
                yield f"{reply.notice}\n\n"
            raise
    if thought is None and began is not None:  # it thought, and no answer came
        yield _unanswered_lead(reply, began, show)
    if reply.state is ReplyState.STOPPED and not reply.text:
        yield NOT_ANSWERED
    elif reply.notice and not noticed:
        yield reply.notice
    elif reply.history_cut and reply.text:
        yield f"\n\n{HISTORY_CUT_NOTE}"


def _unanswered_lead(reply: Reply, began: float, show: ShowReasoning) -> Lead:
    """The reasoning of a reply that has no answer: whole, as it is all the model said."""
    shown: ShowReasoning = "off" if show == "off" else "full"
    return Lead(thought_block(reply.reasoning, time.monotonic() - began, shown))


async def _queue_positions(reply: Reply) -> AsyncIterator[str]:
    """The reply's place among those waiting for a model slot, each time it changes."""
    while True:
        ahead = await reply.queue_moved()
        if ahead is not None:
            yield QUEUE_POSITION_NOTE.format(ahead=ahead)


def _ids(handles: list[object]) -> list[str]:
    return [str(handle) for handle in handles]
