"""`parley doctor`: can this configuration run the bots? One line per finding, with its fix.

Each check returns findings instead of raising, so one bad setting does not hide the next:
the settings parse, the database can be written and its schema is one this Parley can use,
each bot token is accepted by its platform (Telegram's getMe; Discord's application info,
whose flags say whether the Message Content intent is on), who may use each bot (an empty
access list is a warning, `bots.open_access`), each configured provider answers a probe. An error is something that would stop the bots or every reply; a warning is
something they survive (a platform out of reach, rate limited, or something else answering in
its place but for a 404: the bots retry these, by the same rules, `bots.startup`).

`parley run` runs the token checks at start (`preflight`), so a rejected token or a missing
intent stops it with its fix before anything else starts.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shlex
from collections.abc import Awaitable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import aiohttp
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from bots.config import Settings, setting_problems
from bots.errors import BotStartupError, NotTheApi
from bots.logs import configure_logging, settings_secrets
from bots.open_access import open_platforms
from bots.startup import host_of, network_cause
from bots.version import parley_version
from core.errors import ParleyError
from core.health import check_providers
from core.providers import ProviderRegistry
from core.providers.base import provider_name
from core.providers.http import close_shared_client
from core.redact import Redactor
from core.text import without_controls
from storage import StorageError, inspect_store
from storage.factory import is_postgres

log = logging.getLogger(__name__)

#: Seconds `parley doctor` gives each platform to answer.
DOCTOR_TIMEOUT = 10.0
#: Seconds `parley run` gives them at start: a platform out of reach only costs a warning
#: there (the bots retry), so the start should not wait long for it.
PREFLIGHT_TIMEOUT = 5.0
#: An error's own words are cut to this length in a finding.
CAUSE_CHARS = 160

TELEGRAM_API_BASE_FIX = (
    "TELEGRAM_API_BASE must be a Bot API server (https://api.telegram.org or your own)."
)
DISCORD_API_BASE_FIX = (
    "DISCORD_API_BASE must be Discord's API with its version "
    "(https://discord.com/api/v10) or a compatible server."
)

#: Discord's application flags for the Message Content intent: the switch in the Developer
#: Portal sets the `_LIMITED` one for bots in under 100 servers, the other once verified.
GATEWAY_MESSAGE_CONTENT = 1 << 18
GATEWAY_MESSAGE_CONTENT_LIMITED = 1 << 19

EXIT_PROBLEMS = 1


class Level(StrEnum):
    OK = "ok"
    WARNING = "warning"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class Finding:
    """One line of the report: what was checked, what was found, and how to fix it."""

    level: Level
    subject: str
    text: str
    fix: str = ""

    @property
    def line(self) -> str:
        if not self.fix:
            return f"{self.subject}: {self.text}"
        stop = "" if self.text.endswith((".", "!", "?")) else "."
        return f"{self.subject}: {self.text}{stop} Fix: {self.fix}"


def _short(text: str) -> str:
    """Someone else's words on one line, cut to `CAUSE_CHARS`."""
    return " ".join(text.split())[:CAUSE_CHARS]


def _cause(exc: BaseException) -> str:
    """An exception in a few words: its message, else its type (a timeout has no message)."""
    return _short(str(exc)) or type(exc).__name__


def _network_cause(exc: BaseException) -> str:
    """Why a request did not get through, in the retries' own words (`bots.startup`)."""
    return network_cause(exc) or _cause(exc)


# Settings.


def load_settings() -> tuple[Settings | None, list[Finding]]:
    """The settings, and a finding per bad one. Bad settings are replaced by their defaults so
    the other checks still run; None only if even that fails."""
    try:
        return Settings(), [Finding(Level.OK, "settings", "every setting parses")]
    except ValidationError as exc:
        problems = setting_problems(exc)
    findings = [
        Finding(Level.ERROR, "settings", line, "Correct it in .env or the environment.")
        for _, line in problems
    ]
    defaults = {
        name: Settings.model_fields[name].get_default(call_default_factory=True)
        for name, _ in problems
        if name in Settings.model_fields
    }
    try:
        return Settings(**defaults), findings
    except ValidationError:
        return None, findings


# Platforms.


