"""Telegram through TELEGRAM_PROXY: aiogram's own proxy support, its failures made network errors.

aiogram's `AiohttpSession(proxy=URL)` opens every Bot API connection through aiohttp-socks,
for HTTP and SOCKS proxies alike, and always lets the proxy resolve host names. Two gaps are
filled here:
- aiohttp-socks's URL parser knows `socks5` but not `socks5h`; since the proxy resolves names
  either way, `socks5h` is handed over as `socks5`.
- A proxy that is down, refuses the password or cannot reach Telegram raises exceptions that
  are not network errors to aiogram (`bots.proxy_failures`), which it passes through untouched
  rather than as `TelegramNetworkError`. `ProxyFailures` turns them into that, so the bot's
  retries, aiogram's polling backoff and the start-up checks treat a proxy outage as the
  network outage it is.
"""

from __future__ import annotations

from typing import Any

from aiogram import Bot
from aiogram.client.session.middlewares.base import (
    BaseRequestMiddleware,
    NextRequestMiddlewareType,
)
from aiogram.exceptions import TelegramNetworkError
from aiogram.methods import TelegramMethod

from bots.proxy import ProxyURL
from bots.proxy_failures import PROXY_FAILURES


def aiogram_proxy(proxy: ProxyURL) -> str:
    """The URL aiogram's `AiohttpSession(proxy=...)` takes, credentials included."""
    return proxy.url(scheme="socks5" if proxy.scheme == "socks5h" else proxy.scheme)


class ProxyFailures(BaseRequestMiddleware):
    """Re-raise a proxy's failure as `TelegramNetworkError`, naming the proxy (no password).

    Register it after `RetryRequests`: the later a request middleware is registered, the
    closer it sits to the request, and the retries must see the translated error."""

    def __init__(self, proxy: ProxyURL) -> None:
        self._address = proxy.address

    async def __call__(
        self,
        make_request: NextRequestMiddlewareType[Any],
        bot: Bot,
        method: TelegramMethod[Any],
    ) -> Any:
        try:
            return await make_request(bot, method)
        except PROXY_FAILURES as exc:
            message = f"through the proxy {self._address}: {exc}"
            raise TelegramNetworkError(method=method, message=message) from exc
