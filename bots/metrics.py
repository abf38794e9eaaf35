"""Parley's Prometheus metrics: the conversation service's events and the store's writes, counted.

`Metrics` is the `ConversationObserver` `parley run` hands the conversation service and the
`PlatformObserver` it hands each bot (which report their platform's 429s), and its `db_write` is
the store's write timer. The names follow Prometheus' conventions: a `parley_` prefix, base units
(seconds), `_total` on counters.

Every metric lives in the instance's own `CollectorRegistry`, not prometheus_client's global
one, so tests (and anything else) can build as many as they like without names colliding.
Label sets known in advance (each platform, each outcome) start at zero, so a dashboard sees 0
rather than no series before the first reply.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

from storage import MessageStatus

#: The outcomes a reply can end with: the status the history stores for it.
OUTCOMES = (MessageStatus.COMPLETE, MessageStatus.ERROR, MessageStatus.INTERRUPTED)
#: A model's first text: from a local model's tenth of a second to a busy API's half minute.
FIRST_TOKEN_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0)
#: A whole reply: a one-liner to a long essay from a slow model.
DURATION_BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)
#: One SQLite write (WAL, synchronous=NORMAL): well under a millisecond on a quiet disk, up to
#: the busy timeout (5 s) when another process holds the lock.
DB_WRITE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """The metrics of one `parley run`; implements `core.conversation.ConversationObserver`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        # Memory, CPU, open files and start time: what an operator checks first.
        ProcessCollector(registry=registry)
        self.replies = Counter(
            "parley_replies_total",
            "Replies ended, by platform and outcome (the stored status: complete, error, "
            "interrupted).",
            ["platform", "outcome"],
            registry=registry,
        )
        self.first_token = Histogram(
            "parley_reply_first_token_seconds",
            "Time from the model request to the reply's first text.",
            ["platform"],
            buckets=FIRST_TOKEN_BUCKETS,
            registry=registry,
        )
        self.duration = Histogram(
            "parley_reply_duration_seconds",
            "Time a reply was in flight: from its turn in the chat until its outcome was stored "
            "(after its delivery ended, for a bot's reply).",
            ["platform"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.provider_errors = Counter(
            "parley_provider_errors_total",
            "Provider failures that ended a reply, by provider and kind (one per member of a "
            "fallback list that failed as a whole).",
            ["provider", "kind"],
            registry=registry,
        )
        self.rate_limited = Counter(
            "parley_platform_rate_limited_total",
            "429 answers from a platform's API (Telegram flood control, Discord rate limits).",
            ["platform"],
            registry=registry,
        )
        self.in_flight = Gauge(
            "parley_replies_in_flight",
            "Replies whose turn came and whose outcome is not stored yet (a bot's reply until "
            "its delivery ended).",
            ["platform"],
            registry=registry,
        )
        self.queued = Gauge(
            "parley_replies_queued",
            "Replies waiting for the reply before them in their chat.",
            ["platform"],
            registry=registry,
        )
        self.db_writes = Histogram(
            "parley_db_write_seconds",
            "Database writes, waiting for the write lock included.",
            buckets=DB_WRITE_BUCKETS,
            registry=registry,
        )

    def expect(self, platforms: Iterable[str]) -> None:
        """Start the series of these platforms at zero (others appear on their first event)."""
        for platform in platforms:
            for outcome in OUTCOMES:
                self.replies.labels(platform, outcome.value)
            for labelled in (self.first_token, self.duration, self.rate_limited):
                labelled.labels(platform)
            for gauge in (self.in_flight, self.queued):
                gauge.labels(platform)

    # core.conversation.ConversationObserver

    def reply_queued(self, platform: str) -> None:
        self.queued.labels(platform).inc()

    def reply_started(self, platform: str) -> None:
        self.queued.labels(platform).dec()
        self.in_flight.labels(platform).inc()

    def reply_first_token(self, platform: str, seconds: float) -> None:
        self.first_token.labels(platform).observe(seconds)

    def reply_finished(self, platform: str, outcome: MessageStatus, seconds: float | None) -> None:
        self.replies.labels(platform, outcome.value).inc()
        if seconds is None:
            self.queued.labels(platform).dec()
        else:
            self.in_flight.labels(platform).dec()
            self.duration.labels(platform).observe(seconds)

    def provider_error(self, provider: str, kind: str) -> None:
        self.provider_errors.labels(provider, kind).inc()

    def platform_rate_limited(self, platform: str) -> None:
        self.rate_limited.labels(platform).inc()

    # storage.WriteObserver

    def db_write(self, seconds: float) -> None:
        self.db_writes.observe(seconds)