async def check_telegram(settings: Settings, *, timeout: float) -> Finding:
    """getMe with the bot's token at TELEGRAM_API_BASE, through aiogram like the bot itself,
    its failures sorted as the bot's start-up sorts them (`bots.telegram.polling.ask_who`)."""
    from aiogram import Bot
    from aiogram.client.session.aiohttp import AiohttpSession
    from aiogram.client.telegram import TelegramAPIServer
    from aiogram.exceptions import (
        TelegramAPIError,
        TelegramNetworkError,
        TelegramRetryAfter,
        TelegramServerError,
    )
    from aiogram.utils.token import TokenValidationError

    from bots.telegram.polling import ask_who
    from bots.telegram.proxy import ProxyFailures, aiogram_proxy

    token = settings.telegram_bot_token
    assert token is not None
    host = host_of(settings.telegram_api_base)
    api = TelegramAPIServer.from_base(settings.telegram_api_base)
    session = AiohttpSession(api=api, timeout=timeout)
    if settings.telegram_proxy is not None:  # the way the bot goes, so the answer is its answer
        session = AiohttpSession(
            api=api, timeout=timeout, proxy=aiogram_proxy(settings.telegram_proxy)
        )
        session.middleware(ProxyFailures(settings.telegram_proxy))
    try:
        bot = Bot(token.get_secret_value(), session=session)
    except TokenValidationError:
        return Finding(
            Level.ERROR,
            "telegram",
            "TELEGRAM_BOT_TOKEN is not a bot token (digits, a colon, then letters).",
            "Copy it again from @BotFather (/mybots -> your bot -> API Token).",
        )
    try:
        me = await ask_who(bot)
    except BotStartupError as exc:  # the token
        return Finding(Level.ERROR, "telegram", str(exc))
    except (TelegramNetworkError, TelegramServerError) as exc:
        return Finding(
            Level.WARNING,
            "telegram",
            f"cannot reach {host} ({_network_cause(exc)}); `parley run` keeps retrying.",
            "Check the network, a firewall or proxy, and TELEGRAM_API_BASE.",
        )
    except TelegramRetryAfter as exc:  # flood control: asking again at once makes it longer
        return Finding(
            Level.WARNING,
            "telegram",
            f"{host} is rate limited for {exc.retry_after} s; `parley run` keeps retrying.",
            "None needed; do not restart Parley in a loop meanwhile.",
        )
    except NotTheApi as answer:
        return _not_the_api("telegram", host, answer, "a Bot API server", TELEGRAM_API_BASE_FIX)
    except TelegramAPIError as exc:  # another error answer: polling could never work there
        return Finding(
            Level.ERROR, "telegram", f"{host} refused getMe: {_cause(exc)}.", TELEGRAM_API_BASE_FIX
        )
    finally:
        await bot.session.close()
    return Finding(Level.OK, "telegram", f"token accepted by {host}: the bot is @{me.username}")


