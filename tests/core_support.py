"""Helpers shared by the core's contract suites (tests/test_core_*.py).

`ScriptedProvider` stands in for a provider where the rule under test is the client's or the
fallback's, not the wire's. `ThreadedServer` runs the fake LLM server on its own loop thread,
for the sync APIs, which block the thread that calls them.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import AsyncIterator, Iterable
from typing import Any

from core.providers.base import StreamItem
from tests.fakes.llm_server import FakeLLMServer

#: Upper bound for anything that should finish at once on a slow shared machine.
PROMPT = 5.0
SECRET = "sk-secret-123"


class ScriptedProvider:
    """A provider that yields `items` in order; an exception instance among them is raised there.

    `working`, `supports_stream` and `name` are plain attributes, as the provider protocol asks.
    Every call is recorded (model, messages, kwargs) so tests can see what the client passed.
    """

    def __init__(
        self,
        items: Iterable[StreamItem | BaseException] = (),
        *,
        name: str = "Scripted",
        working: bool = True,
        supports_stream: bool = True,
    ) -> None:
        self.items = list(items)
        self.name = name
        self.working = working
        self.supports_stream = supports_stream
        self.calls: list[tuple[str, list[dict[str, Any]], dict[str, Any]]] = []
        self.closed = 0

    async def create_async_generator(
        self, model: str, messages: list[dict[str, Any]], **kwargs: Any
    ) -> AsyncIterator[StreamItem]:
        self.calls.append((model, messages, kwargs))
        try:
            for item in self.items:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.closed += 1


class FlakyProvider(ScriptedProvider):
    """Fails with `error` on its first `failures` calls, then yields its items."""

    def __init__(self, error: BaseException, failures: int, items: Iterable[str], **kw: Any):
        super().__init__(items, **kw)
        self.error = error
        self.failures = failures

    async def create_async_generator(
        self, model: str, messages: list[dict[str, Any]], **kwargs: Any
    ) -> AsyncIterator[StreamItem]:
        if len(self.calls) < self.failures:
            self.calls.append((model, messages, kwargs))
            raise self.error
        async for item in super().create_async_generator(model, messages, **kwargs):
            yield item


def contents(chunks: list[Any]) -> list[str | None]:
    return [chunk.choices[0].delta.content for chunk in chunks]


async def collect(stream: Any) -> list[Any]:
    return [chunk async for chunk in stream]


async def collect_until_error(stream: Any) -> tuple[list[Any], BaseException | None]:
    """The chunks delivered before the stream failed, and its error (None if it did not)."""
    chunks: list[Any] = []
    try:
        async for chunk in stream:
            chunks.append(chunk)
    except Exception as exc:
        return chunks, exc
    return chunks, None


def closed_port() -> int:
    """A port on 127.0.0.1 nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ThreadedServer:
    """The fake server on a loop in its own thread, for code that blocks the test's thread."""

    def __init__(self, **server_kwargs: Any) -> None:
        self.server = FakeLLMServer(**server_kwargs)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(PROMPT * 2)

    def __enter__(self) -> FakeLLMServer:
        self._thread.start()
        self.call(self.server.start())
        return self.server

    def wait_until_no_active_streams(self) -> None:
        self.call(self.server.wait_until_no_active_streams())

    def __exit__(self, *exc_info: object) -> None:
        self.call(self.server.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(PROMPT)
        self.loop.close()


#: How long a test waits for a log line the code under test should write promptly.
LOG_WAIT = 10.0


class LogLines(logging.Handler):
    """Wakes a test when a record holding some text is logged (the bot logs as its state moves)."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []
        self._changed = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
        self._changed.set()

    async def wait(self, text: str, count: int = 1) -> None:
        async with asyncio.timeout(LOG_WAIT):
            while sum(text in m for m in self.messages) < count:
                self._changed.clear()
                await self._changed.wait()
