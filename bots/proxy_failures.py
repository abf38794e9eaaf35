"""What a proxy's failure looks like coming out of aiohttp-socks, for both bots' adapters.

Kept apart from `bots.proxy` (the setting), which `parley` reads for every command: this one
loads aiohttp-socks and aiohttp, which only the bots need.
"""

from __future__ import annotations

import asyncio

from aiohttp_socks import ProxyConnectionError, ProxyError, ProxyTimeoutError

#: Raised while a connection is opened through a proxy that is down, refuses the credentials
#: or cannot reach the destination. aiohttp-socks (0.11 on) raises its own exceptions, plain
#: `Exception`s rather than `OSError`s; and python-socks (3.2) lets asyncio's
#: `IncompleteReadError` through when the proxy hangs up mid-handshake, as pproxy does on a
#: wrong password.
PROXY_FAILURES: tuple[type[Exception], ...] = (
    ProxyConnectionError,
    ProxyTimeoutError,
    ProxyError,
    asyncio.IncompleteReadError,
)
