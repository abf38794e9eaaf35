"""Long polling that survives the network and stops without answering anything twice.

Parley polls itself instead of calling aiogram's `Dispatcher.start_polling`, which does the same
loop (`getUpdates`, each update handed to `feed_update` in its own task) but cannot do three
things Parley needs: its only handle on a stop leaves the handlers running with no way to wait
for them, it never tells Telegram which updates it finished with when it stops, and each failed
poll logs two lines in its own words while a rejected token is retried forever.

Which updates are confirmed (Telegram sends an update again until a later `getUpdates` carries an
`offset` above its id): exactly those handed to a handler (`bots.telegram.intake`). An update is
handed over as soon as it arrives, so once polling stops (at once, on SIGTERM or Ctrl-C) no further update is taken:
one sent meanwhile stays with Telegram and the next start answers it. `close()` then sends the
offset past the last update handed over (one short `getUpdates` with `timeout=0`), so a restart
does not answer again a message whose reply finished, or was cut short with the shutdown note,
during the stop.
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.exceptions import (
    ClientDecodeError,
    TelegramConflictError,
    TelegramNetworkError,
    TelegramNotFound,
    TelegramRetryAfter,
    TelegramServerError,
    TelegramUnauthorizedError,
)
from aiogram.methods import GetMe, GetUpdates
from aiogram.types import User

from bots.backoff import Backoff
from bots.errors import BotStartupError, NotTheApi
from bots.startup import Link, network_cause
from bots.telegram.intake import UpdateIntake
from storage import StorageError

log = logging.getLogger(__name__)

#: Seconds the last `getUpdates` at shutdown may take; past it the next start may repeat a reply.
CONFIRM_TIMEOUT = 5.0

BAD_TOKEN_HELP = (
    "Telegram rejected TELEGRAM_BOT_TOKEN. Copy the token again from @BotFather "
    "(/mybots -> your bot -> API Token)."
)
NOT_THE_BOT_API_HELP = (
    "{base} answered getMe with 404 Not Found: it is not a Telegram Bot API server. Check "
    "TELEGRAM_API_BASE (default https://api.telegram.org, without /bot or a token)."
)


def telegram_cause(exc: BaseException) -> str | None:
    """Why the Bot API could not be used just now, in a few words; None when it is no outage."""
    if isinstance(exc, TelegramServerError):
        return f"server error: {exc.message}"
    if isinstance(exc, TelegramConflictError):  # another instance polling, or a webhook set
        return f"conflict: {exc.message}"
    if isinstance(exc, TelegramRetryAfter):  # still limited after RetryRequests waited
        return f"flood control, retry after {exc.retry_after} s"
    if isinstance(exc, ClientDecodeError):  # a proxy or captive portal answered instead
        return "the answer was not the Bot API's; check TELEGRAM_API_BASE"
    if isinstance(exc, TelegramNetworkError | NotTheApi):
        return network_cause(exc) or str(exc)
    return None


async def ask_who(bot: Bot) -> User:
    """getMe, its failures sorted as `parley doctor` and the start-up both read them: a rejected
    token is a `BotStartupError`; an answer that is not the Bot API's, or its own 404, is
    `NotTheApi` (see its rule); other failures are aiogram's."""
    try:
        return await bot.me()
    except TelegramUnauthorizedError:
        raise BotStartupError(BAD_TOKEN_HELP) from None
    except TelegramNotFound:
        raise NotTheApi(404, "application/json") from None
    except ClientDecodeError as exc:
        raise await what_answered(bot) from exc


async def what_answered(bot: Bot) -> NotTheApi:
    """What answered getMe instead of the Bot API, asked once more past aiogram, whose decode
    error drops the HTTP status the rule needs (a 404 or anything else)."""
    session = bot.session
    assert isinstance(session, AiohttpSession)  # Parley's, with the proxy when one is set
    http = await session.create_session()
    url = session.api.api_url(token=bot.token, method="getMe")
    try:
        async with http.post(url, timeout=aiohttp.ClientTimeout(total=session.timeout)) as r:
            return NotTheApi(r.status, r.content_type)
    except (aiohttp.ClientError, TimeoutError) as exc:  # gone meanwhile: an outage after all
        raise TelegramNetworkError(GetMe(), f"{type(exc).__name__}: {exc}") from exc


