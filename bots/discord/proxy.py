"""Discord through DISCORD_PROXY: an aiohttp-socks connector under discord.py's one session.

discord.py sends REST calls and opens the gateway WebSocket on one aiohttp session, so the
connector given as `Client(connector=...)` carries both. It is used for every kind of proxy,
HTTP included, rather than discord.py's `proxy=`/`proxy_auth=`: aiohttp's own HTTP proxy
support sends a ws:// gateway request to the proxy as a plain `GET ws://...`, which proxies
reject (proxy.py answers 400), where aiohttp-socks opens a CONNECT tunnel for every
connection. The real gateway is wss://, which aiohttp would tunnel too, but one path for every
address and every kind of proxy is the one the tests can prove. It is also the path aiogram
takes for Telegram, so both bots reach a proxy the same way.

A proxy that is down, refuses the password or cannot reach Discord raises exceptions that
discord.py does not take for network errors (`bots.proxy_failures`): its reconnect loop would end instead of retrying. `ProxiedConnector` re-raises them as
aiohttp's `ClientProxyConnectionError` (an `OSError` and an `aiohttp.ClientError`), as
aiohttp itself does for its own HTTP proxies.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import aiohttp
from aiohttp_socks import ProxyConnector, ProxyType

from bots.proxy import ProxyURL
from bots.proxy_failures import PROXY_FAILURES

if TYPE_CHECKING:
    from aiohttp.client_reqrep import ClientRequest
    from aiohttp.connector import Connection
    from aiohttp.tracing import Trace

PROXY_TYPES = {
    "http": ProxyType.HTTP,
    "socks4": ProxyType.SOCKS4,
    "socks5": ProxyType.SOCKS5,
    "socks5h": ProxyType.SOCKS5,
}


class ProxiedConnector(ProxyConnector):
    """The connector to give discord.py (`Client(connector=...)`) for a proxy: aiohttp-socks's,
    its failures raised as aiohttp's proxy connection error."""

    def __init__(self, proxy: ProxyURL) -> None:
        password = proxy.password.get_secret_value() if proxy.password else None
        super().__init__(
            host=proxy.host,
            port=proxy.port,
            proxy_type=PROXY_TYPES[proxy.scheme],
            username=proxy.username,
            password=password,
            rdns=True,  # the proxy resolves host names (see bots.proxy)
            limit=0,  # no cap on connections, like discord.py's own connector
        )
        self._address = proxy.address

    async def connect(
        self, req: ClientRequest, traces: list[Trace], timeout: aiohttp.ClientTimeout
    ) -> Connection:
        try:
            return await super().connect(req, traces, timeout)
        except PROXY_FAILURES as exc:
            cause = OSError(None, f"through the proxy {self._address}: {exc}")
            raise aiohttp.ClientProxyConnectionError(req.connection_key, cause) from exc
