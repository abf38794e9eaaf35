"""`parley doctor` and the same checks at `parley run` start.

The report is tested as the operator meets it, a child process configured through the
environment against the fake Telegram, the fake Discord and the fake model on 127.0.0.1; the
finer cases (each database state, provider roles, flags, what is printed) call the checks in
process, still over real HTTP to the fakes.
"""

from __future__ import annotations

import asyncio
import io
import logging
import socket
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiosqlite
import pytest
from rich.console import Console

from bots.app import run_bots
from bots.config import Settings
from bots.doctor import (
    GATEWAY_MESSAGE_CONTENT,
    Finding,
    Level,
    check_access,
    check_database,
    check_discord,
    check_provider_probes,
    check_telegram,
    load_settings,
    preflight,
    print_findings,
    report,
)
from bots.errors import BotStartupError
from core.redact import Redactor
from storage import open_store
from storage.sqlite.migrations import LATEST_VERSION, MIGRATIONS
from tests.cli_support import Finished, run_parley
from tests.fakes.discord_api import FakeDiscord
from tests.fakes.llm_server import FakeLLMServer, Script
from tests.fakes.telegram_api import FakeTelegramAPI

WAIT = 15.0
LOUD = "LOG_LEVEL='LOUD': must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL"


@dataclass
class Fakes:
    tg: FakeTelegramAPI
    discord: FakeDiscord
    llm: FakeLLMServer
    folder: Path

    def env(self, **changes: str) -> dict[str, str]:
        """A configuration that works, as environment variables, with `changes` applied; both
        bots closed to strangers (an empty list is a warning of its own)."""
        return {
            "TELEGRAM_BOT_TOKEN": self.tg.token,
            "TELEGRAM_API_BASE": self.tg.base_url,
            "TELEGRAM_ALLOWED_IDS": "1001",
            "DISCORD_BOT_TOKEN": self.discord.token,
            "DISCORD_ALLOWED_IDS": "2002",
            "DISCORD_API_BASE": self.discord.api_base,
            "DISCORD_GATEWAY_URL": self.discord.gateway_url,
            "OPENAI_BASE_URL": self.llm.base_url,
            "DEFAULT_MODEL": "fake-model",
            "DATABASE_URL": f"sqlite:///{self.folder}/data/parley.db",
            **changes,
        }

    def settings(self, **changes: str) -> Settings:
        return Settings(_env_file=None, **{k.lower(): v for k, v in self.env(**changes).items()})

    async def doctor(self, **changes: str) -> Finished:
        return await run_parley("doctor", env=self.env(**changes), cwd=self.folder)


@pytest.fixture
async def fakes(tmp_path: Path) -> AsyncIterator[Fakes]:
    async with FakeTelegramAPI() as tg, FakeDiscord() as discord, FakeLLMServer() as llm:
        yield Fakes(tg, discord, llm, tmp_path)


def lines_of(level: str, out: str) -> list[str]:
    return [line for line in out.splitlines() if line.split()[:1] == [level]]


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# The report, end to end.


async def test_a_working_configuration_is_ok_on_every_line(fakes: Fakes) -> None:
    finished = await fakes.doctor()
    assert finished.code == 0, finished.out + finished.err
    ok = lines_of("ok", finished.out)
    assert [line.split()[1] for line in ok] == [
        "settings:",
        "database:",
        "telegram:",
        "discord:",
        "provider",
    ]
    assert "@parley_test_bot" in ok[2]
    assert "Message Content intent on" in ok[3]
    assert "OpenAI: answered with fake-model" in ok[4]
    assert finished.out.rstrip().endswith("0 error(s), 0 warning(s): ready to run.")
    assert fakes.tg.calls_of("getMe")
    assert fakes.discord.calls_to("GET", "/oauth2/applications/@me")
    assert not (fakes.folder / "data").exists()  # doctor looks; it creates nothing


