"""Suite-wide test set-up: keep the developer's own environment out of every test."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from core.config import get_settings
from storage import Store, open_store
from tests.core_support import LogLines
from tests.fakes.llm_server import FakeLLMServer

pytest_plugins = ["tests.postgres_support"]

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
    "SSL_CERT_",
    "METRICS_ADDR",
    "WEBHOOK_LISTEN",
    "LOG_FORMAT",
)
#: The developer's proxy (the shared HTTP pool honours these, in either case): every test
#: talks to 127.0.0.1 directly, and tests/test_core_proxy.py sets its own.
_PROXY_VARIABLES = frozenset({"http_proxy", "https_proxy", "all_proxy", "no_proxy"})


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path) -> Iterator[None]:
    """Run every test from an empty folder (no stray `.env`) with no provider or proxy settings."""
    for name in list(os.environ):
        if name.startswith(_ISOLATED_PREFIXES) or name.lower() in _PROXY_VARIABLES:
            monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
async def server() -> AsyncIterator[FakeLLMServer]:
    """The local OpenAI/Anthropic-compatible server most tests talk to, on 127.0.0.1."""
    async with FakeLLMServer() as fake:
        yield fake


#: The backends a test marked `all_backends` runs on, through the `store` fixture.
BACKENDS = ("sqlite", "postgresql")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "all_backends: run each test using `store` on SQLite and on PostgreSQL"
    )
    config.addinivalue_line(
        "markers", "sqlite_only: in an all_backends module, a test about the SQLite file itself"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests about the Store's behaviour (marked `all_backends`) run once per backend."""
    marked = metafunc.definition.get_closest_marker("all_backends") is not None
    sqlite_only = metafunc.definition.get_closest_marker("sqlite_only") is not None
    if "store_backend" in metafunc.fixturenames and marked and not sqlite_only:
        metafunc.parametrize("store_backend", BACKENDS)


@pytest.fixture
def store_backend() -> str:
    """The backend of `store`: SQLite unless the test is marked `all_backends`."""
    return "sqlite"


@pytest.fixture
def store_url(store_backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """Where `store` lives: `history.db` in the test's folder, or a fresh PostgreSQL
    database (tests/postgres_support.py) dropped after the test."""
    if store_backend == "sqlite":
        return f"sqlite:///{tmp_path}/history.db"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    """A real store, migrated, closed after the test: SQLite in the test's folder, and for a
    test marked `all_backends` PostgreSQL too."""
    opened = await open_store(store_url)
    yield opened
    await opened.close()


@pytest.fixture
def lines() -> Iterator[LogLines]:
    """Every log record's text from the test, at INFO and up, to wait on."""
    handler = LogLines()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


@pytest.fixture
def clean_logs(caplog: pytest.LogCaptureFixture) -> Callable[[], None]:
    """Call at the end of a test: nothing reached aiogram's error log or any ERROR log.
    (Here, not in one test module: the Telegram bot's tests span several.)"""
    caplog.set_level(logging.WARNING)

    def check() -> None:
        bad = [
            r
            for r in caplog.records
            if r.levelno >= logging.ERROR
            or (r.name.startswith("aiogram") and r.levelno >= logging.WARNING)
        ]
        assert not bad, [f"{r.name}: {r.getMessage()}" for r in bad]

    return check
