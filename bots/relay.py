"""The conversation plumbing: a user's message in, the streamed reply out on one surface.

Platform-free on purpose (a `Surface` is all it knows of the chat): the Telegram and Discord
adapters share it.
"""

from __future__ import annotations

import logging

from bots.streaming import StreamingEngine, StreamResult, Surface
from core.conversation import Author, ChatRef, ConversationService
from core.errors import describe
from storage import StorageError

log = logging.getLogger(__name__)


#: What a chat user is told when the history could not be saved; the log has the details.
STORAGE_TROUBLE = "I could not save this conversation. Please tell the bot's operator."


def describe_failure(exc: BaseException) -> str:
    """The core's short explanation, or the storage one: storage is not a model problem."""
    return STORAGE_TROUBLE if isinstance(exc, StorageError) else describe(exc)


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
) -> StreamResult:
    """Answer `text` on `surface` and record which platform messages carry the reply;
    `chat_title` is stored as the chat's name.

    Provider failures end up in the message as a short warning (the engine's job); a message
    deleted mid-stream stops the reply, which the engine reports to the service via `aclose`,
    keeping the partial text as 'interrupted'.
    """
    reply = service.reply(
        chat,
        author,
        text,
        group=group,
        platform_message_id=platform_message_id,
        chat_title=chat_title,
    )
    result = await StreamingEngine(surface, describe_error=describe_failure).run(reply)
    if reply.message_id is not None and result.handles:
        try:
            await service.record_platform_ids(reply.message_id, [str(h) for h in result.handles])
        except StorageError as exc:  # the user has the reply; only the id mapping is lost
            log.warning("Could not record the message ids of reply %s: %s", reply.message_id, exc)
    return result
