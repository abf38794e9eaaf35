"""What the adapters report about their platforms, for the metrics: the 429s only they see.

The core's `ConversationObserver` hears the life of replies and knows nothing of platforms; a
platform's flood control is the adapters' business (Telegram's `RetryRequests`, Discord's
`http_trace`). `bots.metrics.Metrics` implements both protocols; `parley run` hands it to the
service as its observer and to each bot as this one.
"""

from __future__ import annotations

from typing import Protocol


class PlatformObserver(Protocol):
    def platform_rate_limited(self, platform: str) -> None:
        """The platform answered 429, whatever the adapter then did about it. Synchronous and
        quick: it runs on the request's own path."""
        ...


class NoPlatformObserver:
    """The default: nothing is watching."""

    def platform_rate_limited(self, platform: str) -> None:
        pass


NO_PLATFORM_OBSERVER = NoPlatformObserver()
