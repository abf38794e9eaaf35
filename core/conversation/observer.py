"""What the conversation service tells an observer: the events behind Parley's metrics.

The core stays free of any metrics library: it calls these methods at the moments only it
knows (a reply queued, its turn come, its first text, its end; a provider failing), and the app
turns them into whatever it exports (`bots.metrics` makes Prometheus metrics of them). Every
method is synchronous and must return at once: it runs on the reply's own path.

Life of one reply, as the observer sees it: `reply_queued` once; then `reply_started` when its
turn comes (it may never come: stopped, cancelled or failed while it waited); at most one
`reply_first_token`; and `reply_finished` once, always, with how long it was in flight (None
if it never started). So queued = queued - started - finished(None), and in flight =
started - finished(seconds) at any moment, with nothing left over.

A reply ends when its outcome is final, and for a reply a bot delivers that is when its
delivery ends, not when the model finishes: the platform may keep failing the last edit for
minutes, and a reply the user did not get whole is stored 'interrupted' then
(`ConversationService.record_delivery`). So such a reply (queued with `delivery=True`) stays in
flight until both the model and the delivery are done (`ConversationService.delivery_ended`),
and `reply_finished` carries the status stored after that. A reply nobody delivers (the console)
ends with the model, and one that never started ends at once: it has no row to change.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from storage import MessageStatus

from ..errors import ParleyError, RetryProviderError, error_kind

#: The provider label of an error no provider was named for (it failed before one was chosen).
UNKNOWN_PROVIDER = "unknown"


class ConversationObserver(Protocol):
    """Receives the events of replies, from the conversation service. (A platform's 429s are
    the adapters' to report: `bots.platform_observer`.)"""

    def reply_queued(self, platform: str) -> None:
        """A message was handed over; its reply waits for its turn in the chat."""
        ...

    def reply_started(self, platform: str) -> None:
        """The reply's turn came: it is no longer queued but in flight."""
        ...

    def reply_first_token(self, platform: str, seconds: float) -> None:
        """The model's first text arrived, `seconds` after the request was made."""
        ...

    def reply_finished(self, platform: str, outcome: MessageStatus, seconds: float | None) -> None:
        """The reply ended with `outcome` (its stored status, its delivery's end included)
        after `seconds` in flight; None when it ended while still queued."""
        ...

    def provider_error(self, provider: str, kind: str) -> None:
        """A provider failed a reply; `kind` is `core.errors.error_kind` of its error."""
        ...


class NoObserver:
    """The default: nothing is watching, and every event costs one empty call."""

    def reply_queued(self, platform: str) -> None:
        pass

    def reply_started(self, platform: str) -> None:
        pass

    def reply_first_token(self, platform: str, seconds: float) -> None:
        pass

    def reply_finished(self, platform: str, outcome: MessageStatus, seconds: float | None) -> None:
        pass

    def provider_error(self, provider: str, kind: str) -> None:
        pass


NO_OBSERVER = NoObserver()


def provider_failures(exc: BaseException) -> Iterator[tuple[str, str]]:
    """(provider, kind) for each provider failure behind `exc`: one per member of a fallback
    list that failed as a whole, else one for `exc` itself; none for what is not a provider's
    error (a storage failure, a bug)."""
    if isinstance(exc, RetryProviderError) and exc.errors:
        for name, error in exc.errors.items():
            yield name, error_kind(error)
    elif isinstance(exc, ParleyError):
        yield exc.provider or UNKNOWN_PROVIDER, error_kind(exc)
