"""The stop button under a draft (`bots.telegram.drafts`): it ends the reply like /stop.

Only the person the draft is shown to can press it, in their private chat, so no access check
is needed. A press that names no live draft (the reply already ended) stops nothing, so it can
never cut the next reply short.
"""

from __future__ import annotations

import logging

from aiogram import Router
from aiogram.types import MessageGenerationStopped

from bots.telegram.surface import TelegramBudgets
from core.conversation import ConversationService

log = logging.getLogger(__name__)


def make_router() -> Router:
    router = Router(name="drafts")
    router.stopped_message_generation.register(stop_pressed)
    return router


async def stop_pressed(
    event: MessageGenerationStopped, service: ConversationService, budgets: TelegramBudgets
) -> None:
    """Stop the replies being written in the draft's conversation, keeping their text; the
    reply then ends with one message holding what was written."""
    drafts = budgets.drafts
    chat = None if drafts is None else drafts.live(event.chat.id, event.draft_id)
    if chat is None:
        log.debug("stop pressed under draft %s, which is over", event.draft_id)
        return
    await service.stop(chat)
