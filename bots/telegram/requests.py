"""Retries for every Bot API request: flood control waited out, network hiccups retried.

aiogram raises `TelegramRetryAfter` and never retries; this request middleware (registered on the
session, so it wraps every call) waits `retry_after` and tries again, a bounded number of times.
Two methods are deliberately not waited here:
- `editMessageText` and `sendMessageDraft`: the streaming engine gets the 429 at once (as
  `RateLimited` from the surface) and folds everything the model says meanwhile into one later
  edit or draft, instead of replaying a stale one after the wait.
- `sendChatAction`: a typing indicator that comes late is worthless; the engine skips it.
Nor are the calls whose caller retries them with its own backoff and log line: `getUpdates`
(`bots.telegram.polling.Poller`), `getMe`, `deleteWebhook` and `setWebhook` (the start, `bots.startup`), and
`editMessageText` and `sendMessageDraft` on a network error or 5xx: the streaming engine retries them with its own
backoff and the newest text, for as long as `DELIVERY_TIMEOUT_SECONDS` allows, one log line per
failed try. Every 429, waited out here or not, is reported to the observer (the app's metrics).
Other network errors and 5xx answers are retried here with backoff. A retried `sendMessage`
whose first try did reach Telegram can post twice; a lost reply is worse than a rare duplicate.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiogram import Bot
from aiogram.client.session.middlewares.base import (
    BaseRequestMiddleware,
    NextRequestMiddlewareType,
)
from aiogram.exceptions import TelegramNetworkError, TelegramRetryAfter, TelegramServerError
from aiogram.methods import (
    DeleteWebhook,
    EditMessageText,
    GetMe,
    GetUpdates,
    SendChatAction,
    SendMessageDraft,
    SetWebhook,
    TelegramMethod,
)

from bots.platform_observer import NO_PLATFORM_OBSERVER, PlatformObserver
from bots.telegram.chats import PLATFORM

log = logging.getLogger(__name__)

#: Tries of one request that keeps hitting flood control.
RATE_LIMIT_ATTEMPTS = 5
#: Tries of one request that keeps failing on the network or with a 5xx.
NETWORK_ATTEMPTS = 3
#: Seconds before the first network retry; doubled for each further one.
NETWORK_BACKOFF = 0.5
#: Methods whose 429 goes straight to the caller (see the module docstring).
NO_WAIT_METHODS = (EditMessageText, SendMessageDraft, SendChatAction)
#: Methods whose network failures and 5xx go straight to the caller, which retries them itself.
CALLER_RETRIES = (GetUpdates, GetMe, DeleteWebhook, SetWebhook, EditMessageText, SendMessageDraft)


class RetryRequests(BaseRequestMiddleware):
    """Wait out 429s and retry transient failures; every other error goes to the caller."""

    def __init__(self, observer: PlatformObserver = NO_PLATFORM_OBSERVER) -> None:
        self._observer = observer

    async def __call__(
        self,
        make_request: NextRequestMiddlewareType[Any],
        bot: Bot,
        method: TelegramMethod[Any],
    ) -> Any:
        name = type(method).__name__
        rate_limited = failed = 0
        while True:
            try:
                return await make_request(bot, method)
            except TelegramRetryAfter as exc:
                self._observer.platform_rate_limited(PLATFORM)
                rate_limited += 1
                if isinstance(method, NO_WAIT_METHODS) or rate_limited >= RATE_LIMIT_ATTEMPTS:
                    raise
                log.info("%s rate limited; retrying in %d s", name, exc.retry_after)
                await asyncio.sleep(exc.retry_after)
            except (TelegramNetworkError, TelegramServerError) as exc:
                failed += 1
                if isinstance(method, CALLER_RETRIES) or failed >= NETWORK_ATTEMPTS:
                    raise
                delay = NETWORK_BACKOFF * 2 ** (failed - 1)
                log.warning("%s failed (%s); retrying in %.1f s", name, exc.message, delay)
                await asyncio.sleep(delay)
