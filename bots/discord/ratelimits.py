"""Discord's 429s, counted: discord.py waits them out itself, so Parley only watches.

discord.py's HTTP client sleeps `retry_after` and tries again without telling its caller, so
no Parley code sees a Discord 429. Its public `http_trace` option hands an aiohttp
`TraceConfig` to the client's session; this one reports every response with status 429 (a
bucket's, the global limit's, or Cloudflare's) to the observer. A log filter on discord.py's
"We are being rate limited" warning would miss the 429s it raises instead of waiting.
"""

from __future__ import annotations

from types import SimpleNamespace

import aiohttp

from bots.discord.messages import PLATFORM
from core.conversation import ConversationObserver

TOO_MANY_REQUESTS = 429


def count_rate_limits(observer: ConversationObserver) -> aiohttp.TraceConfig:
    """A trace config telling `observer` of each 429 answer the session receives."""

    async def on_request_end(
        session: aiohttp.ClientSession,
        context: SimpleNamespace,
        params: aiohttp.TraceRequestEndParams,
    ) -> None:
        if params.response.status == TOO_MANY_REQUESTS:
            observer.platform_rate_limited(PLATFORM)

    trace = aiohttp.TraceConfig()
    trace.on_request_end.append(on_request_end)
    return trace
