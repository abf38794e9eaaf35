"""`parley run` through outages and stops, as a real child process against the fakes.

A platform's fake goes away and comes back on the same port (keeping what the platform would:
Telegram's pending updates, Discord's resumable sessions); the child must retry with one log
line per try and no traceback, answer once the platform is back, and never answer a message
twice. SIGTERM lets replies in flight finish within SHUTDOWN_GRACE_SECONDS and cuts the rest
short with the shutdown note, exit code 0. The recovery times are printed (`pytest -s`).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from core.conversation import SHUTDOWN_NOTE, ChatRef
from storage import MessageStatus, Role, open_store
from tests.cli_support import start_parley
from tests.fakes.discord_api import BOT_ID, GENERAL_ID, FakeDiscord
from tests.fakes.llm_server import FakeLLMServer, Script
from tests.fakes.telegram_api import BOT_USERNAME, FakeChat, FakeTelegramAPI, user

#: Bound on each wait (a fresh interpreter importing aiogram and discord.py on a busy machine).
WAIT = 30.0
ALICE = user(1001, "Alice")
MENTION = f"<@{BOT_ID}>"


def free_port() -> int:
    """A port nothing listens on (yet): the fake is started there later."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Child:
    """A running `parley run` and its log, each line kept with the moment it was read."""

    process: asyncio.subprocess.Process
    lines: list[tuple[float, str]] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _reader: asyncio.Task[None] | None = None

    def start_reading(self) -> None:
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for raw in self.process.stdout:
            self.lines.append((time.monotonic(), raw.decode(errors="replace").rstrip()))
            self._changed.set()
        self._changed.set()

    def matching(self, text: str) -> list[tuple[float, str]]:
        return [(at, line) for at, line in self.lines if text in line]

    async def wait_line(self, text: str, count: int = 1) -> float:
        """Wait until `count` lines hold `text`; the moment the last of them was read."""

        async def seen() -> float:
            while len(found := self.matching(text)) < count:
                if self.process.returncode is not None and self._reader and self._reader.done():
                    raise AssertionError(f"parley exited before {text!r}:\n{self.log}")
                self._changed.clear()
                await self._changed.wait()
            return found[count - 1][0]

        try:
            return await asyncio.wait_for(seen(), WAIT)
        except TimeoutError:
            raise AssertionError(f"no {count} x {text!r} in:\n{self.log}") from None

    async def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        """Send `sig` and wait for the exit; its code."""
        if self.process.returncode is None:
            self.process.send_signal(sig)
        return await self.exited()

    async def exited(self) -> int:
        """Wait for the exit (the log read to its end); its code."""
        code = await asyncio.wait_for(self.process.wait(), WAIT)
        if self._reader is not None:
            await asyncio.wait_for(self._reader, WAIT)
        return code

    @property
    def log(self) -> str:
        return "\n".join(line for _, line in self.lines)


@contextlib.asynccontextmanager
async def parley_run(env: dict[str, str]) -> AsyncIterator[Child]:
    """`parley run` with `env`, its log merged and read as it comes; killed if a test fails."""
    # Wide lines: rich wraps log lines at the terminal width, 80 in a pipe.
    process = await start_parley("run", env={"COLUMNS": "300", **env}, merge_stderr=True)
    child = Child(process)
    child.start_reading()
    try:
        yield child
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        if child._reader is not None:
            await asyncio.wait_for(child._reader, WAIT)


def telegram_env(tg: FakeTelegramAPI, llm: FakeLLMServer, database: Path) -> dict[str, str]:
    return {
        "TELEGRAM_BOT_TOKEN": tg.token,
        "TELEGRAM_API_BASE": tg.base_url,
        "OPENAI_BASE_URL": llm.base_url,
        "DEFAULT_MODEL": "fake-model",
        "DATABASE_URL": f"sqlite:///{database}",
    }


def discord_env(discord: FakeDiscord, llm: FakeLLMServer, database: Path) -> dict[str, str]:
    return {
        "DISCORD_BOT_TOKEN": discord.token,
        "DISCORD_API_BASE": discord.api_base,
        "DISCORD_GATEWAY_URL": discord.gateway_url,
        "OPENAI_BASE_URL": llm.base_url,
        "DEFAULT_MODEL": "fake-model",
        "DATABASE_URL": f"sqlite:///{database}",
    }


def replies_to(chat: FakeChat, message_id: int) -> list[str | None]:
    """The texts of the bot's messages replying to the user's message `message_id`."""
    return [m.text for m in chat.bot_messages() if m.reply_to == message_id]


