"""Webhook mode: Telegram posts each update to Parley's own HTTP server instead of being polled.

Set TELEGRAM_WEBHOOK_URL (the public https URL, served by a reverse proxy terminating TLS) and
TELEGRAM_WEBHOOK_SECRET; the server is aiogram's aiohttp integration (`SimpleRequestHandler`,
`setup_application`) listening on WEBHOOK_LISTEN, answering on the URL's path. Several replicas
may sit behind one proxy: each sets the same webhook at its start, and any may take any update.

A request is answered:
- 403, with no processing, when the `X-Telegram-Bot-Api-Secret-Token` header is missing or wrong
  (aiogram says 401; Telegram never sends a wrong secret, so it is someone else, forbidden). Each
  source (the proxy's `X-Forwarded-For`, else the peer) is logged once, so a scanner costs one
  line, not one per request.
- 400 with a log line when the body is not JSON or not an Update: aiogram would answer 200 and
  fail in a background task, or 500; neither says what was wrong, and a 5xx makes Telegram retry.
- 500 when the update could not be taken in (with replicas: the database failed to write it
  into the inbox), so Telegram delivers it again.
- 200 as soon as `UpdateIntake.accept` took the update in (with replicas: once the inbox
  insert committed, so a replica dying right after loses nothing). The reply is handled in the background
  (aiogram's `handle_in_background`): waiting for it would hold Telegram's request for the whole
  streamed reply, and Telegram delivers again an update it thinks slow.

At the start the server listens first, then `setWebhook` is called (with the secret, the
update types the dispatcher handles, and the updates pending kept: nothing sent while no replica
was up is lost). At a stop the server stops taking requests (the proxy sends the next ones to
another replica, or Telegram keeps them until one is back), and the replies in flight get their
grace (`bots.shutdown`). The webhook is NOT deleted: other replicas still serve it, and deleting it
would make Telegram hold every update until the next start; a single replica that stops leaves
the updates waiting with Telegram, delivered when it is back.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Any

from aiogram import Bot
from aiogram.exceptions import TelegramBadRequest
from aiogram.types import Update, User
from aiogram.webhook.aiohttp_server import SimpleRequestHandler, setup_application
from aiohttp import web

from bots.config import Settings
from bots.errors import BotStartupError
from bots.monitoring import bind_problem
from bots.telegram.intake import UpdateIntake
from bots.telegram.polling import identify
from storage import StorageError

log = logging.getLogger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
#: Distinct sources of refused requests logged (each once); past it, only a last line says so.
MAX_LOGGED_SOURCES = 1024
#: Seconds a stop lets the requests being answered finish: each only takes an update in.
SHUTDOWN_TIMEOUT = 1.0
#: The largest request body taken: an update is a few kilobytes (aiohttp's default, named).
MAX_BODY_BYTES = 1024 * 1024


class RefusedSources:
    """The sources already logged for a wrong secret: one line each, bounded."""

    def __init__(self, limit: int = MAX_LOGGED_SOURCES) -> None:
        self._seen: set[str] = set()
        self._limit = limit
        self._full = False

    def note(self, source: str, path: str) -> None:
        if source in self._seen or self._full:
            return
        if len(self._seen) >= self._limit:
            self._full = True
            log.warning("Telegram webhook: refused requests from more sources; not logged")
            return
        self._seen.add(source)
        log.warning(
            "Telegram webhook: refused a request to %s from %s: missing or wrong %s (403); "
            "further ones from there are not logged",
            path,
            source,
            SECRET_HEADER,
        )


def source_of(request: web.Request) -> str:
    """Who sent `request`: the client the reverse proxy names first, else the peer."""
    forwarded = request.headers.get("X-Forwarded-For", "").split(",", 1)[0].strip()
    return forwarded or request.remote or "unknown"


class WebhookRequests(SimpleRequestHandler):
    """aiogram's handler for one bot, with Parley's answers (see the module docstring)."""

    def __init__(self, bot: Bot, intake: UpdateIntake, secret: str) -> None:
        super().__init__(intake.dispatcher, bot, handle_in_background=True, secret_token=secret)
        self._intake = intake
        self._secret = secret.encode()
        self._refused = RefusedSources()

    def verify_secret(self, telegram_secret_token: str, bot: Bot) -> bool:
        """Compared as bytes: aiogram compares the header as text, and `compare_digest` raises
        TypeError for non-ASCII text, which anyone could send to turn the 403 into a 500."""
        sent = telegram_secret_token.encode("utf-8", "surrogatepass")
        return secrets.compare_digest(sent, self._secret)

    async def handle(self, request: web.Request) -> web.Response:
        bot = await self.resolve_bot(request)
        if not self.verify_secret(request.headers.get(SECRET_HEADER, ""), bot):
            self._refused.note(source_of(request), request.path)
            return web.Response(status=403, text="Forbidden")
        try:
            raw = await request.json(loads=bot.session.json_loads)
            update = Update.model_validate(raw, context={"bot": bot})
        except (ValueError, RecursionError) as exc:  # not JSON/UTF-8, too deep, no Update
            log.warning(
                "Telegram webhook: refused a request from %s: %s (400)",
                source_of(request),
                _body_problem(exc),
            )
            return web.Response(status=400, text="Bad Request: the body is not an Update")
        try:
            await self._intake.accept(update)
        except StorageError as exc:  # not taken in: Telegram delivers it again
            log.warning(
                "Telegram webhook: could not take update %d in: %s (500)", update.update_id, exc
            )
            return web.Response(status=500, text="Internal Server Error: try again")
        return web.json_response({})

    async def close(self) -> None:
        """Leave the bot's session open: the server stops before the replies in flight end, and
        they still send and edit through it; `TelegramBot.run` closes it after them."""


def _body_problem(exc: ValueError | RecursionError) -> str:
    """Why a body is no Update, without quoting it (it may hold someone's message)."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "the body"
        return f"not an Update ({where}: {first['msg']})"
    return f"not JSON ({type(exc).__name__})"


class Webhook:
    """The server taking updates for one bot, and the webhook that points Telegram at it."""

    def __init__(self, bot: Bot, intake: UpdateIntake, settings: Settings) -> None:
        assert settings.telegram_webhook_url is not None
        assert settings.telegram_webhook_secret is not None
        self._bot = bot
        self._intake = intake
        self._url = settings.telegram_webhook_url
        self._secret = settings.telegram_webhook_secret.get_secret_value()
        self._path = settings.webhook_path
        self._listen = settings.webhook_listen
        self._address = settings.webhook_address
        self._runner: web.AppRunner | None = None

    async def connect(self) -> User:
        """Listen (once), then confirm the bot and set the webhook; retried by the caller while
        Telegram cannot be reached. A refused webhook or an address that cannot be bound is a
        `BotStartupError`."""
        if self._runner is None:
            await self._start_server()
        me = await identify(self._bot)
        try:
            await self._bot.set_webhook(
                self._url,
                secret_token=self._secret,
                allowed_updates=self._intake.dispatcher.resolve_used_update_types(),
                drop_pending_updates=False,
            )
        except TelegramBadRequest as exc:
            raise BotStartupError(
                f"Telegram refused TELEGRAM_WEBHOOK_URL={self._url}: {exc.message}"
            ) from None
        return me

    async def run(self) -> None:
        """Serve until cancelled: the requests are answered by the server's own tasks."""
        await asyncio.Event().wait()

    async def close(self) -> None:
        """Stop taking requests (the webhook stays set: see the module docstring)."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def _start_server(self) -> None:
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        WebhookRequests(self._bot, self._intake, self._secret).register(app, path=self._path)
        setup_application(app, self._intake.dispatcher, bot=self._bot)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT)
        await runner.setup()
        host, port = self._address
        try:
            site = web.TCPSite(runner, host, port)
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise BotStartupError(
                f"WEBHOOK_LISTEN={self._listen}: cannot listen there: {bind_problem(exc)}. "
                "Choose another host:port."
            ) from None
        self._runner = runner
        log.info("Telegram: taking webhook updates on %s%s", _bound(site), self._path)


def _bound(site: web.TCPSite) -> str:
    """host:port the site listens on (the port the system chose, when WEBHOOK_LISTEN said 0)."""
    server: Any = site._server  # aiohttp keeps the bound sockets there only
    host, port = server.sockets[0].getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
