"""LOG_FORMAT=json: one JSON object per line on stderr, secrets redacted as in the text format.

In-process, through `configure_logging` itself; test_monitoring.py checks every line of a real
`parley run` child, and test_logs.py the text format.
"""

from __future__ import annotations

import json
import logging
import sys
import warnings
from collections.abc import Iterator

import pytest
from rich.console import Console

from bots.config import Settings
from bots.logs import configure_logging

TOKEN = "123456:AAE-secret-telegram-token"
KEY = "sk-secret-openai-key"


@pytest.fixture
def json_logging(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Iterator[None]:
    """configure_logging for JSON, undone afterwards (handler, excepthook, warnings capture).
    It asks for capsys first: the handler writes to the sys.stderr of the moment it is made."""
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    root = logging.getLogger()
    monkeypatch.setattr(root, "level", root.level)
    settings = Settings(
        _env_file=None, telegram_bot_token=TOKEN, openai_api_key=KEY, log_format="json"
    )
    handler = configure_logging(settings, Console(stderr=True))
    try:
        yield
    finally:
        root.removeHandler(handler)
        logging.captureWarnings(False)


def records(err: str) -> list[dict]:
    return [json.loads(line) for line in err.splitlines()]


def test_each_record_is_one_json_line_with_its_fields(json_logging, capsys) -> None:
    logging.getLogger("parley.test").warning("two\nlines for %s", "Ünïcode")
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.isascii()
    [record] = records(err)
    assert record["level"] == "WARNING" and record["logger"] == "parley.test"
    assert record["message"] == "two\nlines for Ünïcode"
    assert record["time"].endswith("Z") and "T" in record["time"]
    assert "exc_info" not in record


def test_secrets_are_redacted_in_messages_and_tracebacks(json_logging, capsys) -> None:
    log = logging.getLogger("parley.test")
    log.info("polling https://api.telegram.org/bot%s/getUpdates", TOKEN)
    try:
        raise ConnectionError(f"cannot reach https://example.invalid/?key={KEY}")
    except ConnectionError:
        log.exception("request failed")
    err = capsys.readouterr().err
    assert TOKEN not in err and KEY not in err
    polling, failed = records(err)
    assert polling["message"] == "polling https://api.telegram.org/bot***/getUpdates"
    assert failed["message"] == "request failed"
    assert "Traceback" in failed["exc_info"] and "key=***" in failed["exc_info"]


def test_warnings_and_a_crash_are_json_lines_too(json_logging, capsys) -> None:
    warnings.warn(f"deprecated, says {KEY}", UserWarning, stacklevel=1)
    try:
        raise RuntimeError(f"a bug holding {TOKEN}")
    except RuntimeError as exc:
        sys.excepthook(type(exc), exc, exc.__traceback__)
    err = capsys.readouterr().err
    warned, crashed = records(err)
    assert warned["logger"] == "py.warnings" and "deprecated, says ***" in warned["message"]
    assert (
        crashed["level"] == "CRITICAL" and "RuntimeError: a bug holding ***" in crashed["exc_info"]
    )
    assert TOKEN not in err and KEY not in err
