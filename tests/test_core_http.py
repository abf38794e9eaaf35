"""The OpenAI-compatible provider's failure modes, over real HTTP to the fake server.

Every failure must arrive as a `core.errors.ParleyError` subclass whose message says what to
fix and never contains the API key, even when the server echoes the key back. Retries happen
only before the first byte, only for 429 and 5xx, and wait at least what `Retry-After` says.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import time

import httpx
import pytest

from core import AsyncClient, errors
from core.providers import OpenAICompatible, http
from core.providers.http import INITIAL_BACKOFF, MAX_RETRY_AFTER, Redactor, transport_error
from tests.core_support import (
    PROMPT,
    SECRET,
    closed_port,
    collect,
    collect_until_error,
    contents,
)
from tests.fakes.llm_server import FakeLLMServer, Script

KEY_ENV = "FAKE_API_KEY"


def make_provider(server: FakeLLMServer, max_retries: int = 0) -> OpenAICompatible:
    return OpenAICompatible(
        "Fake", server.base_url, api_key=SECRET, key_env=KEY_ENV, max_retries=max_retries
    )


async def call(provider, stream: bool, **kwargs) -> str:
    """The answer's text, streamed or not; errors propagate."""
    completions = AsyncClient(provider).chat.completions
    if stream:
        chunks = await collect(completions.create("hi", stream=True, **kwargs))
        return "".join(c for c in contents(chunks) if c)
    completion = await completions.create("hi", **kwargs)
    return completion.choices[0].message.content


def assert_typed_and_key_free(exc: BaseException, expected: type[BaseException]) -> str:
    assert isinstance(exc, expected), f"{type(exc).__name__}: {exc}"
    assert isinstance(exc, errors.ParleyError)
    for text in (str(exc), repr(exc), *map(str, exc.args), errors.describe(exc)):
        assert SECRET not in text
    return str(exc)


STREAM = pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])


# -- HTTP error statuses -----------------------------------------------------------------------


@STREAM
@pytest.mark.parametrize(
    ("script", "expected", "hints"),
    [
        (
            Script(status=400, error_message=f"Bad 'temperature' from {SECRET}"),
            errors.ResponseStatusError,
            ["400", "Bad 'temperature'"],
        ),
        (
            Script(status=401, error_message=f"Incorrect API key provided: {SECRET}"),
            errors.MissingAuthError,
            ["401", KEY_ENV, "API key"],
        ),
        (
            Script(status=403, error_message=f"Key {SECRET} may not use this"),
            errors.MissingAuthError,
            ["403", KEY_ENV],
        ),
        (
            Script(
                status=404,
                error_message=f"The model `nope` does not exist (key {SECRET})",
                error_code="model_not_found",
            ),
            errors.ModelNotFoundError,
            ["nope", "Pick a model"],
        ),
        (
            Script(status=404, error_message=f"No route for {SECRET}"),
            errors.ResponseStatusError,
            ["404", "base URL"],
        ),
        (
            Script(status=429, error_message=f"Rate limit reached for {SECRET}"),
            errors.RateLimitError,
            ["rate limit"],
        ),
        (
            Script(status=500, error_message=f"Internal error, key {SECRET}"),
            errors.ResponseStatusError,
            ["500", "Internal error"],
        ),
        (
            Script(status=503, error_message=f"Overloaded {SECRET}"),
            errors.ResponseStatusError,
            ["503", "Overloaded"],
        ),
    ],
    ids=["400", "401", "403", "404-model", "404-path", "429", "500", "503"],
)
async def test_error_statuses_raise_typed_key_free_errors(
    server, script, expected, hints, stream
) -> None:
    server.enqueue(script)
    with pytest.raises(errors.ParleyError) as caught:
        await call(make_provider(server), stream)
    message = assert_typed_and_key_free(caught.value, expected)
    for hint in hints:
        assert hint.lower() in message.lower()
    assert server.requests[0].headers["authorization"] == f"Bearer {SECRET}"
    assert len(server.requests) == 1
    if isinstance(caught.value, errors.ResponseStatusError) and expected is not (
        errors.ModelNotFoundError
    ):
        assert caught.value.status_code == script.status


async def test_a_real_model_not_found_answer_is_a_model_error() -> None:
    async with FakeLLMServer(models={"served-model"}) as server:
        with pytest.raises(errors.ModelNotFoundError) as caught:
            await call(make_provider(server), True, model="missing-model")
    assert "missing-model" in str(caught.value)


async def test_a_real_wrong_key_answer_is_an_auth_error() -> None:
    async with FakeLLMServer(require_key="sk-the-right-one") as server:
        with pytest.raises(errors.MissingAuthError) as caught:
            await call(make_provider(server), True)
    assert_typed_and_key_free(caught.value, errors.MissingAuthError)


