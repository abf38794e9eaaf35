"""Fallback across providers, itself a provider (g4f's `IterListProvider`, `RetryProvider`).

The rule that makes fallback safe in a chat: a provider may be skipped only before its first
piece of text. Once text has reached the user, a failure is raised as it is; splicing another
provider's answer onto half of this one would produce a reply nobody wrote.

When none answers, g4f's rule decides what is raised: an empty answer is not an error, so one
provider's error is re-raised as it was even when the others returned nothing; only several
real errors are combined into a `RetryProviderError`; nothing but empty answers raises
`EmptyResponseError`.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import AsyncIterator, Sequence
from typing import Any

from .. import errors
from ..types import ChoiceDeltaToolCall, ImagesResponse, ProviderInfo
from .base import BaseProvider, Messages, StreamItem, provider_name

log = logging.getLogger(__name__)


class IterListProvider(BaseProvider):
    """Try providers in order (optionally shuffled) until one produces text."""

    attempts_per_provider = 1

    def __init__(self, providers: Sequence[Any], shuffle: bool = False) -> None:
        self.providers = list(providers)
        self.shuffle = shuffle

    # `working` and `supports_stream` are plain attributes on BaseProvider, as on g4f's provider
    # classes; a list derives them from its members, so here they are read-only properties.
    @property
    def working(self) -> bool:  # type: ignore[override]  # read-only, derived from the list
        return any(getattr(p, "working", False) for p in self.providers)

    @property
    def supports_stream(self) -> bool:  # type: ignore[override]  # as `working` above
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
        empty: dict[str, None] = {}  # names, in order, of providers that returned nothing
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
                    items = provider.create_async_generator(model, messages, **kwargs)
                    async with _closing(items):
                        async for item in items:
                            # A tool call is an answer as much as text is.
                            if isinstance(item, str | ChoiceDeltaToolCall):
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
                    errors.name_provider(exc, name)
                    failures[name] = exc
                    continue
                if started:
                    return
                empty[name] = None
                log.info("%s attempt %d returned nothing", name, attempt + 1)
        raise _combined(failures, list(empty))

    async def generate_images(self, prompt: str, model: str, **kwargs: Any) -> ImagesResponse:
        """The first member's images that draws them; a refused prompt is not tried elsewhere
        (every provider would be asked the same thing), any other failure moves on."""
        failures: dict[str, BaseException] = {}
        candidates = [
            p
            for p in self._candidates(kwargs.get("ignore_working", False))
            if hasattr(p, "generate_images")
        ]
        if not candidates:
            raise errors.RetryNoProviderError(
                "No working provider in the fallback list draws images: "
                + (", ".join(provider_name(p) for p in self.providers) or "the list is empty")
                + "."
            )
        for provider in candidates:
            name = provider_name(provider)
            try:
                images: ImagesResponse = await provider.generate_images(prompt, model, **kwargs)
            except errors.ContentPolicyError as exc:
                errors.name_provider(exc, name)
                raise
            except Exception as exc:
                log.info("%s failed to draw (%s), trying the next", name, exc)
                errors.name_provider(exc, name)
                failures[name] = exc
                continue
            return images
        raise _combined(failures, [])


def _closing(items: AsyncIterator[StreamItem]) -> contextlib.AbstractAsyncContextManager[Any]:
    """Close the provider's stream as this one closes, in the same await: left to the
    async-generator finaliser, its HTTP response (and pooled connection) would be released
    only a loop tick later. A plain async iterator without `aclose` has nothing to release."""
    if hasattr(items, "aclose"):
        return contextlib.aclosing(items)
    return contextlib.nullcontext(items)


def _combined(failures: dict[str, BaseException], empty: list[str]) -> BaseException:
    """What to raise when no provider answered (g4f's rule, see the module docstring)."""
    if len(failures) == 1:
        return next(iter(failures.values()))
    if not failures:
        if len(empty) == 1:
            return errors.EmptyResponseError(f"{empty[0]} returned an empty answer.")
        return errors.EmptyResponseError(
            f"Every provider returned an empty answer: {', '.join(empty)}."
        )
    listing = [f"{name}: {type(e).__name__}: {e}" for name, e in failures.items()]
    listing += [f"{name}: returned an empty answer" for name in empty if name not in failures]
    return errors.RetryProviderError(f"Every provider failed. {'; '.join(listing)}", failures)


class RetryProvider(IterListProvider):
    """Like `IterListProvider`, but each provider gets up to `max_retries` attempts."""

    def __init__(self, providers: Sequence[Any], shuffle: bool = False, max_retries: int = 3):
        super().__init__(providers, shuffle)
        self.attempts_per_provider = max(1, max_retries)
