"""g4f's older `ChatCompletion.create` / `create_async`, returning plain strings."""

from __future__ import annotations

from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any

from . import types
from .client import AsyncClient, AsyncStream, Client
from .models import Model


def _text(completion: types.ChatCompletion) -> str:
    # Never None: a `ChatCompletion` is built with the whole answer's text.
    return completion.choices[0].message.content or ""


async def _texts(stream: AsyncStream) -> AsyncIterator[str]:
    async for chunk in stream:
        if chunk.choices[0].delta.content:
            yield chunk.choices[0].delta.content


async def _whole(completion: Coroutine[Any, Any, types.ChatCompletion]) -> str:
    return _text(await completion)


class ChatCompletion:
    """`ChatCompletion.create(model, messages, provider=None, stream=False, **kwargs)`."""

    @staticmethod
    def create(
        model: str | Model, messages: Any, provider: Any = None, stream: bool = False, **kwargs: Any
    ) -> str | Iterator[str]:
        """The answer as a `str`, or, with `stream=True`, an iterator of text pieces."""
        result = Client(provider).chat.completions.create(messages, model, stream=stream, **kwargs)
        if isinstance(result, types.ChatCompletion):  # exactly when `stream` is false
            return _text(result)
        return (c.choices[0].delta.content for c in result if c.choices[0].delta.content)

    @staticmethod
    def create_async(
        model: str | Model, messages: Any, provider: Any = None, stream: bool = False, **kwargs: Any
    ) -> Coroutine[Any, Any, str] | AsyncIterator[str]:
        """An awaitable `str`, or, with `stream=True`, an async iterator of text pieces."""
        result = AsyncClient(provider).chat.completions.create(
            messages, model, stream=stream, **kwargs
        )
        return _texts(result) if isinstance(result, AsyncStream) else _whole(result)
