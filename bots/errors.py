"""Every exception the bots, the console and the CLI raise on purpose.

Failures the operator or a user sees join the core's tree under `ParleyError`; the two
signals a surface sends the streaming engine stay outside it, as they never leave the engine.

* core.errors.ParleyError
  + core.errors.ConfigurationError
    - BotStartupError       a bot cannot start until the operator fixes something (no token,
                            a rejected token, a refused intent); Telegram and Discord alike
  + HistoryNotFoundError    no chat or conversation matches (also a `LookupError`)
* storage.errors.StorageError   the database failed (a separate tree: see `storage.errors`)
* RateLimited               a surface's signal: the platform says wait; the engine waits
* MessageGone               a surface's signal: the message or chat is gone; streaming stops

So the app has two roots to catch where it reports a failure to a person, `ParleyError` and
`StorageError`, and the CLI catches exactly those (`REPORTED`): anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

from core.errors import ConfigurationError, ParleyError
from storage.errors import StorageError

#: What `parley` reports as a one-line message instead of a traceback.
REPORTED = (ParleyError, StorageError)


class BotStartupError(ConfigurationError):
    """A bot cannot start until the operator fixes something; the message says what."""


class HistoryNotFoundError(ParleyError, LookupError):
    """No chat (or conversation) matches what was asked for; the message says what exists."""


class RateLimited(Exception):
    """Raised by a surface when the platform says to wait; the engine waits, then retries."""

    def __init__(self, retry_after: float, message: str | None = None) -> None:
        super().__init__(message or f"rate limited; retry after {retry_after} s")
        self.retry_after = retry_after


class MessageGone(Exception):
    """Raised by a surface when the message (or the chat) is gone: streaming stops."""