async def test_bots_anyone_may_use_are_a_warning_naming_what_closes_and_bounds_them(
    fakes: Fakes,
) -> None:
    finished = await fakes.doctor(TELEGRAM_ALLOWED_IDS="", DISCORD_ALLOWED_IDS="")
    assert finished.code == 0, finished.out + finished.err  # it runs: a warning, not an error
    telegram, discord = lines_of("warning", finished.out)
    assert telegram.startswith("warning telegram access: TELEGRAM_ALLOWED_IDS is empty")
    assert "found by username" in telegram and "spend your API key" in telegram
    assert "Fix: Set TELEGRAM_ALLOWED_IDS" in telegram and "GUEST_DAILY_TOKENS" in telegram
    assert discord.startswith("warning discord access: DISCORD_ALLOWED_IDS is empty")
    assert "Fix: Set DISCORD_ALLOWED_IDS" in discord and "GUEST_DAILY_TOKENS" in discord
    assert finished.out.rstrip().endswith("0 error(s), 2 warning(s): ready to run.")

    [open_discord] = check_access(fakes.settings(DISCORD_ALLOWED_IDS=""))
    assert open_discord.subject == "discord access"
    no_discord = fakes.settings(TELEGRAM_ALLOWED_IDS="", DISCORD_BOT_TOKEN="")
    assert [f.subject for f in check_access(no_discord)] == ["telegram access"]  # no bot, no risk
    assert check_access(fakes.settings()) == []


async def test_a_rejected_telegram_token_and_the_intent_switched_off_are_errors(
    fakes: Fakes,
) -> None:
    fakes.discord.enabled_intents.clear()
    finished = await fakes.doctor(TELEGRAM_BOT_TOKEN="123:not-the-token")
    assert finished.code == 1
    telegram, discord = lines_of("error", finished.out)
    assert telegram.startswith("error   telegram: Telegram rejected TELEGRAM_BOT_TOKEN")
    assert "@BotFather" in telegram and "not-the-token" not in finished.out
    assert discord.startswith("error   discord: the Message Content intent is off")
    assert "Developer Portal" in discord
    assert "Bot -> Privileged Gateway Intents -> Message Content Intent" in discord


async def test_a_rejected_discord_token_is_an_error_and_a_platform_out_of_reach_a_warning(
    fakes: Fakes,
) -> None:
    port = closed_port()
    finished = await fakes.doctor(
        DISCORD_BOT_TOKEN="not-the-discord-token", TELEGRAM_API_BASE=f"http://127.0.0.1:{port}"
    )
    assert finished.code == 1
    [discord] = lines_of("error", finished.out)
    assert discord.startswith("error   discord: Discord rejected DISCORD_BOT_TOKEN")
    assert "Reset Token" in discord and "not-the-discord-token" not in finished.out
    [warning] = lines_of("warning", finished.out)
    assert warning.startswith(
        f"warning telegram: cannot reach 127.0.0.1:{port} (connection refused)"
    )
    assert "TELEGRAM_API_BASE" in warning


async def test_warnings_alone_exit_0(fakes: Fakes) -> None:
    port = closed_port()
    settings = fakes.settings(TELEGRAM_API_BASE=f"http://127.0.0.1:{port}")
    out = io.StringIO()
    code = await report(Console(file=out, width=80), settings, [])
    assert code == 0, out.getvalue()
    assert len(lines_of("warning", out.getvalue())) == 1
    assert out.getvalue().rstrip().endswith("0 error(s), 1 warning(s): ready to run.")


async def test_a_bad_log_level_is_one_line_for_doctor_and_for_run(fakes: Fakes) -> None:
    doctor = await fakes.doctor(LOG_LEVEL="LOUD")
    assert doctor.code == 1
    [error] = lines_of("error", doctor.out)
    assert error == f"error   settings: {LOUD}. Fix: Correct it in .env or the environment."
    assert len(lines_of("ok", doctor.out)) == 4  # the other checks still ran
    assert "Traceback" not in doctor.out + doctor.err

    fakes.tg.calls.clear()
    run = await run_parley("run", env=fakes.env(LOG_LEVEL="LOUD"), cwd=fakes.folder)
    assert run.code == 2
    assert run.err.splitlines() == [f"Invalid setting {LOUD}"]
    assert run.out == ""
    assert not fakes.tg.calls  # stopped before anything started


# The checks, in process.


