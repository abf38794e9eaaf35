"""Every exception the bots, the console and the CLI raise on purpose.

Failures the operator or a user sees join the core's tree under `ParleyError`; the two
signals a surface sends the streaming engine stay outside it, as they never leave the engine.

* core.errors.ParleyError
  + core.errors.ConfigurationError
    - BotStartupError       a bot cannot start until the operator fixes something (no token,
                            a rejected token, a refused intent); Telegram and Discord alike
  + HistoryNotFoundError    no chat or conversation matches (also a `LookupError`)
  + HistoryCopyError        `parley history copy` refused (a target not empty) or found the
                            copy differing from its source
* storage.errors.StorageError   the database failed (a separate tree: see `storage.errors`)
* NotTheApi                 something answered at a platform's address, but not as its API
                            (a wrong address if 404, else retried like an outage)
* RateLimited               a surface's signal: the platform says wait; the engine waits
* MessageGone               a surface's signal: the message or chat is gone; streaming stops

So the app has two roots to catch where it reports a failure to a person, `ParleyError` and
`StorageError`, and the CLI catches exactly those (`REPORTED`): anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

from http import HTTPStatus

from core.errors import ConfigurationError, ParleyError
from storage.errors import StorageError

#: What `parley` reports as a one-line message instead of a traceback.
REPORTED = (ParleyError, StorageError)


class BotStartupError(ConfigurationError):
    """A bot cannot start until the operator fixes something; the message says what."""


class HistoryNotFoundError(ParleyError, LookupError):
    """No chat (or conversation) matches what was asked for; the message says what exists."""


class HistoryCopyError(ParleyError):
    """`parley history copy` would not copy, or the copy does not match its source; the
    message says which table and what to do."""


class RateLimited(Exception):
    """Raised by a surface when the platform says to wait; the engine waits, then retries."""

    def __init__(self, retry_after: float, message: str | None = None) -> None:
        super().__init__(message or f"rate limited; retry after {retry_after} s")
        self.retry_after = retry_after


class MessageGone(Exception):
    """Raised by a surface when the message (or the chat) is gone: streaming stops."""


class NotTheApi(Exception):
    """Something answered at the platform's address, but not as its API (no API JSON).

    The one rule for such an answer, at `parley doctor`, at `parley run`'s preflight and in the
    bots' start-up: a 404 means nothing is at the API's path, so the configured address is
    wrong and stays so (the operator must fix it); any other answer is most likely a captive
    portal or a transparent proxy in the way, which passes, so it is retried like an outage,
    the log saying what answered.
    """

    def __init__(self, status: int, content_type: str) -> None:
        self.status = status
        self.content_type = content_type or "no content type"
        super().__init__(f"HTTP {status} ({self.content_type}) answered instead of the API")

    @property
    def wrong_address(self) -> bool:
        """True when the answer says the address is wrong for good (404), not just now."""
        return self.status == HTTPStatus.NOT_FOUND

    @property
    def cause(self) -> str:
        """The answer in a few words, for a retry's log line."""
        return f"{self}: a captive portal or proxy in the way?"
