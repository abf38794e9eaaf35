"""What a chat user reads when a reply fails: the core's hint, or the storage one."""

from __future__ import annotations

from bots.relay import STORAGE_TROUBLE, describe_failure
from core import errors
from storage import StorageLockedError


def test_a_storage_failure_is_not_blamed_on_the_model() -> None:
    assert describe_failure(StorageLockedError("data/parley.db is locked")) == STORAGE_TROUBLE


def test_a_provider_failure_keeps_the_core_hint() -> None:
    failure = errors.RateLimitError("OpenAI is rate limiting", retry_after=3)
    assert describe_failure(failure) == errors.RateLimitError.user_hint
