"""Suite-wide test set-up: keep the developer's own environment out of every test."""

from __future__ import annotations

import pytest

from core.config import get_settings

#: Variables that would point tests at real services or change defaults behind their back.
_ISOLATED_PREFIXES = (
    "OPENAI_",
    "ANTHROPIC_",
    "TELEGRAM_",
    "DISCORD_",
    "DEFAULT_MODEL",
    "SYSTEM_PROMPT",
    "DATABASE_URL",
    "PROVIDERS_FILE",
    "ADMIN_IDS",
)


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path, request) -> None:
    """Run every test from an empty folder (no stray `.env`) with no provider settings set."""
    import os

    for name in list(os.environ):
        if name.startswith(_ISOLATED_PREFIXES):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()
