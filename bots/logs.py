"""Logging for the `parley` command: rich output, and no secret ever written.

Secrets reach log text in ways no call site controls: aiohttp puts the request URL, which
holds the Telegram token, into its error messages, and a provider may echo a key in an error
body. So the one handler every record passes through redacts every configured secret, in the
message and in the traceback alike, by the core's one rule (`core.redact`).

`LOG_FORMAT=json` swaps rich's output for one JSON object per line on stderr, for a log
shipper (journald, Docker, Loki) to parse. The same `RedactSecrets` filter runs first; the
formatter writes a fixed set of fields, so no record attribute outside the filter's reach (an
`extra` a library passes) is ever written. It is stdlib `json` in a small `Formatter` rather than
python-json-logger, whose formatter writes every extra attribute of a record, unredacted.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TextIO

from pydantic import SecretStr
from rich.console import Console
from rich.logging import RichHandler

from bots.config import Settings
from bots.proxy import ProxyURL
from core.redact import Redactor


def settings_secrets(settings: Settings) -> list[str]:
    """Every secret value the settings hold: tokens, API keys and the proxies' passwords."""
    secrets: list[str] = []
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            secrets.append(value.get_secret_value())
        elif isinstance(value, ProxyURL):
            secrets.extend(value.secrets())
    return secrets


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


class JsonLines(logging.Formatter):
    """One JSON object per record, on one line: time (UTC, ISO 8601), level, logger, message,
    and `exc_info` (the traceback) or `stack_info` when the record has them."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        # RedactSecrets has already rendered (and redacted) the traceback into exc_text.
        if record.exc_text:
            entry["exc_info"] = record.exc_text
        elif record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        # ASCII only: a line stays valid whatever encoding stderr has.
        return json.dumps(entry)


class Stderr(logging.StreamHandler[TextIO]):
    """Writes to `sys.stderr` as it is when each record comes, as rich's console does, so a
    stderr replaced after start-up (a redirect, pytest's capture) is the one written to."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr  # emit runs under the handler's lock
        super().emit(record)


def _log_uncaught(
    kind: type[BaseException], error: BaseException, traceback: TracebackType | None
) -> None:
    """A crash's traceback as a log record, so it is JSON (and redacted) like every line."""
    logging.getLogger("parley").critical(
        "Parley stopped on an error", exc_info=(kind, error, traceback)
    )


def _handler(settings: Settings, console: Console) -> logging.Handler:
    """rich's handler on `console`, or for LOG_FORMAT=json one JSON line per record on stderr."""
    if settings.log_format == "json":
        handler: logging.Handler = Stderr()
        handler.setFormatter(JsonLines())
        # Warnings and a crash's traceback would otherwise be written to stderr as plain text.
        logging.captureWarnings(True)
        sys.excepthook = _log_uncaught
        return handler
    handler = RichHandler(console=console, show_path=False)
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    return handler


def configure_logging(
    settings: Settings, console: Console, *, at_least: str | None = None
) -> logging.Handler:
    """Send every record through the redacting handler (to `console`, or one JSON line per
    record on stderr with LOG_FORMAT=json); returns the handler.

    `at_least` raises the level above LOG_LEVEL (`parley chat` keeps its terminal to warnings).
    """
    return _install(_handler(settings, console), settings, at_least)


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
