"""Reaching a platform: capped exponential backoff, one short log line per failed try.

Both bots start the same way: connect, and let the platform confirm the bot (Telegram's getMe,
Discord's login), trying again while the platform cannot be reached, so a network outage at
boot does not make `parley run` exit and its supervisor restart it in a loop. What the operator
must fix (a rejected token, a refused intent) is a `BotStartupError` and stops at once. A
failure not recognised here as the network's is a bug and keeps its traceback.

`Link` is what a bot's `connected` reports: up once the platform confirmed the bot, down while
it cannot be reached. It also writes the lines an operator reads: "running as @name" only after
the platform confirmed the bot, one line per failed try, and one when the platform answers again.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar
from urllib.parse import urlsplit

import aiohttp

from bots.backoff import Backoff
from bots.errors import BotStartupError, NotTheApi

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Seconds before the second try; each failed try doubles the wait, up to `MAX_DELAY`.
INITIAL_DELAY = 1.0
#: The longest wait between two tries: a platform back after a long outage is found this soon.
MAX_DELAY = 60.0
#: Links of an exception's `__cause__` / `__context__` chain looked at for the root cause.
CHAIN_DEPTH = 8

_ERRNO_CAUSES = {
    errno.ECONNREFUSED: "connection refused",
    errno.ECONNRESET: "connection reset",
    errno.ECONNABORTED: "connection aborted",
    errno.ENETUNREACH: "network unreachable",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ETIMEDOUT: "timed out",
}


#: Reaching a platform: 1 s doubling to 60 s, no jitter (see `bots.backoff`).
DEFAULT_BACKOFF = Backoff(first=INITIAL_DELAY, cap=MAX_DELAY)


def host_of(url: str) -> str:
    """The host (and port) of `url` as a log line names it, never its user or password."""
    return urlsplit(url).netloc.rpartition("@")[2] or url


def seconds(value: float) -> str:
    """`4 s`, `0.5 s`: a delay as the log lines write it."""
    return f"{value:.3g} s"


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and what caused it: the libraries wrap the socket error once or twice."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < CHAIN_DEPTH:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def network_cause(exc: BaseException) -> str | None:
    """A few words on why a platform could not be reached, or None when `exc` is not a network
    failure (a bug, or a refusal the caller must handle itself). An answer that is not the
    API's counts as the network's, unless it is a 404 (`NotTheApi`)."""
    for link in _chain(exc):
        if isinstance(link, NotTheApi):
            return None if link.wrong_address else link.cause
        if isinstance(link, socket.gaierror | aiohttp.ClientConnectorDNSError):
            return "name not resolved"
        if isinstance(link, ssl.SSLError | aiohttp.ClientSSLError):
            return "TLS handshake failed"
        if isinstance(link, OSError) and link.errno in _ERRNO_CAUSES:
            return _ERRNO_CAUSES[link.errno]
        if isinstance(link, aiohttp.ServerDisconnectedError):
            return "server disconnected"
        if isinstance(link, aiohttp.WSServerHandshakeError):
            return f"gateway answered HTTP {link.status}"
        if isinstance(link, TimeoutError):
            return "timed out"
        status = getattr(link, "status", None)
        if isinstance(status, int) and status >= 500:
            return f"server error {status}"
    for link in _chain(exc):
        if isinstance(link, aiohttp.ClientError | OSError):
            return (str(link).splitlines() or [type(link).__name__])[0]
    return None


class Link:
    """Whether one platform answers; the bot's `connected`, and the operator's log lines."""

    def __init__(self, platform: str, host: str) -> None:
        """`platform` starts each line ("Telegram"); `host` is what cannot be reached."""
        self.platform = platform
        self.host = host
        self.up = False
        self._confirmed = False
        self._down_since: float | None = None

    def failed(self, cause: str, retry_in: float) -> None:
        """A try failed on the network: one line saying where, why and when the next one is."""
        self.lost()
        log.warning(
            "%s: cannot reach %s (%s); retrying in %s",
            self.platform,
            self.host,
            cause,
            seconds(retry_in),
        )

    def lost(self) -> None:
        """The connection is gone (the library says why, or `failed` does)."""
        self.up = False
        if self._down_since is None:
            self._down_since = time.monotonic()

    def confirmed(self, name: str) -> None:
        """The platform confirmed the bot (getMe, READY): the first time, say who we run as."""
        if not self._confirmed:
            self._confirmed = True
            self._down_since = None  # the tries before the start are no outage to report
            log.info("%s: running as @%s", self.platform, name)
        self.answered()

    def answered(self) -> None:
        """The platform answered; after an outage, say how long it lasted."""
        if self._down_since is not None and self._confirmed and not self.up:
            log.info(
                "%s: connected again after %s",
                self.platform,
                seconds(time.monotonic() - self._down_since),
            )
        self._down_since = None
        self.up = self._confirmed

    def closed(self) -> None:
        """The bot stopped: it is not connected any more, and that is no outage."""
        self.up = False
        self._down_since = None


async def connect_with_retries(
    link: Link,
    attempt: Callable[[], Awaitable[T]],
    cause_of: Callable[[BaseException], str | None],
    backoff: Backoff,
) -> T:
    """`attempt()` until it returns; a failure `cause_of` names is retried after the next wait.

    `BotStartupError` (the operator must act) and any failure `cause_of` does not name (a bug)
    propagate at once.
    """
    for delay in backoff.delays():
        try:
            return await attempt()
        except BotStartupError:
            raise
        except Exception as exc:
            cause = cause_of(exc)
            if cause is None:
                raise
            link.failed(cause, delay)
        await asyncio.sleep(delay)
    raise AssertionError("unreachable: the backoff never ends")
