"""Fallback across providers, itself a provider (g4f's `IterListProvider`, `RetryProvider`).

The rule that makes fallback safe in a chat: a provider may be skipped only before its first
piece of text. Once text has reached the user, a failure is raised as it is; splicing another
provider's answer onto half of this one would produce a reply nobody wrote.
"""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator, Sequence
from typing import Any

from .. import errors
from ..types import ProviderInfo
from .base import BaseProvider, Messages, StreamItem, provider_name

log = logging.getLogger(__name__)


class IterListProvider(BaseProvider):
    """Try providers in order (optionally shuffled) until one produces text."""

    attempts_per_provider = 1

    def __init__(self, providers: Sequence[Any], shuffle: bool = False) -> None:
        self.providers = list(providers)
        self.shuffle = shuffle

    @property
    def name(self) -> str:
        return type(self).__name__

    @property
    def working(self) -> bool:  # type: ignore[override]
        return any(getattr(p, "working", False) for p in self.providers)

    @property
    def supports_stream(self) -> bool:  # type: ignore[override]
        return any(getattr(p, "supports_stream", False) for p in self.providers)

    def _candidates(self, ignore_working: bool) -> list[Any]:
        candidates = [p for p in self.providers if ignore_working or getattr(p, "working", False)]
        if self.shuffle:
            random.shuffle(candidates)
        return candidates

    async def create_async_generator(
        self, model: str, messages: Messages, **kwargs: Any
    ) -> AsyncIterator[StreamItem]:
        """Yield the output of the first provider that starts, announced by a `ProviderInfo`."""
        failures: dict[str, BaseException] = {}
        candidates = self._candidates(kwargs.get("ignore_working", False))
        if not candidates:
            raise errors.RetryNoProviderError(
                "No working provider in the fallback list: "
                + (", ".join(provider_name(p) for p in self.providers) or "the list is empty")
                + ". Set the providers' API keys or enable them."
            )
        for provider in candidates:
            name = provider_name(provider)
            for attempt in range(self.attempts_per_provider):
                started = False
                # Usage or finish reason said before any text belongs to an answer that may
                # never come; held until this provider's first text, dropped if it is skipped.
                held: list[StreamItem] = []
                try:
                    async for item in provider.create_async_generator(model, messages, **kwargs):
                        if isinstance(item, str):
                            if not item:
                                continue
                            if not started:
                                started = True
                                for early in held:
                                    yield early
                                yield ProviderInfo(name)
                        elif not started:
                            held.append(item)
                            continue
                        yield item
                except Exception as exc:
                    if started:
                        raise
                    log.info("%s failed before its first text (%s), trying the next", name, exc)
                    failures[name] = exc
                    continue
                if started:
                    return
                failures[name] = errors.EmptyResponseError(f"{name} returned an empty answer.")
                log.info("%s attempt %d returned nothing", name, attempt + 1)
        raise _combined(failures)


def _combined(failures: dict[str, BaseException]) -> BaseException:
    if len(failures) == 1:
        return next(iter(failures.values()))
    listing = "; ".join(f"{name}: {type(e).__name__}: {e}" for name, e in failures.items())
    return errors.RetryProviderError(f"Every provider failed. {listing}", failures)


class RetryProvider(IterListProvider):
    """Like `IterListProvider`, but each provider gets up to `max_retries` attempts."""

    def __init__(self, providers: Sequence[Any], shuffle: bool = False, max_retries: int = 3):
        super().__init__(providers, shuffle)
        self.attempts_per_provider = max(1, max_retries)
