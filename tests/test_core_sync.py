"""The sync `Client` and the legacy `ChatCompletion` API, in plain code and inside a running loop.

The sync calls block the calling thread, so the fake server runs on its own loop thread
(`ThreadedServer`); the async legacy calls use the server on the test's own loop.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Iterator

import pytest

from core import AsyncClient, ChatCompletion, Client, errors, models
from core.providers import OpenAICompatible
from core.types import ChatCompletion as ChatCompletionObject
from tests.core_support import SECRET, ThreadedServer, contents
from tests.fakes.llm_server import FakeLLMServer, Script


@pytest.fixture
def threaded() -> Iterator[tuple[ThreadedServer, FakeLLMServer]]:
    runner = ThreadedServer()
    with runner as server:
        yield runner, server


def provider_for(server: FakeLLMServer) -> OpenAICompatible:
    return OpenAICompatible("Fake", server.base_url, api_key=SECRET, max_retries=0)


def check_sync_client(server: FakeLLMServer) -> None:
    client = Client(provider_for(server))
    completion = client.chat.completions.create("whole", model="m")
    assert isinstance(completion, ChatCompletionObject)
    assert completion.choices[0].message.content == "echo: whole"
    server.enqueue(Script(pieces=["a", "b", "c"]))
    chunks = list(client.chat.completions.create("parts", model="m", stream=True))
    assert contents(chunks) == ["a", "b", "c", None]
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert [r.json.get("stream", False) for r in server.requests] == [False, True]


def test_sync_client_in_plain_code(threaded) -> None:
    _, server = threaded
    check_sync_client(server)


async def test_sync_client_inside_a_running_event_loop(threaded) -> None:
    _, server = threaded
    asyncio.get_running_loop()  # the call below happens with this loop running
    check_sync_client(server)


async def test_sync_stream_closed_early_closes_the_http_stream(threaded) -> None:
    runner, server = threaded
    server.enqueue(Script(pieces=["first", " second", " never"], stall_after=2))
    stream = Client(provider_for(server)).chat.completions.create("hi", stream=True)
    assert next(stream).choices[0].delta.content == "first"
    assert server.active_streams == 1
    stream.close()
    runner.wait_until_no_active_streams()


def test_sync_client_raises_typed_errors(threaded) -> None:
    _, server = threaded
    server.enqueue(Script(status=401, error_message=f"bad key {SECRET}"))
    with pytest.raises(errors.MissingAuthError) as caught:
        Client(provider_for(server)).chat.completions.create("hi")
    assert SECRET not in str(caught.value)
    server.enqueue(Script(pieces=["a", "b"], cut_after=1))
    stream = Client(provider_for(server)).chat.completions.create("hi", stream=True)
    assert next(stream).choices[0].delta.content == "a"
    with pytest.raises(errors.ProviderConnectionError):
        next(stream)


def test_sync_client_applies_stop_strings(threaded) -> None:
    _, server = threaded
    server.enqueue(Script(pieces=["Hel", "lo ST", "OP world"]))
    chunks = list(
        Client(provider_for(server)).chat.completions.create("hi", stream=True, stop="STOP")
    )
    assert "".join(c for c in contents(chunks) if c) == "Hello "


# -- legacy ChatCompletion.create --------------------------------------------------------------


def check_legacy_create(server: FakeLLMServer) -> None:
    provider = provider_for(server)
    text = ChatCompletion.create("m", [{"role": "user", "content": "legacy"}], provider=provider)
    assert text == "echo: legacy"
    server.enqueue(Script(pieces=["x", "", "y"]))
    pieces = ChatCompletion.create("m", "stream me", provider=provider, stream=True)
    assert not isinstance(pieces, str)
    assert list(pieces) == ["x", "y"]


def test_legacy_create_returns_str_or_an_iterator_of_str(threaded) -> None:
    _, server = threaded
    check_legacy_create(server)


async def test_legacy_create_inside_a_running_event_loop(threaded) -> None:
    _, server = threaded
    check_legacy_create(server)


def test_legacy_create_with_the_default_provider_and_model(threaded, monkeypatch) -> None:
    _, server = threaded
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("DEFAULT_MODEL", "configured-model")
    text = ChatCompletion.create(models.default, [{"role": "user", "content": "hi"}])
    assert text == "echo: hi"
    assert server.requests[0].json["model"] == "configured-model"


# -- legacy ChatCompletion.create_async --------------------------------------------------------


async def test_legacy_create_async_is_an_awaitable_str(server) -> None:
    result = ChatCompletion.create_async("m", "async legacy", provider=provider_for(server))
    assert inspect.isawaitable(result)
    assert await result == "echo: async legacy"


async def test_legacy_create_async_streams_an_async_iterator_of_str(server) -> None:
    server.enqueue(Script(pieces=["p", "", "q", "r"]))
    result = ChatCompletion.create_async("m", "s", provider=provider_for(server), stream=True)
    assert hasattr(result, "__aiter__")
    assert [piece async for piece in result] == ["p", "q", "r"]


async def test_legacy_create_async_passes_options_through(server) -> None:
    server.enqueue(Script(pieces=["keep", " STOP", " drop"]))
    text = await ChatCompletion.create_async(
        "m", "s", provider=provider_for(server), stop="STOP", max_tokens=10
    )
    assert text == "keep "
    assert server.requests[0].json["max_tokens"] == 10


async def test_async_and_sync_clients_agree(threaded, server) -> None:
    _, sync_server = threaded
    sync_text = Client(provider_for(sync_server)).chat.completions.create("same")
    async_text = await AsyncClient(provider_for(server)).chat.completions.create("same")
    assert sync_text.choices[0].message.content == async_text.choices[0].message.content
