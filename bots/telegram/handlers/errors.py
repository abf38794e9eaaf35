"""The last line of defence: a handler that fails is logged here, and the user is told.

aiogram would log the traceback as "Cause exception while process update"; an error handler
that returns True keeps it to Parley's log, with the update id to find it.
"""

from __future__ import annotations

import logging

from aiogram import Router
from aiogram.exceptions import TelegramAPIError
from aiogram.types import ErrorEvent

log = logging.getLogger(__name__)

APOLOGY = "Sorry, something went wrong. Please try again."


def make_router() -> Router:
    router = Router(name="errors")
    router.errors.register(on_error)
    return router


async def on_error(event: ErrorEvent) -> bool:
    log.error("Handler failed on update %d", event.update.update_id, exc_info=event.exception)
    message = event.update.message
    if message is not None:
        try:
            await message.reply(APOLOGY)
        except TelegramAPIError as exc:
            log.warning("Could not tell the user about the failure: %s", exc)
    return True
