"""`parley chat`: talk to the model in the terminal, on the same core and store as the bots.

The chat is platform "console", keyed by the OS user name, so its history survives restarts
like any chat's. Input is read on a daemon thread: a thread blocked in `readline()` can be
neither cancelled nor joined, and a daemon one does not keep the process alive at exit.
Ctrl-C during a reply stops the reply (partial text kept as interrupted); at the prompt it
leaves, like Ctrl-D.

The conversation owns stdout. Logs go to stderr, warnings and worse only, or all of them to a
file (`--log-file`); a failure the session shows in the conversation (a reply's error) is not
repeated on stderr, so the person at the terminal reads it once.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

from rich.console import Console
from rich.markup import escape

from bots.config import Settings
from bots.logs import configure_logging, log_to_file
from core import chat_settings
from core.client import client_for
from core.conversation import Author, ChatRef, ConversationService, Reply, describe_reset
from core.errors import ParleyError, describe
from core.text import LINE_FEED_AND_TAB, without_controls
from storage import MessageStatus, Role, StorageError, StoredMessage, open_store

PLATFORM = "console"
#: The chat id when the OS cannot name the user (some containers).
FALLBACK_USER = "local"
PROMPT = "[bold cyan]you>[/] "
ANSWER = "[bold green]parley>[/] "

HELP = """\
Commands:
  /reset          start a new conversation (the old one is kept)
  /model [NAME]   show or set the model; "/model default" goes back to the default
  /system [TEXT]  show or set the system prompt; "/system default" goes back to the default
  /history        show the current conversation
  /exit           leave (Ctrl-D works too)
Ctrl-C stops a reply that is streaming."""


def _shown(text: str) -> str:
    """`text` from the model, the history or a user, safe to print: no control sequences for
    the terminal to run, but its line breaks and tabs."""
    return without_controls(text, but=LINE_FEED_AND_TAB)


def _user_name() -> str:
    try:
        return getpass.getuser() or FALLBACK_USER
    except (OSError, KeyError):
        return FALLBACK_USER


class _LineReader:
    """Lines of `stream`, read on a daemon thread and handed to the event loop; None at the end."""

    def __init__(self, stream: TextIO, loop: asyncio.AbstractEventLoop) -> None:
        self._lines: asyncio.Queue[str | None] = asyncio.Queue()
        self._loop = loop
        threading.Thread(
            target=self._read, args=(stream,), name="parley-stdin", daemon=True
        ).start()

    def _read(self, stream: TextIO) -> None:
        while True:
            try:
                line: str | None = stream.readline() or None
            except (OSError, ValueError):  # closed or unreadable: treat like end of input
                line = None
            try:
                self._loop.call_soon_threadsafe(self._lines.put_nowait, line)
            except RuntimeError:  # the loop is gone: nobody is listening any more
                return
            if line is None:
                return

    def end(self) -> None:
        """Make the next `get()` report the end of input (Ctrl-C at the prompt)."""
        self._lines.put_nowait(None)

    async def get(self) -> str | None:
        return await self._lines.get()


class ConsoleChat:
    """One terminal session: reads lines, runs commands, streams replies."""

    def __init__(self, service: ConversationService, settings: Settings, console: Console) -> None:
        self._service = service
        self._settings = settings
        self._console = console
        name = _user_name()
        self.chat = ChatRef(PLATFORM, name)
        self._author = Author(name, name)
        self._reply: Reply | None = None
        self._stopping: asyncio.Task[None] | None = None

    def interrupt(self, lines: _LineReader) -> None:
        """Ctrl-C: stop the reply in flight, or leave when there is none."""
        if self._reply is None:
            lines.end()
        elif self._stopping is None:
            self._stopping = asyncio.ensure_future(self._reply.aclose())

    async def run(self, lines: _LineReader, location: str) -> None:
        config = await self._service.chat_config(self.chat)
        self._console.print(
            f"Parley chat as [bold]{escape(self.chat.chat_id)}[/], model "
            f"[bold]{escape(config.model or self._settings.default_model)}[/]. "
            f"History: {escape(location)}. /help for commands, Ctrl-D to leave."
        )
        while True:
            self._console.print(PROMPT, end="")
            line = await lines.get()
            if line is None:
                self._console.print()
                return
            text = line.strip()
            if not text:
                continue
            try:
                if text.startswith("/"):
                    if not await self._command(text):
                        return
                else:
                    await self._ask(text)
            except StorageError as exc:
                self._console.print(f"[red]{escape(str(exc))}[/]")

    async def _ask(self, text: str) -> None:
        self._console.print(ANSWER, end="")
        self._reply = reply = self._service.reply(self.chat, self._author, text)
        try:
            async for delta in reply:
                self._console.print(
                    _shown(delta),
                    end="",
                    markup=False,
                    emoji=False,
                    highlight=False,
                    soft_wrap=True,
                )
            self._console.print()
            if reply.status is MessageStatus.INTERRUPTED:
                self._console.print("[dim](stopped)[/]")
        except ParleyError as exc:
            detail = escape(_shown(str(exc)))
            self._console.print(f"\n[red]{escape(describe(exc))}[/] [dim]({detail})[/]")
        finally:
            self._reply = None
            if self._stopping is not None:
                await self._stopping
                self._stopping = None

    async def _command(self, text: str) -> bool:
        """Run a command; False means leave."""
        name, _, argument = text.partition(" ")
        argument = argument.strip()
        name = name.lower()
        if name in ("/exit", "/quit"):
            return False
        if name == "/help":
            self._console.print(HELP, markup=False, highlight=False)
        elif name == "/reset":
            self._say(describe_reset(await self._service.reset(self.chat)))
        elif name == "/model":
            await self._configure(chat_settings.MODEL, argument)
        elif name == "/system":
            await self._configure(chat_settings.SYSTEM_PROMPT, argument)
        elif name == "/history":
            self._show_history(await self._service.history(self.chat))
        else:
            self._console.print(f"Unknown command {escape(name)}. Type /help.")
        return True

    async def _configure(self, setting: chat_settings.Setting, argument: str) -> None:
        """/model or /system; the terminal's user may change either."""
        answer = await chat_settings.apply(
            setting, self._service, self.chat, argument, self._settings
        )
        self._say(answer.text)

    def _say(self, text: str) -> None:
        """An answer to a command, printed as it is: no markup, no terminal controls."""
        self._console.print(_shown(text), markup=False, emoji=False, highlight=False)

    def _show_history(self, messages: list[StoredMessage]) -> None:
        if not messages:
            self._console.print("[dim]No messages in this conversation yet.[/]")
        for message in messages:
            if message.role is Role.USER:
                who = f"[bold cyan]{escape(_shown(message.author_name or 'you'))}>[/]"
            else:
                who = f"[bold green]{escape(_shown(message.model or 'parley'))}>[/]"
            note = ""
            if message.status is not MessageStatus.COMPLETE:
                reason = f": {message.error}" if message.error else ""
                note = f" [dim]\\[{escape(_shown(message.status.value + reason))}][/]"
            text = escape(_shown(message.text))
            self._console.print(f"{who} {text}{note}", emoji=False, highlight=False)


