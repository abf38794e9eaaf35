"""Streaming through the AsyncClient: chunk shapes, the final chunk, and closing the stream.

A reply that is abandoned (the consumer breaks out, closes it, or is cancelled) must free its
HTTP stream; the fake server counts open completion requests, and a stalled script keeps one
open until the client really leaves.
"""

from __future__ import annotations

import asyncio

import pytest

from core import AsyncClient, errors
from core.providers import OpenAICompatible
from tests.core_support import PROMPT, ScriptedProvider, collect, contents
from tests.fakes.llm_server import FakeLLMServer, Script

SERVER_USAGE = {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}


@pytest.fixture
def client(server: FakeLLMServer) -> AsyncClient:
    return AsyncClient(OpenAICompatible("Fake", server.base_url, max_retries=0))


async def test_n_pieces_give_n_plus_one_chunks_ending_with_finish_and_usage(server, client) -> None:
    pieces = ["The", " quick", " brown", " fox"]
    server.enqueue(Script(pieces=pieces, usage=SERVER_USAGE))
    chunks = await collect(client.chat.completions.create("hi", model="fake-model", stream=True))
    assert len(chunks) == len(pieces) + 1
    assert contents(chunks) == [*pieces, None]
    for chunk in chunks:
        assert chunk.object == "chat.completion.chunk"
        assert chunk.id.startswith("chatcmpl-")
        assert chunk.model == "fake-model"
        assert chunk.provider == "Fake"
    assert len({chunk.id for chunk in chunks}) == 1
    assert [c.choices[0].finish_reason for c in chunks[:-1]] == [None] * len(pieces)
    assert all(c.usage is None for c in chunks[:-1])
    final = chunks[-1]
    assert final.choices[0].finish_reason == "stop"
    assert final.usage.model_dump() == SERVER_USAGE
    assert final.model_dump()["choices"][0]["delta"]["content"] is None
    body = server.requests[0].json
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


async def test_max_tokens_limit_finishes_a_stream_with_length(server, client) -> None:
    server.enqueue(Script(pieces=["a", "b", "c", "d"]))
    chunks = await collect(client.chat.completions.create("hi", stream=True, max_tokens=2))
    assert contents(chunks) == ["a", "b", None]
    assert chunks[-1].choices[0].finish_reason == "length"


async def test_awaiting_the_stream_gives_the_same_iterator(server, client) -> None:
    server.enqueue(Script(pieces=["x", "y"]))
    stream = client.chat.completions.create("hi", stream=True)
    awaited = await stream
    assert awaited is stream
    assert contents(await collect(awaited)) == ["x", "y", None]


async def test_the_stream_is_usable_with_async_for_directly(server, client) -> None:
    server.enqueue(Script(pieces=["x", "y"]))
    seen = [
        c.choices[0].delta.content async for c in client.chat.completions.create("hi", stream=True)
    ]
    assert seen == ["x", "y", None]


async def test_none_and_empty_pieces_are_skipped() -> None:
    provider = ScriptedProvider(["a", None, "", "b", ""])
    chunks = await collect(AsyncClient(provider).chat.completions.create("hi", stream=True))
    assert contents(chunks) == ["a", "b", None]
    completion = await AsyncClient(provider).chat.completions.create("hi")
    assert completion.choices[0].message.content == "ab"


async def test_usage_is_estimated_when_the_provider_reports_none() -> None:
    provider = ScriptedProvider(["twelve chars"])
    chunks = await collect(AsyncClient(provider).chat.completions.create("hi", stream=True))
    usage = chunks[-1].usage
    assert usage.completion_tokens > 0 and usage.prompt_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.estimated and usage.model_dump()["estimated"] is True


# -- closing -----------------------------------------------------------------------------------


def stalled_script() -> Script:
    """Two pieces, then nothing until the client goes away."""
    return Script(pieces=["first", " second", " never"], stall_after=2)


async def test_breaking_out_of_a_stream_closes_the_http_stream(server, client) -> None:
    server.enqueue(stalled_script())
    async for chunk in client.chat.completions.create("hi", stream=True):
        assert chunk.choices[0].delta.content == "first"
        assert server.active_streams == 1
        break
    await server.wait_until_no_active_streams(PROMPT)


async def test_aclose_closes_the_http_stream(server, client) -> None:
    server.enqueue(stalled_script())
    stream = client.chat.completions.create("hi", stream=True)
    first = await anext(stream)
    assert first.choices[0].delta.content == "first"
    assert server.active_streams == 1
    await stream.aclose()
    await server.wait_until_no_active_streams(PROMPT)


async def test_cancelling_the_consuming_task_closes_the_http_stream(server, client) -> None:
    server.enqueue(stalled_script())
    got_text = asyncio.Event()
    seen: list[str | None] = []

    async def consume() -> None:
        async for chunk in client.chat.completions.create("hi", stream=True):
            seen.append(chunk.choices[0].delta.content)
            if len(seen) == 2:
                got_text.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(got_text.wait(), PROMPT)
    assert server.active_streams == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await server.wait_until_no_active_streams(PROMPT)
    assert seen == ["first", " second"]


async def test_closing_the_stream_closes_the_providers_generator() -> None:
    provider = ScriptedProvider(["a", "b", "c"])
    stream = AsyncClient(provider).chat.completions.create("hi", stream=True)
    await anext(stream)
    await stream.aclose()
    assert provider.closed == 1


# -- streaming support -------------------------------------------------------------------------


async def test_streaming_from_a_provider_that_cannot_stream_is_refused() -> None:
    provider = ScriptedProvider(["whole"], supports_stream=False)
    with pytest.raises(errors.StreamNotSupportedError) as caught:
        AsyncClient(provider).chat.completions.create("hi", stream=True)
    assert "ignore_stream" in str(caught.value)
    assert provider.calls == []


async def test_ignore_stream_delivers_the_whole_text_as_one_chunk() -> None:
    provider = ScriptedProvider(["the whole", " answer"], supports_stream=False)
    stream = AsyncClient(provider).chat.completions.create("hi", stream=True, ignore_stream=True)
    chunks = await collect(stream)
    assert contents(chunks) == ["the whole answer", None]
    assert chunks[-1].choices[0].finish_reason == "stop" and chunks[-1].usage is not None
    (_, _, kwargs) = provider.calls[0]
    assert kwargs["stream"] is False


async def test_a_provider_that_cannot_stream_still_answers_without_streaming() -> None:
    provider = ScriptedProvider(["whole"], supports_stream=False)
    completion = await AsyncClient(provider).chat.completions.create("hi")
    assert completion.choices[0].message.content == "whole"
