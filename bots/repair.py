"""At start-up: show users which replies a previous run left cut off on their screen.

A reply whose delivery never ended (the process was killed mid-reply, its last edit failed as
the bot stopped, or an outage outlasted `DELIVERY_TIMEOUT_SECONDS`) may show text cut mid-word,
with nothing saying so. The row says so (`delivery_pending`); `ConversationService.recover()`
finds such rows at start-up, and each bot, once connected, calls `repair_replies` with a way to
take up a reply on its platform: a `Surface` whose sends reply to the reply's last message.

Each reply's last message is edited to read its part of the stored text followed by
`INTERRUPTED_NOTE` (the line a stopping bot adds itself, `bots.streaming`). If the notice does
not fit in that message, or the stored text does not reach it, the notice is sent as a reply to
it instead. Then the row is no longer pending, so no later start marks it again. The edit sets
the message's whole text, so a crash between it and the write only repeats the same edit.

What the message shows afterwards is the text the history kept, never less than was on screen:
the text is checkpointed before every send and edit (`bots.relay`). Telegram cannot read a
message back, so the stored text is the copy both platforms have.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from bots.errors import MessageGone, RateLimited
from bots.splitting import Length, next_cut, reopening
from bots.streaming import Surface, with_interrupted_note
from core.conversation import INTERRUPTED_NOTE, ConversationService
from storage import StorageError, UndeliveredReply

log = logging.getLogger(__name__)

#: Tries of one reply's repair; after them it waits for the next start.
REPAIR_ATTEMPTS = 3
#: Seconds before the second try of a failed repair, doubled before each further one.
REPAIR_RETRY_DELAY = 1.0


async def repair_replies(
    service: ConversationService,
    platform: str,
    surface_for: Callable[[UndeliveredReply], Surface],
) -> int:
    """Mark each reply `recover()` found cut off on `platform`; return how many were marked.

    `surface_for(reply)` takes the reply up at its last message; its handles are the platform's
    integer message ids, as both bots' surfaces use. A reply that cannot be marked now (the
    platform failing) is logged and left for the next start.
    """
    marked = 0
    for reply in service.take_undelivered(platform):
        outcome = await _repair(reply, surface_for(reply))
        if outcome is None:
            continue
        ids, shown = outcome
        try:
            await service.record_platform_ids(reply.id, ids)
        except StorageError as exc:  # the next start repeats the same edit: no harm done
            log.warning("Could not record the repair of reply %s: %s", reply.id, exc)
        marked += shown
    if marked:
        log.info("Marked %d reply(ies) a previous run left cut off as interrupted.", marked)
    return marked


async def _repair(reply: UndeliveredReply, surface: Surface) -> tuple[list[str], bool] | None:
    """Show the notice under `reply`. The reply's platform ids afterwards and whether the notice
    is on screen (not if the message is gone); None if it must wait for the next start."""
    ids = list(reply.platform_message_ids)
    if not ids:
        return ids, False
    length: Length = getattr(surface, "length", len)
    parts = _sent_parts(reply.text, surface.max_length, length)
    # The last message's text with the notice, if the stored text reaches it and it fits.
    edited = with_interrupted_note(parts[len(ids) - 1]) if len(parts) >= len(ids) else None
    if edited is not None and length(edited) > surface.max_length:
        edited = None
    for attempt in range(1, REPAIR_ATTEMPTS + 1):
        try:
            if edited is not None:
                await surface.edit(int(ids[-1]), edited, final=True)
                return ids, True
            return [*ids, str(await surface.send(INTERRUPTED_NOTE, final=True))], True
        except MessageGone as exc:  # deleted, or the chat is closed to the bot: nothing to mark
            log.info("Reply %s is gone from %s (%s); not marked", reply.id, reply.platform, exc)
            return ids, False
        except RateLimited as limit:
            await asyncio.sleep(limit.retry_after)
        except Exception as exc:
            log.warning(
                "Could not mark reply %s as interrupted (try %d of %d): %s: %s",
                reply.id,
                attempt,
                REPAIR_ATTEMPTS,
                type(exc).__name__,
                exc,
            )
            if attempt < REPAIR_ATTEMPTS:
                await asyncio.sleep(REPAIR_RETRY_DELAY * 2 ** (attempt - 1))
    return None


def _sent_parts(text: str, limit: int, length: Length) -> list[str]:
    """The parts of `text` the streaming engine sends as messages: `split_message`'s, less
    those holding only whitespace, which the engine never sends."""
    parts: list[str] = []
    start, fence = 0, None
    while (cut := next_cut(text, start, fence, limit, length)) is not None:
        if text[start : cut.end].strip():
            parts.append(cut.part)
        start, fence = cut.end, cut.fence
    if text[start:].strip():
        parts.append(reopening(fence, limit, length) + text[start:])
    return parts