class _NotShownInTheChat(logging.Filter):
    """Drops records about the console's own chat (the service tags them `chat`): the session
    prints that failure in the conversation itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        chat = getattr(record, "chat", None)
        return getattr(chat, "platform", None) != PLATFORM


def configure_chat_logging(settings: Settings, stderr: Console, log_file: Path | None) -> None:
    """Logs for `parley chat`: every record at LOG_LEVEL to `log_file`, else warnings and
    worse to `stderr` minus what the conversation already shows; never onto stdout.

    Raises OSError when `log_file` cannot be opened for appending."""
    if log_file is not None:
        log_to_file(settings, log_file)
    else:
        handler = configure_logging(settings, stderr, at_least="WARNING")
        handler.addFilter(_NotShownInTheChat())


@contextlib.contextmanager
def _ctrl_c_calls(callback: Callable[[], None]) -> Iterator[None]:
    """Route SIGINT to `callback` on the running loop, restoring the previous handler after."""
    loop = asyncio.get_running_loop()
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    loop.add_signal_handler(signal.SIGINT, callback)
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        signal.signal(signal.SIGINT, previous)


async def run_chat(
    settings: Settings, *, stdin: TextIO | None = None, console: Console | None = None
) -> None:
    """The `parley chat` session; `stdin` and `console` are injectable for tests and scripts."""
    console = console or Console()
    store = await open_store(settings.database_url)
    service = ConversationService(store, client_for(settings), settings)
    try:
        await service.recover(PLATFORM)
        session = ConsoleChat(service, settings, console)
        lines = _LineReader(stdin or sys.stdin, asyncio.get_running_loop())
        with _ctrl_c_calls(lambda: session.interrupt(lines)):
            await session.run(lines, store.location)
    finally:
        await service.aclose()
        await store.close()
