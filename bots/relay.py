"""The conversation plumbing: a user's message in, the streamed reply out on one surface.

Platform-free on purpose (a `Surface` is all it knows of the chat): the Telegram and Discord
adapters share it.
"""

from __future__ import annotations

import logging

from bots.streaming import StreamingEngine, StreamResult, Surface
from core.conversation import Author, ChatRef, ConversationService
from storage import StorageError

log = logging.getLogger(__name__)


async def relay(
    service: ConversationService,
    surface: Surface,
    chat: ChatRef,
    author: Author,
    text: str,
    *,
    group: bool,
    platform_message_id: str,
) -> StreamResult:
    """Answer `text` on `surface` and record which platform messages carry the reply.

    Provider failures end up in the message as a short warning (the engine's job); a message
    deleted mid-stream stops the reply, which the engine reports to the service via `aclose`,
    keeping the partial text as 'interrupted'.
    """
    reply = service.reply(chat, author, text, group=group, platform_message_id=platform_message_id)
    result = await StreamingEngine(surface).run(reply)
    if reply.message_id is not None and result.handles:
        try:
            await service.record_platform_ids(reply.message_id, [str(h) for h in result.handles])
        except StorageError as exc:  # the user has the reply; only the id mapping is lost
            log.warning("Could not record the message ids of reply %s: %s", reply.message_id, exc)
    return result