async def answered(tg: FakeTelegramAPI, chat: FakeChat, request: dict, text: str) -> float:
    """Wait until the bot's reply to `request` reads `text`; when it first did."""
    message_id = request["message_id"]

    def reply() -> float | None:
        for message in chat.bot_messages():
            if message.reply_to == message_id and message.text == text:
                return next(at for shown, _, at in message.history if shown == text)
        return None

    result = await tg.wait_until(reply, WAIT)
    assert isinstance(result, float)
    return result


def report(what: str, **seconds: float) -> None:
    figures = ", ".join(f"{name} {value:.2f} s" for name, value in seconds.items())
    print(f"\n[recovery] {what}: {figures}")


def assert_no_traceback(child: Child) -> None:
    assert "Traceback" not in child.log, child.log


# Start-up with the platform unreachable.


async def test_telegram_unreachable_at_start_is_retried_until_it_answers(tmp_path: Path) -> None:
    port = free_port()
    tg = FakeTelegramAPI(port=port)
    async with (
        FakeLLMServer() as llm,
        parley_run(telegram_env(tg, llm, tmp_path / "p.db")) as child,
    ):
        await child.wait_line(f"cannot reach 127.0.0.1:{port} (connection refused)", count=2)
        assert not child.matching("running as")
        # Someone wrote while the bot could not reach Telegram: Telegram keeps it.
        chat = tg.private_chat(ALICE)
        request = await tg.message(chat, ALICE, "are you there?")
        await tg.start()
        up = time.monotonic()
        try:
            running = await child.wait_line(f"Telegram: running as @{BOT_USERNAME}")
            first_answer = await answered(tg, chat, request, "echo: are you there?")
            report("Telegram up at start", to_running_as=running - up, to_answer=first_answer - up)
            assert await child.stop() == 0
        finally:
            await tg.close()
    retries = child.matching("Telegram: cannot reach")
    assert len(retries) >= 2 and all("; retrying in " in line for _, line in retries)
    assert_no_traceback(child)
    # One try per line: the waits double (1 s, 2 s, ...), the first one fails at once.
    assert [line.split("retrying in ")[1] for _, line in retries[:2]] == ["1 s", "2 s"]
    assert len(tg.calls_of("getMe", ok=True)) == 1


async def test_discord_unreachable_at_start_is_retried_until_it_answers(tmp_path: Path) -> None:
    port = free_port()
    discord = FakeDiscord(port=port)
    async with (
        FakeLLMServer() as llm,
        parley_run(discord_env(discord, llm, tmp_path / "p.db")) as child,
    ):
        await child.wait_line(f"cannot reach 127.0.0.1:{port} (connection refused)", count=2)
        assert not child.matching("running as")
        await discord.start()
        up = time.monotonic()
        try:
            running = await child.wait_line("Discord: running as @Parley")
            await discord.wait_connected(WAIT)
            await discord.push_message(f"{MENTION} are you there?")
            answer = await discord.wait_for(
                lambda: [
                    m for m in discord.bot_messages(GENERAL_ID) if "are you there" in m.content
                ],
                WAIT,
            )
            report(
                "Discord up at start",
                to_running_as=running - up,
                to_answer=time.monotonic() - up,
            )
            assert len(answer) == 1
            assert await child.stop() == 0
        finally:
            await discord.__aexit__()
    retries = child.matching("Discord: cannot reach")
    assert len(retries) >= 2 and all("; retrying in " in line for _, line in retries)
    assert_no_traceback(child)


async def test_a_rejected_token_stops_at_once_with_its_fix(tmp_path: Path) -> None:
    async with FakeTelegramAPI(token="123:the-real-one") as tg, FakeLLMServer() as llm:
        env = telegram_env(tg, llm, tmp_path / "p.db")
        env["TELEGRAM_BOT_TOKEN"] = "123:not-the-real-one"
        async with parley_run(env) as child:
            code = await asyncio.wait_for(child.process.wait(), WAIT)
    assert code == 1
    assert "@BotFather" in child.log and "retrying" not in child.log
    assert_no_traceback(child)


# The platform goes away while the bot runs, and comes back on the same port.


