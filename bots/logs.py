"""Logging for the `parley` command: rich output, and no secret ever written.

Secrets reach log text in ways no call site controls: aiohttp puts the request URL, which
holds the Telegram token, into its error messages, and a provider may echo a key in an error
body. So the one handler every record passes through redacts every configured secret, in the
message and in the traceback alike, by the core's one rule (`core.redact`).
"""

from __future__ import annotations

import logging
from pathlib import Path

from pydantic import SecretStr
from rich.console import Console
from rich.logging import RichHandler

from bots.config import Settings
from core.redact import Redactor


def settings_secrets(settings: Settings) -> list[str]:
    """Every secret value the settings hold (tokens and API keys)."""
    values = (getattr(settings, name) for name in type(settings).model_fields)
    return [value.get_secret_value() for value in values if isinstance(value, SecretStr)]


class RedactSecrets(logging.Filter):
    """Replaces each secret in a record's final text (message and traceback) with `***`."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self._redact = Redactor(*secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._redact:
            return True
        message = record.getMessage()
        redacted = self._redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info:
            # Render the traceback now, redacted, in place of the live exception.
            record.exc_text = self._redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


def configure_logging(
    settings: Settings, console: Console, *, at_least: str | None = None
) -> logging.Handler:
    """Send every record to `console` through the redacting handler; returns the handler.

    `at_least` raises the level above LOG_LEVEL (`parley chat` keeps its terminal to warnings).
    """
    handler = RichHandler(console=console, show_path=False)
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    return _install(handler, settings, at_least)


def log_to_file(settings: Settings, path: Path) -> logging.Handler:
    """Append every record at LOG_LEVEL to the file at `path`, timestamped, redacted alike."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    return _install(handler, settings, None)


def _install(handler: logging.Handler, settings: Settings, at_least: str | None) -> logging.Handler:
    handler.addFilter(RedactSecrets(settings_secrets(settings)))
    root = logging.getLogger()
    root.addHandler(handler)
    levels = [logging.getLevelNamesMapping()[settings.log_level]]
    if at_least is not None:
        levels.append(logging.getLevelNamesMapping()[at_least])
    root.setLevel(max(levels))
    # httpx logs every request URL at INFO; keep that noise (and any URL detail) out.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    return handler
