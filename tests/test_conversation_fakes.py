"""Scripted model provider and helpers shared by the storage, conversation and console tests.

Holds no tests. Child processes of the crash and restart tests import it too, so it has no
pytest dependencies.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from core.conversation import Author, ChatRef

#: How long a test waits for something the code under test should do at once.
WAIT = 10.0

Responder = Callable[[str, list[dict[str, Any]]], AsyncIterator[str]]


async def echo(model: str, messages: list[dict[str, Any]]) -> AsyncIterator[str]:
    """Answer "echo: <last message>" in two pieces, so streaming has more than one delta."""
    yield "echo: "
    yield messages[-1]["content"]


@dataclass
class Call:
    model: str
    messages: list[dict[str, Any]]


class ScriptedProvider:
    """A provider in the core's sense whose answers come from `responder` (default: echo)."""

    working = True
    supports_stream = True
    name = "Scripted"

    def __init__(self, responder: Responder = echo) -> None:
        self.responder = responder
        self.calls: list[Call] = []
        self._changed = asyncio.Condition()

    async def create_async_generator(
        self, model: str, messages: list[dict[str, Any]], **kwargs: Any
    ) -> AsyncIterator[str]:
        self.calls.append(Call(model, messages))
        async with self._changed:
            self._changed.notify_all()
        async for piece in self.responder(model, messages):
            yield piece

    async def wait_calls(self, count: int) -> list[Call]:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: len(self.calls) >= count), WAIT)
        return self.calls


class Gate:
    """A responder that streams `first`, then holds until released (or forever)."""

    def __init__(self, first: str = "partial ", rest: str = "answer") -> None:
        self.first = first
        self.rest = rest
        self.sent_first = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self, model: str, messages: list[dict[str, Any]]) -> AsyncIterator[str]:
        yield self.first
        self.sent_first.set()
        await self.release.wait()
        yield self.rest


def chat(chat_id: str = "1", platform: str = "telegram", thread_id: str = "") -> ChatRef:
    return ChatRef(platform, chat_id, thread_id)


ALICE = Author("100", "Alice")
BOB = Author("200", "Bob")


async def collect(reply: AsyncIterator[str]) -> str:
    return "".join([delta async for delta in reply])