async def test_a_provider_that_needs_a_key_and_has_none_says_which_to_set(server) -> None:
    provider = OpenAICompatible("Keyed", server.base_url, needs_auth=True, key_env=KEY_ENV)
    assert provider.working is False
    with pytest.raises(errors.MissingAuthError) as caught:
        await call(provider, True, ignore_working=True)
    assert KEY_ENV in str(caught.value)
    assert server.requests == []


# -- retries -----------------------------------------------------------------------------------


@STREAM
@pytest.mark.parametrize("status", [429, 503])
async def test_429_and_5xx_are_retried_after_retry_after(
    server, caplog, monkeypatch, status, stream
) -> None:
    # With no backoff of its own, any wait the client makes is the server's Retry-After.
    monkeypatch.setattr(http, "INITIAL_BACKOFF", 0.0)
    caplog.set_level(logging.DEBUG)
    wait = 0.2
    server.enqueue(
        Script(status=status, error_message=f"wait {SECRET}", headers={"Retry-After": str(wait)}),
        Script(pieces=["after", " retry"]),
    )
    started = time.monotonic()
    text = await call(make_provider(server, max_retries=2), stream)
    elapsed = time.monotonic() - started
    assert text == "after retry"
    assert len(server.requests) == 2
    assert elapsed >= wait
    assert SECRET not in caplog.text


async def test_a_5xx_without_retry_after_is_retried_with_backoff(server) -> None:
    server.enqueue(Script(status=502), Script(pieces=["ok"]))
    started = time.monotonic()
    assert await call(make_provider(server, max_retries=1), True) == "ok"
    assert time.monotonic() - started >= INITIAL_BACKOFF * 0.75  # the least jittered backoff
    assert len(server.requests) == 2


async def test_retries_stop_after_max_retries(server) -> None:
    rate_limited = Script(status=429, headers={"Retry-After": "0.01"})
    server.enqueue(rate_limited, rate_limited, rate_limited, Script(pieces=["too late"]))
    with pytest.raises(errors.RateLimitError) as caught:
        await call(make_provider(server, max_retries=2), True)
    assert caught.value.retry_after == pytest.approx(0.01)
    assert len(server.requests) == 3


async def test_a_retry_after_beyond_the_cap_raises_at_once(server) -> None:
    too_long = MAX_RETRY_AFTER * 4
    server.enqueue(Script(status=429, headers={"Retry-After": f"{too_long:g}"}), Script())
    with pytest.raises(errors.RateLimitError) as caught:
        await asyncio.wait_for(call(make_provider(server, max_retries=3), True), PROMPT)
    assert caught.value.retry_after == too_long
    assert f"{too_long:g}" in str(caught.value)
    assert len(server.requests) == 1


@pytest.mark.parametrize("status", [400, 401, 404])
async def test_client_errors_are_not_retried(server, status) -> None:
    server.enqueue(Script(status=status), Script())
    with pytest.raises(errors.ParleyError):
        await call(make_provider(server, max_retries=3), True)
    assert len(server.requests) == 1


async def test_a_stream_cut_after_its_first_byte_is_not_retried(server) -> None:
    server.enqueue(Script(pieces=["a", "b", "c"], cut_after=1), Script(pieces=["again"]))
    stream = AsyncClient(make_provider(server, max_retries=3)).chat.completions.create(
        "hi", stream=True
    )
    chunks, raised = await collect_until_error(stream)
    assert contents(chunks) == ["a"]
    assert_typed_and_key_free(raised, errors.ProviderConnectionError)
    assert len(server.requests) == 1


# -- broken streams ----------------------------------------------------------------------------


async def test_a_stalled_stream_ends_with_a_timeout_after_the_delivered_chunks(server) -> None:
    server.enqueue(Script(pieces=["one", " two", " three"], stall_after=2))
    stream = AsyncClient(make_provider(server)).chat.completions.create(
        "hi", stream=True, timeout=0.3
    )
    chunks, raised = await asyncio.wait_for(collect_until_error(stream), PROMPT)
    assert contents(chunks) == ["one", " two"]
    assert_typed_and_key_free(raised, errors.TimeoutError)
    assert isinstance(raised, builtins.TimeoutError)
    await server.wait_until_no_active_streams(PROMPT)


async def test_the_clients_timeout_applies_to_a_stalled_whole_answer(server) -> None:
    server.enqueue(Script(stall_after=0))
    client = AsyncClient(make_provider(server), timeout=0.3)
    with pytest.raises(errors.TimeoutError):
        await asyncio.wait_for(client.chat.completions.create("hi"), PROMPT)
    await server.wait_until_no_active_streams(PROMPT)


async def test_a_stream_cut_midway_raises_after_the_delivered_chunks(server) -> None:
    server.enqueue(Script(pieces=["a", "b", "c", "d"], cut_after=2))
    stream = AsyncClient(make_provider(server)).chat.completions.create("hi", stream=True)
    chunks, raised = await collect_until_error(stream)
    assert contents(chunks) == ["a", "b"]
    assert_typed_and_key_free(raised, errors.ProviderConnectionError)


