"""Helpers for the budget tests: a service that charges each reply, a clock tests move.

Holds no tests. `ChargingService` records a chat reply's usage right after its outcome is
saved, where the contract (SHARED12.md, U) puts the recording in `ConversationService`; it
stands in for that code until it is merged, then the tests use the plain service.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from core.conversation import ConversationService, Reply, ReplyState
from core.usage import UsageKind, UsageRecord


class ChargingService(ConversationService):
    """The conversation service, charging each reply's reported tokens to the ledger."""

    async def _save_outcome(
        self,
        reply: Reply,
        state: ReplyState,
        error: BaseException | None,
        usage: Any,
        started: float | None,
        first_token: float | None,
    ) -> None:
        await super()._save_outcome(reply, state, error, usage, started, first_token)
        await self._store.record_usage(
            UsageRecord(
                kind=UsageKind.CHAT,
                at=self.gate.budgets.clock(),
                platform=reply.chat.platform,
                chat_id=reply.chat.chat_id,
                thread_id=reply.chat.thread_id,
                user_id=reply.author.id,
                user_name=reply.author.name,
                model=reply.model,
                prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
                completion_tokens=getattr(usage, "completion_tokens", 0) or 0,
                cost_micros=0,
                guest=reply.author.guest,
                message_id=reply.message_id,
            )
        )


class MovableClock:
    """An aware UTC wall clock that moves only when a test says."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


class Ticker:
    """A monotonic clock that moves only when a test says (for the rate limit)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def at(text: str) -> datetime:
    """`2026-12-01T23:59` as an aware UTC time."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)
