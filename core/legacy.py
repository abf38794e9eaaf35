"""g4f's older `ChatCompletion.create` / `create_async`, returning plain strings."""

from __future__ import annotations

from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any

from .client import AsyncClient, Client
from .models import Model


async def _texts(stream: Any) -> AsyncIterator[str]:
    async for chunk in stream:
        if chunk.choices[0].delta.content:
            yield chunk.choices[0].delta.content


async def _whole(completion: Coroutine[Any, Any, Any]) -> str:
    return (await completion).choices[0].message.content


class ChatCompletion:
    """`ChatCompletion.create(model, messages, provider=None, stream=False, **kwargs)`."""

    @staticmethod
    def create(
        model: str | Model, messages: Any, provider: Any = None, stream: bool = False, **kwargs: Any
    ) -> str | Iterator[str]:
        """The answer as a `str`, or, with `stream=True`, an iterator of text pieces."""
        result = Client(provider).chat.completions.create(messages, model, stream=stream, **kwargs)
        if stream:
            return (c.choices[0].delta.content for c in result if c.choices[0].delta.content)
        return result.choices[0].message.content

    @staticmethod
    def create_async(
        model: str | Model, messages: Any, provider: Any = None, stream: bool = False, **kwargs: Any
    ) -> Coroutine[Any, Any, str] | AsyncIterator[str]:
        """An awaitable `str`, or, with `stream=True`, an async iterator of text pieces."""
        result = AsyncClient(provider).chat.completions.create(
            messages, model, stream=stream, **kwargs
        )
        return _texts(result) if stream else _whole(result)