async def identify(bot: Bot) -> User:
    """Ask Telegram who the bot is (getMe), at the start in either mode.

    A rejected token, or an address that is no Bot API (a 404), is a `BotStartupError`; a
    network failure, or another answer that is not the Bot API's, propagates for the caller's
    retry.
    """
    try:
        return await ask_who(bot)
    except NotTheApi as answer:
        if not answer.wrong_address:
            raise
        base = bot.session.api.base.split("/bot{token}")[0]
        raise BotStartupError(NOT_THE_BOT_API_HELP.format(base=base)) from None


async def confirm_bot(bot: Bot) -> User:
    """Who the bot is (`identify`), and any webhook dropped: it blocks long polling."""
    me = await identify(bot)
    await bot.delete_webhook()
    return me


class Poller:
    """`getUpdates` in a loop, each update handed to the intake (its own task)."""

    def __init__(
        self,
        bot: Bot,
        intake: UpdateIntake,
        link: Link,
        *,
        polling_timeout: int,
        backoff: Backoff,
    ) -> None:
        self._bot = bot
        self._intake = intake
        self._link = link
        self._timeout = polling_timeout
        self._backoff = backoff
        #: The next update id to ask for: every update below it was handed to a handler.
        self._offset: int | None = None
        #: The offset of the last `getUpdates` Telegram answered: it holds nothing below it.
        self._confirmed: int | None = None

    async def connect(self) -> User:
        """Who the bot is (`confirm_bot`), the webhook that would block polling dropped."""
        return await confirm_bot(self._bot)

    async def run(self) -> None:
        """Poll until cancelled. A failure on the network or the server waits the backoff and polls
        again (one log line each); a rejected token ends it with a `BotStartupError`."""
        request = GetUpdates(
            timeout=self._timeout,
            allowed_updates=self._intake.dispatcher.resolve_used_update_types(),
        )
        # The server holds the request up to `timeout`: the client must wait longer than that.
        request_timeout = int(self._bot.session.timeout + self._timeout)
        delays = self._backoff.delays()
        while True:
            request.offset = self._offset
            try:
                updates = await self._bot(request, request_timeout=request_timeout)
            except TelegramUnauthorizedError:
                raise BotStartupError(BAD_TOKEN_HELP) from None
            except Exception as exc:
                cause = telegram_cause(exc)
                if cause is None:
                    raise
                delay = next(delays)
                self._link.failed(cause, delay)
                await asyncio.sleep(delay)
                continue
            delays = self._backoff.delays()
            self._confirmed = request.offset
            self._link.answered()
            for update in updates:
                try:
                    await self._intake.accept(update)
                except StorageError as exc:  # not taken in: asked for again after a wait
                    delay = next(delays)
                    log.warning(
                        "Telegram: could not take update %d in (%s); polling again in %s s",
                        update.update_id,
                        exc,
                        f"{delay:g}",
                    )
                    await asyncio.sleep(delay)
                    break
                self._offset = update.update_id + 1

    async def close(self) -> None:
        """Tell Telegram that every update handed to a handler is done with (see the module
        docstring); bounded, and only a log line if Telegram cannot be reached."""
        offset = self._offset
        if offset is None or offset == self._confirmed:
            return
        try:
            await asyncio.wait_for(
                self._bot(GetUpdates(offset=offset, limit=1, timeout=0)), CONFIRM_TIMEOUT
            )
        except Exception as exc:
            cause = telegram_cause(exc) or network_cause(exc) or type(exc).__name__
            log.warning(
                "Telegram: could not confirm the updates answered (%s); the next start may "
                "answer messages up to update %d again",
                cause,
                offset - 1,
            )
            return
        self._confirmed = offset
