"""Discord's rate limits, watched: discord.py keeps them itself, so Parley only watches.

discord.py's HTTP client sleeps `retry_after` and tries again without telling its caller, so
no Parley code sees a Discord 429. Its public `http_trace` option hands an aiohttp
`TraceConfig` to the client's session; this one reports every response with status 429 (a
bucket's, the global limit's, or Cloudflare's) to the observer. A log filter on discord.py's
"We are being rate limited" warning would miss the 429s it raises instead of waiting.

The same trace notes when each answer arrived, for a caller inside `noting_answers()`: a call
that used up its bucket returns only once the bucket refills (discord.py sleeps on the way out,
in `Ratelimit.__aexit__`), seconds after Discord counted it, and a channel's write budget
(`bots.write_budget`) must count the write from when it landed, not from then.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from contextvars import ContextVar
from types import SimpleNamespace

import aiohttp

from bots.discord.messages import PLATFORM
from bots.platform_observer import PlatformObserver

TOO_MANY_REQUESTS = 429

#: The answer times the current task's calls collect (trace callbacks run in the calling task).
_ANSWERS: ContextVar[list[float] | None] = ContextVar("discord_answers", default=None)


@contextlib.contextmanager
def noting_answers() -> Iterator[list[float]]:
    """Inside: the monotonic time each HTTP answer arrives is appended to the yielded list."""
    answers: list[float] = []
    token = _ANSWERS.set(answers)
    try:
        yield answers
    finally:
        _ANSWERS.reset(token)


def count_rate_limits(observer: PlatformObserver) -> aiohttp.TraceConfig:
    """A trace config telling `observer` of each 429 answer the session receives, and noting
    every answer's time for `noting_answers`."""

    async def on_request_end(
        session: aiohttp.ClientSession,
        context: SimpleNamespace,
        params: aiohttp.TraceRequestEndParams,
    ) -> None:
        answers = _ANSWERS.get()
        if answers is not None:
            answers.append(time.monotonic())
        if params.response.status == TOO_MANY_REQUESTS:
            observer.platform_rate_limited(PLATFORM)

    trace = aiohttp.TraceConfig()
    trace.on_request_end.append(on_request_end)
    return trace