async def test_a_whole_answer_cut_off_raises_a_typed_error(server) -> None:
    server.enqueue(Script(cut_after=0))
    with pytest.raises(errors.ParleyError) as caught:
        await call(make_provider(server), False)
    assert_typed_and_key_free(caught.value, errors.ProviderConnectionError)


async def test_a_stream_ending_without_done_or_finish_raises(server) -> None:
    server.enqueue(Script(raw_sse=b'data: {"choices":[{"delta":{"content":"half"}}]}\n\n'))
    stream = AsyncClient(make_provider(server)).chat.completions.create("hi", stream=True)
    chunks, raised = await collect_until_error(stream)
    assert contents(chunks) == ["half"]
    assert_typed_and_key_free(raised, errors.ProviderConnectionError)


@STREAM
async def test_malformed_json_raises_a_typed_error(server, stream) -> None:
    server.enqueue(Script(pieces=["ok", "never"], malformed_after=1))
    with pytest.raises(errors.ParleyError) as caught:
        await call(make_provider(server), stream)
    assert_typed_and_key_free(caught.value, errors.ResponseStatusError)


@pytest.mark.parametrize(
    "event",
    [
        b'{"choices": {"first": 1}}',
        b'{"choices": [{"delta": "text"}]}',
        b'{"choices": ["text"]}',
        b'{"choices": [{"delta": {"content": "x"}}], "usage": 5}',
        b'{"choices": [{"delta": {"content": "x"}}], "usage": {"prompt_tokens": "many"}}',
    ],
    ids=["choices-object", "delta-string", "choice-string", "usage-number", "usage-text"],
)
async def test_well_formed_json_of_the_wrong_shape_raises_a_typed_error(server, event) -> None:
    server.enqueue(Script(raw_sse=b"data: " + event + b"\n\ndata: [DONE]\n\n"))
    stream = AsyncClient(make_provider(server)).chat.completions.create("hi", stream=True)
    _, raised = await collect_until_error(stream)
    assert_typed_and_key_free(raised, errors.ResponseStatusError)


@pytest.mark.parametrize(
    "body",
    [
        b"[]",
        b'{"choices": []}',
        b'{"choices": [{"message": "x"}]}',
        b'{"choices": [{"message": {"content": "x"}}], "usage": "lots"}',
    ],
    ids=["list", "no-choice", "message-string", "usage-list"],
)
async def test_a_whole_answer_of_the_wrong_shape_raises_a_typed_error(server, body) -> None:
    server.enqueue(Script(raw_sse=body))
    with pytest.raises(errors.ParleyError) as caught:
        await call(make_provider(server), False)
    assert_typed_and_key_free(caught.value, errors.ResponseStatusError)


async def test_an_error_sent_inside_the_stream_is_typed_and_key_free(server) -> None:
    error = b'{"error": {"message": "upstream refused key ' + SECRET.encode() + b'"}}'
    server.enqueue(
        Script(raw_sse=b'data: {"choices":[{"delta":{"content":"a"}}]}\n\ndata: ' + error + b"\n\n")
    )
    stream = AsyncClient(make_provider(server)).chat.completions.create("hi", stream=True)
    chunks, raised = await collect_until_error(stream)
    assert contents(chunks) == ["a"]
    message = assert_typed_and_key_free(raised, errors.ResponseStatusError)
    assert "upstream refused key" in message


# -- connection ------------------------------------------------------------------------------


@STREAM
async def test_an_unreachable_host_raises_a_typed_error(stream) -> None:
    provider = OpenAICompatible(
        "Down", f"http://127.0.0.1:{closed_port()}/v1", api_key=SECRET, max_retries=2
    )
    with pytest.raises(errors.ParleyError) as caught:
        await asyncio.wait_for(call(provider, stream, timeout=PROMPT), PROMPT * 2)
    message = assert_typed_and_key_free(caught.value, errors.ProviderConnectionError)
    assert "127.0.0.1" in message and "Down" in message


async def test_provider_create_async_returns_the_whole_text(server) -> None:
    server.enqueue(Script(pieces=["all", " of", " it"]))
    text = await make_provider(server).create_async(
        "fake-model", [{"role": "user", "content": "x"}]
    )
    assert text == "all of it"


def test_waiting_for_a_free_connection_is_not_blamed_on_the_server() -> None:
    request = httpx.Request("POST", "http://127.0.0.1/v1/chat/completions")
    error = transport_error("Local", httpx.PoolTimeout("pool", request=request), Redactor(None))
    assert isinstance(error, errors.TimeoutError)
    assert "connections stayed busy" in str(error) and "waiting for data" not in str(error)
