"""No secret reaches the log: tokens and keys are redacted in messages and tracebacks."""

from __future__ import annotations

import io
import logging

import httpx
from rich.console import Console

from bots.config import Settings
from bots.logs import configure_logging, settings_secrets

TOKEN = "123456:AAE-secret-telegram-token"
KEY = "sk-secret-openai-key"


def settings() -> Settings:
    return Settings(_env_file=None, telegram_bot_token=TOKEN, openai_api_key=KEY)


def test_every_configured_secret_is_known() -> None:
    assert set(settings_secrets(settings())) == {TOKEN, KEY}


def test_secrets_are_redacted_in_messages_arguments_and_tracebacks() -> None:
    output = io.StringIO()
    handler = configure_logging(settings(), Console(file=output, width=500))
    log = logging.getLogger("parley.test")
    try:
        log.warning("polling https://api.telegram.org/bot%s/getUpdates failed", TOKEN)
        try:
            raise httpx.ConnectError(f"cannot reach https://example.invalid/?key={KEY}")
        except httpx.ConnectError:
            log.exception("request failed")
    finally:
        logging.getLogger().removeHandler(handler)
    text = output.getvalue()
    assert TOKEN not in text and KEY not in text
    assert "bot***/getUpdates" in text and "key=***" in text
    assert "ConnectError" in text  # the traceback itself is kept
