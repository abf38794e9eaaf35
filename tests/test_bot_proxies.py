"""TELEGRAM_PROXY and DISCORD_PROXY through real proxies on 127.0.0.1, end to end.

The proxies are real servers in their own processes: proxy.py (HTTP, CONNECT tunnels) and
pproxy (SOCKS5), each also with a username and password. Each bot answers a message through
each of them, against the fake Bot API / fake Discord and the fake model. That the traffic went
through the proxy is shown three ways:
- the proxy's log has the connection to the fake's port, and for Discord also the gateway's,
  which the test addresses as `localhost` (REST as 127.0.0.1) so its line is told apart: the
  host name reaches the proxy's log only through the proxy;
- with the proxy down (or the password wrong), the fake receives nothing and the bot's
  request fails as a network error that names the proxy (so retries and the start-up checks
  treat it as one);
- a real `parley run` child logs which proxy each bot uses and answers on both platforms,
  and its whole output (DEBUG included) never holds the proxy password.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import signal
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from aiogram import Bot
from aiogram.exceptions import TelegramNetworkError
from pydantic import ValidationError
from rich.console import Console

from bots.config import Settings
from bots.discord import DiscordBot
from bots.discord.client import ParleyDiscordClient
from bots.discord.endpoints import use_endpoints
from bots.doctor import Level, check_discord, check_telegram
from bots.logs import configure_logging
from bots.proxy import ProxyURL
from bots.telegram import TelegramBot, TelegramLimits, bot_api_session
from bots.telegram import requests as telegram_requests
from bots.telegram.proxy import aiogram_proxy
from bots.write_budget import WriteLimits
from core import AsyncClient
from core.conversation import NO_OBSERVER, ConversationService
from storage import open_store
from tests.cli_support import CLI_TIMEOUT, run_parley, start_parley
from tests.core_support import closed_port
from tests.fakes.discord_api import ALICE_ID, BOT_ID, GENERAL_ID, FakeDiscord
from tests.fakes.llm_server import FakeLLMServer, Script
from tests.fakes.telegram_api import FakeTelegramAPI, user
from tests.forward_proxy import ForwardProxy, ProxyProcess, SocksProxy

WAIT = 10.0
USERNAME = "parley"
#: Long enough to be redacted (`core.redact.MIN_SECRET_LENGTH`), and found nowhere else.
PASSWORD = "pr0xy-s3cret-7d1f"
KINDS = ["http", "http-with-password", "socks5", "socks5-with-password"]
FAST = TelegramLimits(private=WriteLimits(1, 0.1), group=WriteLimits(20, 6.0, reserve=5))
ALICE = user(1001, "Alice")
ANSWER = ["Hello ", "through ", "the proxy"]

#: Logging in touches no conversation; the client only reads the service's observer.
UNUSED_SERVICE = SimpleNamespace(observer=NO_OBSERVER)


@pytest.fixture(scope="module")
def proxies(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ProxyProcess]]:
    """One of each, started once for the module; tests tell their lines apart by log mark."""
    folder = tmp_path_factory.mktemp
    with contextlib.ExitStack() as stack:
        yield {
            "http": stack.enter_context(ForwardProxy(folder("http"))),
            "http-with-password": stack.enter_context(
                ForwardProxy(folder("http-auth"), username=USERNAME, password=PASSWORD)
            ),
            "socks5": stack.enter_context(SocksProxy(folder("socks5"))),
            "socks5-with-password": stack.enter_context(
                SocksProxy(folder("socks5-auth"), username=USERNAME, password=PASSWORD)
            ),
        }


def _settings(tmp_path: Path, **fields: Any) -> Settings:
    return Settings(
        _env_file=None,
        default_model="fake-model",
        database_url=f"sqlite:///{tmp_path}/parley.db",
        max_retries=0,
        **fields,
    )


def _telegram_bot(settings: Settings, service: ConversationService) -> TelegramBot:
    return TelegramBot(settings, service, write_limits=FAST)


@contextlib.asynccontextmanager
async def _serving(
    settings: Settings,
    llm: FakeLLMServer,
    make_bot: Callable[[Settings, ConversationService], TelegramBot | DiscordBot],
) -> AsyncIterator[None]:
    """Run the bot (real store, real core client) until the block ends, then stop it."""
    store = await open_store(settings.database_url)
    service = ConversationService(store, AsyncClient(base_url=llm.base_url), settings)
    task = asyncio.create_task(make_bot(settings, service).run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, WAIT)
        await service.aclose()
        await store.close()


# -- each bot answers through each proxy ---------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_telegram_answers_through_the_proxy(
    kind: str, proxies: dict[str, ProxyProcess], tmp_path: Path
) -> None:
    proxy = proxies[kind]
    mark = proxy.log_mark()
    async with FakeTelegramAPI() as tg, FakeLLMServer() as llm:
        settings = _settings(
            tmp_path,
            telegram_bot_token=tg.token,
            telegram_api_base=tg.base_url,
            telegram_proxy=proxy.url,
            openai_base_url=llm.base_url,
        )
        llm.enqueue(Script(pieces=ANSWER))
        chat = tg.private_chat(ALICE)
        async with _serving(settings, llm, _telegram_bot):
            await tg.wait_calls("getUpdates", ok=None, timeout=WAIT)
            await tg.message(chat, ALICE, "hi")
            await tg.wait_until(
                lambda: any(m.text == "".join(ANSWER) for m in chat.bot_messages()), WAIT
            )
        # proxy.py logs a tunnel when it closes: the bot has closed its session by now.
        await proxy.wait_for_tunnel(tg.base_url.removeprefix("http://"), since=mark)


@pytest.mark.parametrize("kind", KINDS)
async def test_discord_answers_through_the_proxy_rest_and_gateway(
    kind: str, proxies: dict[str, ProxyProcess], tmp_path: Path
) -> None:
    proxy = proxies[kind]
    mark = proxy.log_mark()
    async with FakeDiscord() as fake, FakeLLMServer() as llm:
        settings = _settings(
            tmp_path,
            discord_bot_token=fake.token,
            discord_api_base=fake.api_base,
            # By name, so the proxy's log tells the gateway's connection from the REST ones.
            discord_gateway_url=fake.gateway_url.replace("127.0.0.1", "localhost"),
            discord_proxy=proxy.url,
            openai_base_url=llm.base_url,
        )
        llm.enqueue(Script(pieces=ANSWER))
        async with _serving(settings, llm, DiscordBot):
            await fake.wait_connected(WAIT)
            await fake.push_message(f"<@{BOT_ID}> hi", author=ALICE_ID)
            await fake.wait_for(
                lambda: any(m.content == "".join(ANSWER) for m in fake.bot_messages(GENERAL_ID)),
                WAIT,
            )
        await proxy.wait_for_tunnel(f"127.0.0.1:{fake.port}", since=mark)
        await proxy.wait_for_tunnel(f"localhost:{fake.port}", since=mark)


# -- no proxy, no traffic; failures are network errors -------------------------------------------


def _unusable(proxies: dict[str, ProxyProcess], case: str) -> str:
    """A proxy URL that cannot carry a request: nothing listening, or the wrong password."""
    if case.endswith("-down"):
        return f"{case.removesuffix('-down')}://127.0.0.1:{closed_port()}"
    proxy = proxies[case.removesuffix("-wrong-password") + "-with-password"]
    return proxy.url.replace(PASSWORD, "not-the-password")


UNUSABLE = ["http-down", "socks5-down", "http-wrong-password", "socks5-wrong-password"]


@pytest.mark.parametrize("case", UNUSABLE)
async def test_telegram_through_an_unusable_proxy_reaches_nothing_and_fails_as_network_error(
    case: str, proxies: dict[str, ProxyProcess], tmp_path: Path, monkeypatch, caplog
) -> None:
    monkeypatch.setattr(telegram_requests, "NETWORK_BACKOFF", 0.01)
    async with FakeTelegramAPI() as tg:
        proxy_url = _unusable(proxies, case)
        settings = _settings(
            tmp_path,
            telegram_bot_token=tg.token,
            telegram_api_base=tg.base_url,
            telegram_proxy=proxy_url,
        )
        bot = Bot(tg.token, session=bot_api_session(settings))
        try:
            with pytest.raises(TelegramNetworkError) as caught:
                # Not getMe: its caller (the start-up) retries it, not RetryRequests.
                await bot.get_webhook_info()
        finally:
            await bot.session.close()
        assert tg.calls == []
    assert f"through the proxy {ProxyURL.model_validate(proxy_url).address}" in str(caught.value)
    # The retries took it for the network error it is.
    retries = [r.getMessage() for r in caplog.records if r.name == telegram_requests.__name__]
    assert len(retries) == telegram_requests.NETWORK_ATTEMPTS - 1


@pytest.mark.parametrize("case", UNUSABLE)
async def test_discord_through_an_unusable_proxy_reaches_nothing_and_fails_as_network_error(
    case: str, proxies: dict[str, ProxyProcess], tmp_path: Path
) -> None:
    async with FakeDiscord() as fake:
        proxy_url = _unusable(proxies, case)
        settings = _settings(tmp_path, discord_bot_token=fake.token, discord_proxy=proxy_url)
        use_endpoints(fake.api_base, fake.gateway_url)
        client = ParleyDiscordClient(settings, service=UNUSED_SERVICE)  # type: ignore[arg-type]
        try:
            with pytest.raises(aiohttp.ClientProxyConnectionError) as caught:
                await client.login(fake.token)
        finally:
            await client.close()
        assert fake.calls == []
    # What discord.py's reconnect loop (and any retry) catches: an OSError and a ClientError.
    assert isinstance(caught.value, OSError)
    assert f"through the proxy {ProxyURL.model_validate(proxy_url).address}" in str(caught.value)


# -- `parley run`: both bots through password proxies; the password never printed --------------


async def test_parley_run_answers_on_both_platforms_through_password_proxies_never_logging_it(
    proxies: dict[str, ProxyProcess], tmp_path: Path
) -> None:
    telegram_proxy = proxies["http-with-password"]
    discord_proxy = proxies["socks5-with-password"]
    telegram_mark, discord_mark = telegram_proxy.log_mark(), discord_proxy.log_mark()
    async with FakeTelegramAPI() as tg, FakeDiscord() as discord, FakeLLMServer() as llm:
        llm.enqueue(Script(pieces=["Hello ", "Telegram"]), Script(pieces=["Hello ", "Discord"]))
        child = await start_parley(
            "run",
            env={
                "TELEGRAM_BOT_TOKEN": tg.token,
                "TELEGRAM_API_BASE": tg.base_url,
                "TELEGRAM_PROXY": telegram_proxy.url,
                "DISCORD_BOT_TOKEN": discord.token,
                "DISCORD_API_BASE": discord.api_base,
                "DISCORD_GATEWAY_URL": discord.gateway_url,
                "DISCORD_PROXY": discord_proxy.url,
                "OPENAI_BASE_URL": llm.base_url,
                "DEFAULT_MODEL": "fake-model",
                "DATABASE_URL": f"sqlite:///{tmp_path / 'parley.db'}",
                "LOG_LEVEL": "DEBUG",
                "COLUMNS": "400",  # one log record per line, so a line is not cut mid-word
            },
            merge_stderr=True,
        )
        output = asyncio.create_task(child.communicate())
        try:
            chat = tg.private_chat(ALICE)
            await tg.wait_calls("getUpdates", ok=None, timeout=WAIT)
            await tg.message(chat, ALICE, "hi from telegram")
            await tg.wait_until(
                lambda: any(m.text == "Hello Telegram" for m in chat.bot_messages()), WAIT
            )
            await discord.wait_connected(WAIT)  # the model's answers are scripted in this order
            await discord.push_message(f"<@{BOT_ID}> hi from discord", author=ALICE_ID)
            await discord.wait_for(
                lambda: any(m.content == "Hello Discord" for m in discord.bot_messages(GENERAL_ID)),
                WAIT,
            )
        finally:
            if child.returncode is None:
                child.send_signal(signal.SIGTERM)
            out, _ = await asyncio.wait_for(output, CLI_TIMEOUT)
    text = out.decode()
    await telegram_proxy.wait_for_tunnel(tg.base_url.removeprefix("http://"), since=telegram_mark)
    await discord_proxy.wait_for_tunnel(f"127.0.0.1:{discord.port}", since=discord_mark)
    assert f"through the proxy http://{USERNAME}@127.0.0.1:{telegram_proxy.port}" in text
    assert f"through the proxy socks5://{USERNAME}@127.0.0.1:{discord_proxy.port}" in text
    assert PASSWORD not in text


async def test_parley_run_refuses_a_bad_proxy_url_without_printing_it() -> None:
    finished = await run_parley(
        "run",
        env={
            "TELEGRAM_BOT_TOKEN": "123:abc",
            "TELEGRAM_PROXY": f"sock5://{USERNAME}:{PASSWORD}@127.0.0.1:1080",
        },
    )
    assert finished.code == 2
    assert "TELEGRAM_PROXY=***" in finished.err
    assert "unknown proxy scheme 'sock5'" in finished.err
    assert PASSWORD not in finished.err + finished.out


# -- the setting ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "address", "password"),
    [
        ("http://127.0.0.1:3128", "http://127.0.0.1:3128", None),
        ("http://proxy.lan:3128/", "http://proxy.lan:3128", None),
        ("SOCKS5://alice:secret@Proxy.Lan:1080", "socks5://alice@proxy.lan:1080", "secret"),
        ("socks5h://a%40b:p%40ss%3Aw@[::1]:1080", "socks5h://a%40b@[::1]:1080", "p@ss:w"),
        ("socks4://10.0.0.1:1080", "socks4://10.0.0.1:1080", None),
    ],
)
def test_a_proxy_url_is_read_into_its_parts(written: str, address: str, password: str | None):
    proxy = Settings(_env_file=None, telegram_proxy=written, discord_proxy=written).telegram_proxy
    assert proxy is not None and proxy.address == address
    assert (proxy.password.get_secret_value() if proxy.password else None) == password
    assert ProxyURL.model_validate(proxy.url()) == proxy  # what the libraries get reads back


@pytest.mark.parametrize(
    ("written", "complaint"),
    [
        ("127.0.0.1:1080", "the scheme is missing"),
        ("ftp://127.0.0.1:21", "unknown proxy scheme 'ftp'"),
        ("https://proxy.lan:3128", "https:// (TLS to the proxy) is not supported"),
        ("socks5://proxy.lan", "the host and the port are both needed"),
        ("socks5://:1080", "the host and the port are both needed"),
        ("socks5://proxy.lan:http", "the port is not a number"),
        ("socks5://proxy.lan:70000", "the port is not a number"),
        ("http://proxy.lan:3128/path", "no path, query or fragment"),
    ],
)
def test_a_wrong_proxy_url_is_refused_saying_what_is_wrong(written: str, complaint: str) -> None:
    secret = written.replace("://", f"://{USERNAME}:{PASSWORD}@", 1)
    with pytest.raises(ValidationError) as caught:
        Settings(_env_file=None, discord_proxy=secret)
    assert "discord_proxy" in str(caught.value) and complaint in str(caught.value)
    assert PASSWORD not in str(caught.value)


def test_an_empty_proxy_setting_means_no_proxy(monkeypatch) -> None:
    monkeypatch.setenv("TELEGRAM_PROXY", "")
    assert Settings(_env_file=None).telegram_proxy is None


def test_aiogram_gets_socks5h_as_socks5_with_the_credentials() -> None:
    proxy = ProxyURL.model_validate("socks5h://a:p%40ss@proxy.lan:1080")
    assert aiogram_proxy(proxy) == "socks5://a:p%40ss@proxy.lan:1080"


def test_the_log_never_shows_a_proxy_password_as_given_or_as_sent() -> None:
    settings = Settings(
        _env_file=None,
        telegram_proxy=f"socks5://{USERNAME}:{PASSWORD}%40x@127.0.0.1:1080",
        discord_proxy=f"http://{USERNAME}:other-s3cret@127.0.0.1:3128",
    )
    proxy = settings.telegram_proxy
    assert proxy is not None and proxy.password is not None
    console = Console(file=io.StringIO(), width=400)
    root = logging.getLogger()
    level = root.level
    handler = configure_logging(settings, console)
    try:
        logging.getLogger("aiohttp").error(
            "failed via %s (%s, %s)", proxy.url(), proxy.password.get_secret_value(), "other-s3cret"
        )
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    shown = console.file.getvalue()
    assert f"failed via socks5://{USERNAME}:***@127.0.0.1:1080 (***, ***)" in shown
    assert PASSWORD not in repr(settings)


async def test_the_bots_ignore_the_providers_proxy_variables(tmp_path: Path, monkeypatch) -> None:
    """HTTPS_PROXY and the like are for the providers (README): the bots go direct without
    their own setting, even with those pointing at nothing."""
    nowhere = f"http://127.0.0.1:{closed_port()}"
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.setenv(name, nowhere)
    async with FakeTelegramAPI() as tg, FakeDiscord() as fake:
        settings = _settings(
            tmp_path,
            telegram_bot_token=tg.token,
            telegram_api_base=tg.base_url,
            discord_bot_token=fake.token,
        )
        bot = Bot(tg.token, session=bot_api_session(settings))
        try:
            assert (await bot.get_me()).id == tg.bot["id"]
        finally:
            await bot.session.close()
        use_endpoints(fake.api_base, fake.gateway_url)
        client = ParleyDiscordClient(settings, service=UNUSED_SERVICE)  # type: ignore[arg-type]
        try:
            await client.login(fake.token)
        finally:
            await client.close()
        assert fake.calls[0].path == "/users/@me" and fake.calls[0].status == 200


# -- parley doctor asks the platforms the way the bots go --------------------------------------


async def test_doctor_checks_the_tokens_through_the_bots_proxies(
    proxies: dict[str, ProxyProcess], tmp_path: Path
) -> None:
    proxy = proxies["socks5-with-password"]
    mark = proxy.log_mark()
    async with FakeTelegramAPI() as tg, FakeDiscord() as discord:
        through = _settings(
            tmp_path,
            telegram_bot_token=tg.token,
            telegram_api_base=tg.base_url,
            telegram_proxy=proxy.url,
            discord_bot_token=discord.token,
            discord_api_base=discord.api_base,
            discord_proxy=proxy.url,
        )
        telegram, discord_finding = await asyncio.gather(
            check_telegram(through, timeout=WAIT), check_discord(through, timeout=WAIT)
        )
        assert (telegram.level, discord_finding.level) == (Level.OK, Level.OK)
        await proxy.wait_for_log(tg.base_url.removeprefix("http://"), since=mark)
        await proxy.wait_for_log(discord.api_base.removeprefix("http://").split("/")[0], mark)

        unusable = _unusable(proxies, "socks5-down")
        down = through.model_copy(
            update={
                "telegram_proxy": ProxyURL.model_validate(unusable),
                "discord_proxy": ProxyURL.model_validate(unusable),
            }
        )
        findings = await asyncio.gather(
            check_telegram(down, timeout=WAIT), check_discord(down, timeout=WAIT)
        )
    for finding in findings:  # the platform is out of reach that way: a warning, no traceback
        assert finding.level is Level.WARNING and "cannot reach" in finding.text