async def test_telegram_outage_while_running_is_survived(tmp_path: Path) -> None:
    async with (
        FakeTelegramAPI() as tg,
        FakeLLMServer() as llm,
        parley_run(telegram_env(tg, llm, tmp_path / "p.db")) as child,
    ):
        await child.wait_line("Telegram: running as")
        chat = tg.private_chat(ALICE)
        before = await tg.message(chat, ALICE, "before")
        await answered(tg, chat, before, "echo: before")

        await tg.go_away()
        await child.wait_line("Telegram: cannot reach")
        during = await tg.message(chat, ALICE, "during")  # Telegram keeps it
        await tg.come_back()
        up = time.monotonic()
        back = await child.wait_line("Telegram: connected again after")
        answer_during = await answered(tg, chat, during, "echo: during")
        after = await tg.message(chat, ALICE, "after")
        await answered(tg, chat, after, "echo: after")
        report(
            "Telegram outage while running",
            to_connected_again=back - up,
            to_answer_of_message_sent_during_outage=answer_during - up,
        )
        assert not tg.calls_of("getUpdates", ok=False)  # no second poller, no 409
        assert await child.stop() == 0
    for request, text in [
        (before, "echo: before"),
        (during, "echo: during"),
        (after, "echo: after"),
    ]:
        assert replies_to(chat, request["message_id"]) == [text]
    assert len(llm.requests) == 3
    assert_no_traceback(child)
    assert len(child.matching("Telegram: cannot reach")) >= 1


async def test_discord_outage_while_running_is_survived(tmp_path: Path) -> None:
    async with (
        FakeDiscord() as discord,
        FakeLLMServer() as llm,
        parley_run(discord_env(discord, llm, tmp_path / "p.db")) as child,
    ):
        await child.wait_line("Discord: running as")
        await discord.wait_connected(WAIT)
        await discord.push_message(f"{MENTION} before")
        await discord.wait_for(lambda: _discord_answers(discord, "before"), WAIT)

        await discord.go_away()
        await child.wait_line("Discord: cannot reach")
        await discord.come_back()
        up = time.monotonic()
        back = await child.wait_line("Discord: connected again after")
        await discord.wait_connected(WAIT)
        await discord.push_message(f"{MENTION} after")
        await discord.wait_for(lambda: _discord_answers(discord, "after"), WAIT)
        report(
            "Discord outage while running",
            to_connected_again=back - up,
            to_answer=time.monotonic() - up,
        )
        assert discord.resumed == 1  # the session went on: nothing replayed twice
        assert await child.stop() == 0
    assert len(_discord_answers(discord, "before")) == 1
    assert len(_discord_answers(discord, "after")) == 1
    assert len(llm.requests) == 2
    assert_no_traceback(child)
    reconnects = child.matching("Discord: cannot reach")
    assert reconnects and all("; reconnecting in " in line for _, line in reconnects)


def _discord_answers(discord: FakeDiscord, word: str) -> list[str]:
    return [
        m.content for m in discord.bot_messages(GENERAL_ID) if m.content == f"echo: [Bob] {word}"
    ]


# SIGTERM with a reply in flight.


async def _stored_reply(database: Path, chat: ChatRef) -> tuple[MessageStatus, str]:
    store = await open_store(f"sqlite:///{database}")
    try:
        conversation = await store.current_conversation(chat)
        assert conversation is not None
        messages = await store.conversation_messages(conversation)
        assert messages[-1].role is Role.ASSISTANT
        return messages[-1].status, messages[-1].text
    finally:
        await store.close()


@pytest.mark.parametrize("signal_sent", [signal.SIGTERM, signal.SIGINT])
async def test_a_stop_lets_the_reply_in_flight_finish_within_the_grace(
    tmp_path: Path, signal_sent: signal.Signals
) -> None:
    database = tmp_path / "p.db"
    pieces = ["one ", "two ", "three ", "four ", "five"]
    async with FakeTelegramAPI() as tg, FakeLLMServer() as llm:
        llm.enqueue(Script(pieces=pieces, delay=0.3))
        env = {**telegram_env(tg, llm, database), "SHUTDOWN_GRACE_SECONDS": "20"}
        async with parley_run(env) as child:
            await child.wait_line("Telegram: running as")
            chat = tg.private_chat(ALICE)
            request = await tg.message(chat, ALICE, "count")
            await tg.wait_until(lambda: replies_to(chat, request["message_id"]), WAIT)
            child.process.send_signal(signal_sent)
            await child.wait_line("stopping; replies in flight get up to 20 s")
            late = await tg.message(chat, ALICE, "sent while stopping")
            assert await child.exited() == 0
        assert replies_to(chat, request["message_id"]) == ["".join(pieces)]
        assert replies_to(chat, late["message_id"]) == []  # not taken...
        assert await _stored_reply(database, ChatRef("telegram", str(chat.id))) == (
            MessageStatus.COMPLETE,
            "".join(pieces),
        )
        assert_no_traceback(child)

        # ...so the next start answers it, and only it.
        async with parley_run(telegram_env(tg, llm, database)) as again:
            await answered(tg, chat, late, "echo: sent while stopping")
            assert await again.stop() == 0
        assert replies_to(chat, request["message_id"]) == ["".join(pieces)]
        assert len(llm.requests) == 2


