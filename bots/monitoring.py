"""METRICS_ADDR: the HTTP endpoint a supervisor and Prometheus read, on the bots' event loop.

- `GET /healthz`: 200 when every bot is connected and the database answers, else 503; the JSON
  body says which, e.g. `{"status": "ok", "bots": {"telegram": true}, "database": true}`.
- `GET /metrics`: the Prometheus text format, through prometheus_client's own aiohttp handler
  (it also answers OpenMetrics to a scraper that asks for it).

`parley run` starts it before the bots, so a supervisor sees 503 while they connect, and stops
it first on the way out. It runs on aiohttp's server, which aiogram and discord.py already bring
in: no thread, no second event loop. Without METRICS_ADDR, `Monitoring` is inert: no server and
no metrics, the service gets the no-op observer.
"""

from __future__ import annotations

import asyncio
import errno
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from aiohttp import web
from prometheus_client.aiohttp import make_aiohttp_handler

from bots.config import Settings
from bots.errors import BotStartupError
from bots.metrics import Metrics
from bots.platform_observer import NO_PLATFORM_OBSERVER, PlatformObserver
from core.conversation import NO_OBSERVER, ConversationObserver
from storage import StorageError, Store, WriteObserver

log = logging.getLogger(__name__)

#: Longest the health check waits for the database; a slower answer counts as down.
PING_TIMEOUT_SECONDS = 2.0
#: How long stopping the server waits for a request still being answered.
SHUTDOWN_TIMEOUT_SECONDS = 1.0

#: Each bot's platform and whether it is connected right now.
BotsConnected = Callable[[], Mapping[str, bool]]


class Connectable(Protocol):
    """The part of `bots.app.Bot` the health check reads."""

    platform: str

    @property
    def connected(self) -> bool: ...


async def database_answers(store: Store) -> bool:
    """True if the store answers a trivial query within `PING_TIMEOUT_SECONDS`."""
    try:
        await asyncio.wait_for(store.ping(), PING_TIMEOUT_SECONDS)
    except (StorageError, TimeoutError) as exc:
        reason = str(exc) or f"no answer within {PING_TIMEOUT_SECONDS:g} s"
        log.warning("Health check: the database does not answer (%s)", reason)
        return False
    return True


async def health(bots: BotsConnected, store: Store) -> tuple[bool, dict[str, Any]]:
    """(healthy, the JSON body) for `/healthz`."""
    connected = dict(bots())
    database = await database_answers(store)
    healthy = database and bool(connected) and all(connected.values())
    body = {"status": "ok" if healthy else "unavailable", "bots": connected, "database": database}
    return healthy, body


def build_app(metrics: Metrics, bots: BotsConnected, store: Store) -> web.Application:
    """The endpoint's routes; separate from the server so it is the one thing tests build."""

    async def healthz(request: web.Request) -> web.Response:
        healthy, body = await health(bots, store)
        return web.json_response(body, status=200 if healthy else 503)

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", make_aiohttp_handler(metrics.registry))
    return app


def bind_problem(exc: OSError) -> str:
    """Why the address could not be bound, in a few words an operator acts on."""
    if exc.errno == errno.EADDRINUSE:
        return "the port is already in use (another Parley, or another program)"
    if exc.errno == errno.EADDRNOTAVAIL:
        return "that address is not one of this machine's"
    if exc.errno == errno.EACCES:
        return "this user may not listen on that port (ports below 1024 need privileges)"
    return exc.strerror or str(exc)


class Monitoring:
    """METRICS_ADDR's metrics and endpoint for one `parley run`; inert when it is unset."""

    def __init__(self, settings: Settings) -> None:
        self._address = settings.metrics_address
        self._setting = settings.metrics_addr
        self.metrics = Metrics() if self._address is not None else None
        self._runner: web.AppRunner | None = None

    @property
    def observer(self) -> ConversationObserver:
        """What the conversation service reports to (nothing, when off)."""
        return self.metrics if self.metrics is not None else NO_OBSERVER

    @property
    def platform_observer(self) -> PlatformObserver:
        """What the bots report their platform's 429s to (nothing, when off)."""
        return self.metrics if self.metrics is not None else NO_PLATFORM_OBSERVER

    @property
    def on_write(self) -> WriteObserver | None:
        """The store's write timer (none, when off)."""
        return self.metrics.db_write if self.metrics is not None else None

    async def start(self, bots: Sequence[Connectable], store: Store) -> None:
        """Listen on METRICS_ADDR. A port in use (or any address that cannot be bound) stops
        the start with a `BotStartupError` naming the setting."""
        if self._address is None or self.metrics is None:
            return
        host, port = self._address
        self.metrics.expect(bot.platform for bot in bots)
        app = build_app(self.metrics, lambda: {bot.platform: bot.connected for bot in bots}, store)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_SECONDS)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as exc:
            await runner.cleanup()
            raise BotStartupError(
                f"METRICS_ADDR={self._setting}: cannot listen there: {bind_problem(exc)}. "
                "Choose another host:port, or unset METRICS_ADDR."
            ) from None
        self._runner = runner
        log.info("Health and metrics at %s (/healthz, /metrics)", ", ".join(self.urls))

    @property
    def urls(self) -> list[str]:
        """http://host:port of each socket listening (the real port, when METRICS_ADDR gave 0)."""
        return [] if self._runner is None else [_url(a) for a in self._runner.addresses]

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()


def _url(address: Any) -> str:
    """http://host:port of one bound socket address (IPv4 or IPv6 tuple)."""
    host, port = address[0], address[1]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