async def check_discord(settings: Settings, *, timeout: float) -> Finding:
    """The bot's application info from DISCORD_API_BASE: the token, and the intent's flags."""
    from bots.discord import BAD_TOKEN_HELP, MESSAGE_CONTENT_FIX
    from bots.discord.proxy import ProxiedConnector

    token = settings.discord_bot_token
    assert token is not None
    host = host_of(settings.discord_api_base)
    headers = {
        "Authorization": f"Bot {token.get_secret_value()}",
        # Discord asks every bot for this form: DiscordBot (name or URL, version).
        "User-Agent": f"DiscordBot (parley, {parley_version()})",
    }
    url = settings.discord_api_base.rstrip("/") + "/oauth2/applications/@me"
    proxy = settings.discord_proxy
    try:
        async with (
            aiohttp.ClientSession(
                connector=None if proxy is None else ProxiedConnector(proxy),
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as http,
            http.get(url, headers=headers) as response,
        ):
            status, content_type = response.status, response.content_type
            body = await response.read()
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Finding(
            Level.WARNING,
            "discord",
            f"cannot reach {host} ({_network_cause(exc)}); `parley run` keeps retrying.",
            "Check the network, a firewall or proxy, and DISCORD_API_BASE.",
        )
    if status == 401:
        return Finding(Level.ERROR, "discord", BAD_TOKEN_HELP)
    if status == 429 or status >= 500:
        return Finding(
            Level.WARNING,
            "discord",
            f"{host} answered HTTP {status}; `parley run` keeps retrying.",
            "Wait, or check https://discordstatus.com.",
        )
    application = _json_object(body)
    if application is None:
        answer = NotTheApi(status, content_type)
        return _not_the_api("discord", host, answer, "Discord's API", DISCORD_API_BASE_FIX)
    if status != 200:  # the API's own refusal
        return Finding(
            Level.ERROR,
            "discord",
            f"{host} answered HTTP {status} to the application info request.",
            DISCORD_API_BASE_FIX,
        )
    flags = application.get("flags")
    intent = GATEWAY_MESSAGE_CONTENT | GATEWAY_MESSAGE_CONTENT_LIMITED
    if not (isinstance(flags, int) and flags & intent):
        return Finding(
            Level.ERROR,
            "discord",
            "the Message Content intent is off for this application, so the bot cannot start.",
            MESSAGE_CONTENT_FIX,
        )
    name = application.get("name") or "?"
    return Finding(
        Level.OK,
        "discord",
        f"token accepted by {host}: application {name}, Message Content intent on",
    )


def _not_the_api(subject: str, host: str, answer: NotTheApi, api: str, fix: str) -> Finding:
    """An answer that is not `api`'s, by `NotTheApi`'s rule: a 404 is an error (the address
    is wrong), anything else a warning (a captive portal or proxy, which passes)."""
    said = f"{host} answered HTTP {answer.status} ({answer.content_type})"
    if answer.wrong_address:
        return Finding(Level.ERROR, subject, f"{said}: it does not answer like {api}.", fix)
    return Finding(
        Level.WARNING,
        subject,
        f"{said}, not like {api} (a captive portal or proxy in the way?); "
        "`parley run` keeps retrying.",
        f"Check the network and its proxy; if it lasts, {fix}",
    )


def _json_object(body: bytes) -> dict[str, Any] | None:
    """`body` as a JSON object, or None if it is something else."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def token_checks(settings: Settings, *, timeout: float) -> list[Awaitable[Finding]]:
    """A check for each platform whose token is set."""
    checks: list[Awaitable[Finding]] = []
    if settings.telegram_bot_token is not None:
        checks.append(check_telegram(settings, timeout=timeout))
    if settings.discord_bot_token is not None:
        checks.append(check_discord(settings, timeout=timeout))
    return checks


async def preflight(settings: Settings) -> None:
    """`parley run`'s start: raise BotStartupError, with each fix, when a platform refuses its
    token or intent; log a warning for a platform out of reach (the bots retry it)."""
    findings = await asyncio.gather(*token_checks(settings, timeout=PREFLIGHT_TIMEOUT))
    for finding in findings:
        if finding.level is Level.WARNING:
            log.warning("%s", finding.line)
    errors = [finding.line for finding in findings if finding.level is Level.ERROR]
    if errors:
        raise BotStartupError("\n".join(errors))


# Providers and the database.


async def check_provider_probes(settings: Settings) -> list[Finding]:
    """Probe each working provider. One that serves DEFAULT_MODEL failing is an error (every
    reply in a chat with no model of its own fails); the others are warnings."""
    try:
        registry = ProviderRegistry.from_settings(settings)
    except ParleyError as exc:
        return [Finding(Level.ERROR, "providers", _cause(exc), "Correct PROVIDERS_FILE.")]
    serving = registry.for_model(settings.default_model)
    members = getattr(serving, "providers", None) or [serving]
    serving_names = {provider_name(provider) for provider in members}
    findings = []
    if not any(getattr(provider, "working", False) for provider in members):
        findings.append(
            Finding(
                Level.ERROR,
                "providers",
                f"DEFAULT_MODEL {settings.default_model} goes to "
                f"{', '.join(sorted(serving_names))}, which has no API key.",
                "Set OPENAI_API_KEY, or point OPENAI_BASE_URL at a local server.",
            )
        )
    results = await check_providers(registry=registry)
    serving_answered = any(r.ok for r in results if r.provider in serving_names)
    for result in results:
        subject = f"provider {result.provider}"
        if result.ok:
            text = f"answered with {result.model} in {result.total:.1f} s"
            findings.append(Finding(Level.OK, subject, text))
            continue
        serves_default = result.provider in serving_names and not serving_answered
        findings.append(
            Finding(
                Level.ERROR if serves_default else Level.WARNING,
                f"{subject} (serves DEFAULT_MODEL)" if serves_default else subject,
                f"failed with {result.model}: {_short(result.error or 'no answer')}",
                "Check its key, address and model (`parley providers check` shows all).",
            )
        )
    return findings


async def check_database(settings: Settings) -> Finding:
    """Read-only: the file (or its folder) is writable and its schema one this Parley uses."""
    try:
        status = await inspect_store(settings.database_url)
    except StorageError as exc:
        return Finding(Level.ERROR, "database", str(exc))
    if not status.exists:
        text = (
            f"{status.location} does not exist yet; its folder is writable, `parley run` creates it"
        )
        return Finding(Level.OK, "database", text)
    if status.version < status.latest:
        return Finding(
            Level.WARNING,
            "database",
            f"{status.location} has schema {status.version}, this Parley expects "
            f"{status.latest}; `parley run` migrates it when it starts.",
            f"None needed; to keep a copy first: {_backup_command(status.location)}.",
        )
    return Finding(
        Level.OK, "database", f"{status.location} is writable, schema {status.version} (current)"
    )


def _backup_command(location: str) -> str:
    """How to copy the database before `parley run` migrates it, with its engine's own tool
    (the location never holds the password: pg_dump asks for it, or reads PGPASSWORD)."""
    if is_postgres(location):
        return f"pg_dump --format=custom --file=parley-before-upgrade.dump {shlex.quote(location)}"
    return f"sqlite3 {location} '.backup parley-before-upgrade.db'"


# The report.


async def diagnose(settings: Settings) -> list[Finding]:
    """Every check but the settings', run at once, their findings in a fixed order."""
    if settings.telegram_bot_token is None and settings.discord_bot_token is None:
        tokens: list[Finding] = [
            Finding(
                Level.ERROR,
                "bots",
                "no bot token is set, so `parley run` has nothing to run.",
                "Put TELEGRAM_BOT_TOKEN and/or DISCORD_BOT_TOKEN in .env "
                "(README, 'Platform set-up').",
            )
        ]
    else:
        tokens = list(await asyncio.gather(*token_checks(settings, timeout=DOCTOR_TIMEOUT)))
        for name, token in (
            ("Telegram", settings.telegram_bot_token),
            ("Discord", settings.discord_bot_token),
        ):
            if token is None:
                text = f"{name.upper()}_BOT_TOKEN is not set: no {name} bot"
                tokens.append(Finding(Level.OK, name.lower(), text))
    database, providers = await asyncio.gather(
        check_database(settings), check_provider_probes(settings)
    )
    return [database, *tokens, *check_access(settings), *providers]


def check_access(settings: Settings) -> list[Finding]:
    """A warning for each bot anyone may use (`bots.open_access`): it runs, but on the key's
    owner's money."""
    return [
        Finding(Level.WARNING, f"{platform.name.lower()} access", platform.risk, platform.fix)
        for platform in open_platforms(settings)
    ]


_STYLES = {Level.OK: "green", Level.WARNING: "yellow", Level.ERROR: "red"}


def print_findings(console: Console, findings: list[Finding], redact: Redactor) -> None:
    """One line per finding, however narrow the terminal; no secret, no markup from outside."""
    for finding in findings:
        style = _STYLES[finding.level]
        console.print(
            f"[{style}]{finding.level.value:<7}[/] {escape(without_controls(redact(finding.line)))}",
            soft_wrap=True,
            highlight=False,
        )


async def report(console: Console, settings: Settings | None, findings: list[Finding]) -> int:
    """Run every check for `settings` after the settings' own `findings`, print them all, and
    return the exit code: 1 if anything would stop the bots, else 0 (warnings included)."""
    if settings is not None:
        try:
            findings = findings + await diagnose(settings)
        finally:
            await close_shared_client()
    secrets = settings_secrets(settings) if settings is not None else []
    print_findings(console, findings, Redactor(*secrets))
    errors = sum(finding.level is Level.ERROR for finding in findings)
    warnings = sum(finding.level is Level.WARNING for finding in findings)
    verdict = "the bots would not start or not answer" if errors else "ready to run"
    console.print(f"{errors} error(s), {warnings} warning(s): {verdict}.", highlight=False)
    return EXIT_PROBLEMS if errors else 0


def run_doctor(console: Console) -> int:
    """`parley doctor`: the report on `console`, logs (warnings and worse) on stderr."""
    settings, findings = load_settings()
    if settings is not None:
        configure_logging(settings, Console(stderr=True), at_least="WARNING")
    return asyncio.run(report(console, settings, findings))