async def test_a_stop_cuts_a_long_reply_short_after_the_grace(tmp_path: Path) -> None:
    database = tmp_path / "p.db"
    async with FakeTelegramAPI() as tg, FakeLLMServer() as llm:
        llm.enqueue(Script(pieces=["so far ", *[f"w{i} " for i in range(100)]], delay=0.2))
        env = {**telegram_env(tg, llm, database), "SHUTDOWN_GRACE_SECONDS": "0.5"}
        async with parley_run(env) as child:
            await child.wait_line("Telegram: running as")
            chat = tg.private_chat(ALICE)
            request = await tg.message(chat, ALICE, "talk a lot")
            await tg.wait_until(lambda: replies_to(chat, request["message_id"]), WAIT)
            stopped_at = time.monotonic()
            assert await child.stop() == 0
            took = time.monotonic() - stopped_at
        (shown,) = replies_to(chat, request["message_id"])
        assert shown is not None and shown.startswith("so far ")
        assert shown.endswith(f"\n\n{SHUTDOWN_NOTE}") and "w99" not in shown
        status, text = await _stored_reply(database, ChatRef("telegram", str(chat.id)))
        assert status is MessageStatus.INTERRUPTED and text.startswith("so far ")
        assert "w99" not in text
        assert took < 10, took  # the grace, then the last edit: not the whole reply
        assert_no_traceback(child)

        # The update was confirmed at the stop: a restart does not answer it again.
        async with parley_run(telegram_env(tg, llm, database)) as again:
            marker = await tg.message(chat, ALICE, "new")
            await answered(tg, chat, marker, "echo: new")
            assert await again.stop() == 0
        assert replies_to(chat, request["message_id"]) == [shown]
        assert len(llm.requests) == 2


async def test_discord_stop_cuts_a_long_reply_short_after_the_grace(tmp_path: Path) -> None:
    database = tmp_path / "p.db"
    async with FakeDiscord() as discord, FakeLLMServer() as llm:
        llm.enqueue(Script(pieces=["so far ", *[f"w{i} " for i in range(100)]], delay=0.2))
        env = {**discord_env(discord, llm, database), "SHUTDOWN_GRACE_SECONDS": "0.5"}
        async with parley_run(env) as child:
            await child.wait_line("Discord: running as")
            await discord.wait_connected(WAIT)
            await discord.push_message(f"{MENTION} talk a lot")
            await discord.wait_for(lambda: discord.bot_messages(GENERAL_ID), WAIT)
            assert await child.stop() == 0
        (shown,) = [m.content for m in discord.bot_messages(GENERAL_ID)]
        assert shown.startswith("so far ") and shown.endswith(f"\n\n{SHUTDOWN_NOTE}")
        status, _ = await _stored_reply(database, ChatRef("discord", str(GENERAL_ID)))
        assert status is MessageStatus.INTERRUPTED
        assert_no_traceback(child)


async def test_a_second_signal_ends_the_grace_at_once(tmp_path: Path) -> None:
    database = tmp_path / "p.db"
    async with FakeTelegramAPI() as tg, FakeLLMServer() as llm:
        llm.enqueue(Script(pieces=["so far ", *[f"w{i} " for i in range(100)]], delay=0.2))
        env = {**telegram_env(tg, llm, database), "SHUTDOWN_GRACE_SECONDS": "60"}
        async with parley_run(env) as child:
            await child.wait_line("Telegram: running as")
            chat = tg.private_chat(ALICE)
            request = await tg.message(chat, ALICE, "talk a lot")
            await tg.wait_until(lambda: replies_to(chat, request["message_id"]), WAIT)
            child.process.send_signal(signal.SIGTERM)
            await child.wait_line("Telegram: stopping; 1 reply(ies) in flight get up to 60 s")
            again_at = time.monotonic()
            assert await child.stop(signal.SIGINT) == 0
            took = time.monotonic() - again_at
        (shown,) = replies_to(chat, request["message_id"])
        assert shown is not None and shown.endswith(f"\n\n{SHUTDOWN_NOTE}")
        status, _ = await _stored_reply(database, ChatRef("telegram", str(chat.id)))
        assert status is MessageStatus.INTERRUPTED
        assert took < 10, took  # not the 60 s grace
        assert_no_traceback(child)
