"""Webhooks for the fake Bot API: `setWebhook`, `deleteWebhook`, `getWebhookInfo` and delivery.

The rules are the Bot API's: the URL must be HTTPS on port 443, 80, 88 or 8443 (a test's bot
listens on plain http://127.0.0.1 at any port, which the fake takes only with
`allow_http_webhooks=True`, as a self-hosted Bot API server in `--local` mode does); the
`secret_token` is 1-256 characters of A-Z a-z 0-9 _ -; `allowed_updates` is a list of update
types, kept when omitted; `max_connections` is 1-100 (40 by default); pending updates stay
unless `drop_pending_updates`. An empty `url` removes the webhook, like `deleteWebhook`.

Once a webhook is set, `getUpdates` answers 409 Conflict and each update is POSTed as JSON with
the `X-Telegram-Bot-Api-Secret-Token` header. A delivery that fails (no 2xx, no connection, or no
answer within `timeout`) is tried again after `retry_delay`, until one succeeds or the webhook is
removed. Updates of one chat go one at a time, in order (the next waits until the one before was
delivered); other chats' go alongside, up to `max_connections` at once.

Two test controls stand for what sits between Telegram and the bot: `deliver_to`, a list of URLs
taken in turn for each POST (a reverse proxy in front of replicas, round-robin; None: the
webhook's URL), and `duplicate_fraction`, the share of updates POSTed twice at once, each copy
to the next URL in turn (Telegram delivers again an update it thinks slow): with 0.1, every
tenth update. Every POST is kept in `deliveries`.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp

if TYPE_CHECKING:
    from tests.fakes.telegram_api import FakeTelegramAPI

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
#: The ports the cloud Bot API delivers webhooks to.
WEBHOOK_PORTS = (443, 80, 88, 8443)
DEFAULT_MAX_CONNECTIONS = 40
_SECRET_RE = re.compile(r"[A-Za-z0-9_-]{1,256}")
HTTPS_REQUIRED = "Bad Request: bad webhook: An HTTPS URL must be provided for webhook"
BAD_PORT = "Bad Request: bad webhook: Webhook can be set up only on ports 80, 88, 443 or 8443"
BAD_URL = "Bad Request: bad webhook: Failed to resolve host: Name or service not known"
BAD_SECRET = "Bad Request: secret token contains unallowed characters"
BAD_ALLOWED_UPDATES = "Bad Request: can't parse allowed updates: Array expected"
BAD_MAX_CONNECTIONS = "Bad Request: max_connections must be between 1 and 100"
WEBHOOK_CONFLICT = (
    "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete "
    "the webhook first"
)


@dataclass(frozen=True)
class WebhookSetting:
    url: str
    secret: str | None
    max_connections: int


@dataclass(frozen=True)
class Delivery:
    """One POST of an update: where, and what came back (`status` None: no answer)."""

    update_id: int
    url: str
    status: int | None
    error: str | None
    at: float

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def chat_of(update: dict) -> int | None:
    """The chat an update belongs to (its message's, or its button's message's), if any."""
    for value in update.values():
        if isinstance(value, dict):
            chat = value.get("chat") or (value.get("message") or {}).get("chat")
            if isinstance(chat, dict):
                return chat.get("id")
    return None


class Webhooks:
    """The webhook of one fake server and the deliveries to it."""

    def __init__(self, api: FakeTelegramAPI, *, allow_http: bool) -> None:
        self._api = api
        self.allow_http = allow_http
        self.setting: WebhookSetting | None = None
        self.deliver_to: list[str] | None = None
        self.duplicate_fraction = 0.0
        self.timeout = 10.0
        self.retry_delay = 0.1
        self.deliveries: list[Delivery] = []
        self.delivered: set[int] = set()
        self._in_flight: dict[int, int | None] = {}  # update id -> its chat
        self._first_deliveries = 0
        self._turn = itertools.count()
        self._last_error: tuple[int, str] | None = None
        self._http: aiohttp.ClientSession | None = None
        self._loop: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # -- lifecycle (with the server) --------------------------------------------------------

    def start(self) -> None:
        self._http = aiohttp.ClientSession()
        self._loop = asyncio.create_task(self._deliver_forever())

    async def stop(self) -> None:
        for task in (self._loop, *self._tasks):
            if task is not None:
                task.cancel()
        await asyncio.gather(*(t for t in (self._loop, *self._tasks) if t), return_exceptions=True)
        self._loop, self._in_flight = None, {}
        if self._http is not None:
            await self._http.close()
            self._http = None

    # -- the methods ------------------------------------------------------------------------

    def set(self, params: dict) -> bool:
        # Imported here: the server module imports this one to build its `Webhooks`.
        from tests.fakes.telegram_api import bad_request

        url = str(params.get("url") or "")
        if not url:
            self.remove(params)
            return True
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise bad_request(BAD_URL) from None
        if not parts.hostname:
            raise bad_request(BAD_URL)
        if parts.scheme != "https" and not (self.allow_http and parts.scheme == "http"):
            raise bad_request(HTTPS_REQUIRED)
        if not self.allow_http and (port or 443) not in WEBHOOK_PORTS:
            raise bad_request(BAD_PORT)
        secret = params.get("secret_token")
        if secret is not None and not (isinstance(secret, str) and _SECRET_RE.fullmatch(secret)):
            raise bad_request(BAD_SECRET)
        allowed = params.get("allowed_updates")
        if allowed is not None:
            if not isinstance(allowed, list) or not all(isinstance(a, str) for a in allowed):
                raise bad_request(BAD_ALLOWED_UPDATES)
            if allowed:
                self._api.allowed_updates = frozenset(allowed)
        connections = params.get("max_connections", DEFAULT_MAX_CONNECTIONS)
        if not isinstance(connections, int) or not 1 <= connections <= 100:
            raise bad_request(BAD_MAX_CONNECTIONS)
        if params.get("drop_pending_updates"):
            self._drop_pending()
        self.setting = WebhookSetting(url, secret, connections)
        self._last_error = None
        return True

    def remove(self, params: dict) -> bool:
        self.setting = None
        if params.get("drop_pending_updates"):
            self._drop_pending()
        return True

    def info(self) -> dict:
        out: dict[str, Any] = {
            "url": self.setting.url if self.setting else "",
            "has_custom_certificate": False,
            "pending_update_count": len(self._pending()),
        }
        if self.setting is not None:
            out["max_connections"] = self.setting.max_connections
            if self._api.allowed_updates:
                out["allowed_updates"] = sorted(self._api.allowed_updates)
        if self._last_error is not None:
            out["last_error_date"], out["last_error_message"] = self._last_error
        return out

    def _drop_pending(self) -> None:
        self.delivered.update(u["update_id"] for u in self._pending())

    # -- delivery ---------------------------------------------------------------------------

    def _pending(self) -> list[dict]:
        """Updates not yet delivered nor confirmed by a poll, of the types the bot asked for."""
        allowed = self._api.allowed_updates
        return [
            u
            for u in self._api.updates
            if u["update_id"] > self._api._confirmed
            and u["update_id"] not in self.delivered
            and (not allowed or allowed & u.keys())
        ]

    def _ready(self) -> list[dict]:
        """The pending updates to POST now: each chat's oldest, if the chat has none in flight."""
        if self.setting is None:
            return []
        room = self.setting.max_connections - len(self._in_flight)
        busy = set(self._in_flight.values()) - {None}
        ready: list[dict] = []
        for update in self._pending():
            if len(ready) >= room:
                break
            if update["update_id"] in self._in_flight:
                continue
            chat = chat_of(update)
            if chat is not None and chat in busy:
                continue
            busy.add(chat)
            ready.append(update)
        return ready

    async def _deliver_forever(self) -> None:
        ready: list[dict] = []

        def found() -> bool:
            ready[:] = self._ready()
            return bool(ready)

        while True:
            async with self._api._changed:
                await self._api._changed.wait_for(found)
            for update in ready:
                self._in_flight[update["update_id"]] = chat_of(update)
                task = asyncio.create_task(self._deliver(update))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _deliver(self, update: dict) -> None:
        self._first_deliveries += 1
        n, share = self._first_deliveries, self.duplicate_fraction
        copies = 2 if math.floor(n * share) > math.floor((n - 1) * share) else 1
        while self.setting is not None:
            setting = self.setting
            results = await asyncio.gather(*(self._post(update, setting) for _ in range(copies)))
            if any(results):
                self.delivered.add(update["update_id"])
                break
            copies = 1
            await asyncio.sleep(self.retry_delay)
        self._in_flight.pop(update["update_id"], None)
        await self._api._notify()

    async def _post(self, update: dict, setting: WebhookSetting) -> bool:
        assert self._http is not None
        targets = self.deliver_to or [setting.url]
        url = targets[next(self._turn) % len(targets)]
        headers = {SECRET_HEADER: setting.secret} if setting.secret else {}
        status: int | None = None
        error: str | None = None
        try:
            async with self._http.post(
                url, json=update, headers=headers, timeout=aiohttp.ClientTimeout(self.timeout)
            ) as answer:
                await answer.read()
                status = answer.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        delivery = Delivery(update["update_id"], url, status, error, time.monotonic())
        self.deliveries.append(delivery)
        if not delivery.ok:
            self._last_error = (
                int(time.time()),
                error or f"Wrong response from the webhook: {status}",
            )
        await self._api._notify()
        return delivery.ok
