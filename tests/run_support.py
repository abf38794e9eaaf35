"""`parley run` as a child process against the fakes, its log read line by line as it comes.

For the tests of outages and stops (`test_startup_retries`, `test_network_loss`,
`test_graceful_stop`): what they wait on is the child's log (with the moment each line was read,
for the recovery times they report) and the fakes' state, never a fixed sleep.
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

from core.conversation import ChatRef
from storage import MessageStatus, Role, open_store
from tests.cli_support import start_parley
from tests.fakes.discord_api import BOT_ID, GENERAL_ID, FakeDiscord
from tests.fakes.llm_server import FakeLLMServer
from tests.fakes.telegram_api import FakeChat, FakeTelegramAPI, user

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
    """The environment of a bot against the fakes; its private replies stream by edits, as
    these tests follow a reply's messages while it is written (drafts: `test_telegram_drafts`)."""
    return {
        "STREAM_MODE": "edit",
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


def discord_answers(discord: FakeDiscord, word: str) -> list[str]:
    """The bot's answers in #general to Bob's mention saying `word` (the fake model echoes)."""
    return [
        m.content for m in discord.bot_messages(GENERAL_ID) if m.content == f"echo: [Bob] {word}"
    ]


async def stored_reply(database: Path, chat: ChatRef) -> tuple[MessageStatus, str]:
    """The status and text of the chat's newest message, which must be the bot's reply."""
    store = await open_store(f"sqlite:///{database}")
    try:
        conversation = await store.current_conversation(chat)
        assert conversation is not None
        messages = await store.conversation_messages(conversation)
        assert messages[-1].role is Role.ASSISTANT
        return messages[-1].status, messages[-1].text
    finally:
        await store.close()