async def test_preflight_stops_on_a_rejected_token_and_warns_for_a_platform_out_of_reach(
    fakes: Fakes, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(BotStartupError, match="BotFather") as failure:
        await preflight(fakes.settings(TELEGRAM_BOT_TOKEN="1:wrong"))
    assert "1:wrong" not in str(failure.value)

    port = closed_port()
    caplog.set_level(logging.WARNING)
    await asyncio.wait_for(
        preflight(fakes.settings(DISCORD_API_BASE=f"http://127.0.0.1:{port}/api/v10")), WAIT
    )
    [warning] = [r.getMessage() for r in caplog.records if r.name == "bots.doctor"]
    assert f"discord: cannot reach 127.0.0.1:{port}" in warning


async def test_run_bots_checks_the_tokens_before_opening_anything(fakes: Fakes) -> None:
    fakes.discord.enabled_intents.clear()
    settings = fakes.settings(TELEGRAM_BOT_TOKEN="not a token")
    with pytest.raises(BotStartupError) as failure:
        await asyncio.wait_for(run_bots(settings), WAIT)
    telegram, discord = str(failure.value).splitlines()
    assert telegram.startswith("telegram: TELEGRAM_BOT_TOKEN is not a bot token")
    assert discord.startswith("discord: the Message Content intent is off")
    assert not (fakes.folder / "data").exists()  # no database opened
    assert fakes.discord.identify_payloads == []  # no gateway session


@pytest.mark.parametrize(
    ("flags", "level"),
    [
        (GATEWAY_MESSAGE_CONTENT, Level.OK),  # a verified bot's switch
        (GATEWAY_MESSAGE_CONTENT | 1 << 23, Level.OK),
        (1 << 23, Level.ERROR),  # other flags only
    ],
)
async def test_either_message_content_flag_means_the_intent_is_on(
    fakes: Fakes, flags: int, level: Level
) -> None:
    fakes.discord.flags = flags
    finding = await check_discord(fakes.settings(), timeout=WAIT)
    assert finding.level is level


async def test_addresses_that_are_not_the_platforms_are_errors(fakes: Fakes) -> None:
    """Both addresses pointed at the model server: it answers, but not as Telegram or Discord."""
    settings = fakes.settings(
        TELEGRAM_API_BASE=fakes.llm.base_url, DISCORD_API_BASE=fakes.llm.base_url
    )
    telegram = await check_telegram(settings, timeout=WAIT)
    discord = await check_discord(settings, timeout=WAIT)
    assert (telegram.level, discord.level) == (Level.ERROR, Level.ERROR)
    assert "does not answer like a Bot API server" in telegram.text
    assert "TELEGRAM_API_BASE" in telegram.fix
    assert "answered HTTP 404" in discord.text and "DISCORD_API_BASE" in discord.fix


async def test_discord_answering_429_is_a_warning(fakes: Fakes) -> None:
    fakes.discord.rate_limit("GET", "/oauth2/applications/@me", retry_after=1)
    finding = await check_discord(fakes.settings(), timeout=WAIT)
    assert (finding.level, finding.subject) == (Level.WARNING, "discord")
    assert "answered HTTP 429" in finding.text


async def test_bad_settings_are_reported_and_the_rest_checked_with_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LOG_LEVEL", "LOUD")
    monkeypatch.setenv("CONNECT_TIMEOUT", "-1")
    monkeypatch.setenv("DEFAULT_MODEL", "kept")
    settings, findings = load_settings()
    assert settings is not None
    assert (settings.log_level, settings.connect_timeout, settings.default_model) == (
        "INFO",
        Settings.model_fields["connect_timeout"].default,
        "kept",
    )
    assert [f.text for f in findings] == [
        "CONNECT_TIMEOUT='-1': Input should be greater than 0",
        LOUD,
    ]
    monkeypatch.delenv("CONNECT_TIMEOUT")
    monkeypatch.setenv("LOG_LEVEL", "debug")  # any case, as the logging module has it
    assert Settings().log_level == "DEBUG"


async def test_the_provider_serving_the_default_model_failing_is_an_error(
    fakes: Fakes,
) -> None:
    fakes.llm.enqueue(Script(status=401, error_message="bad key"))
    port = closed_port()
    settings = fakes.settings(OLLAMA_BASE_URL=f"http://127.0.0.1:{port}/v1", MAX_RETRIES="0")
    findings = await check_provider_probes(settings)
    by_subject = {f.subject: f for f in findings}
    default = by_subject["provider OpenAI (serves DEFAULT_MODEL)"]
    assert default.level is Level.ERROR and "bad key" in default.text
    assert by_subject["provider Ollama"].level is Level.WARNING

    fakes.llm.enqueue(Script(pieces=["fine"]))
    findings = await check_provider_probes(settings)
    assert [(f.subject, f.level) for f in findings] == [
        ("provider OpenAI", Level.OK),
        ("provider Ollama", Level.WARNING),
    ]


async def test_a_default_provider_without_its_key_is_an_error_without_a_request() -> None:
    settings = Settings(_env_file=None, default_model="gpt-4o-mini")  # OpenAI itself, no key
    [finding] = await check_provider_probes(settings)
    assert finding.level is Level.ERROR
    assert "has no API key" in finding.text and "OPENAI_API_KEY" in finding.fix


async def _schema_2_database(path: Path) -> None:
    """A database as the Parley before migration 3 left it."""
    async with aiosqlite.connect(path, isolation_level=None) as db:
        for step in MIGRATIONS[:2]:
            await step(db)
        await db.execute("PRAGMA user_version = 2")


def _version(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute("PRAGMA user_version").fetchone()[0])


async def test_each_database_state_is_reported_without_changing_the_file(tmp_path: Path) -> None:
    def settings(path: Path) -> Settings:
        return Settings(_env_file=None, database_url=f"sqlite:///{path}")

    missing = await check_database(settings(tmp_path / "new" / "parley.db"))
    assert missing.level is Level.OK and "does not exist yet" in missing.text
    assert not (tmp_path / "new").exists()

    old = tmp_path / "old.db"
    await _schema_2_database(old)
    finding = await check_database(settings(old))
    assert finding.level is Level.WARNING
    assert f"schema 2, this Parley expects {LATEST_VERSION}" in finding.text
    assert "`parley run` migrates it" in finding.text and ".backup" in finding.fix
    assert _version(old) == 2

    store = await open_store(f"sqlite:///{tmp_path}/current.db")
    await store.close()
    current = await check_database(settings(tmp_path / "current.db"))
    assert current.level is Level.OK and f"schema {LATEST_VERSION} (current)" in current.text

    newer = tmp_path / "newer.db"
    with sqlite3.connect(newer) as db:
        db.execute(f"PRAGMA user_version = {LATEST_VERSION + 1}")
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as db:
        db.execute("CREATE TABLE notes (x)")
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all" * 100)
    for path, says in [
        (newer, "newer than this Parley"),
        (foreign, "not Parley's"),
        (junk, "not a usable SQLite database"),
        (tmp_path, "is a folder"),
    ]:
        finding = await check_database(settings(path))
        assert finding.level is Level.ERROR and says in finding.text, finding
    assert junk.read_bytes() == b"not a database at all" * 100


async def test_an_unwritable_folder_is_an_error(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        if _can_write(locked):
            pytest.skip("this user writes anywhere (root): permissions cannot be tested")
        settings = Settings(_env_file=None, database_url=f"sqlite:///{locked}/sub/parley.db")
        finding = await check_database(settings)
    finally:
        locked.chmod(0o700)
    assert finding.level is Level.ERROR and "cannot be written by this user" in finding.text


def _can_write(folder: Path) -> bool:
    try:
        (folder / "probe").touch()
    except PermissionError:
        return False
    (folder / "probe").unlink()
    return True


def test_findings_print_one_line_each_without_secrets_markup_or_controls() -> None:
    out = io.StringIO()
    console = Console(file=out, width=40, color_system=None)
    findings = [
        Finding(Level.OK, "settings", "every setting parses"),
        Finding(
            Level.ERROR, "telegram", "server said [bold]x[/] \x1b[2J with sekret-token", "Do this."
        ),
    ]
    print_findings(console, findings, Redactor("sekret-token"))
    assert out.getvalue().splitlines() == [
        "ok      settings: every setting parses",
        "error   telegram: server said [bold]x[/] [2J with ***. Fix: Do this.",
    ]


async def test_a_postgresql_database_is_checked_and_its_backup_hint_names_pg_dump(
    empty_postgres_url: str, postgres_url: str
) -> None:
    old = await check_database(Settings(_env_file=None, database_url=empty_postgres_url))
    assert old.level is Level.WARNING and "`parley run` migrates it" in old.text
    assert f"pg_dump --format=custom --file=parley-before-upgrade.dump {empty_postgres_url}" in (
        old.fix or ""
    )
    assert "sqlite3" not in (old.fix or "")
    current = await check_database(Settings(_env_file=None, database_url=postgres_url))
    assert current.level is Level.OK and f"schema {LATEST_VERSION} (current)" in current.text
