"""The Anthropic Messages API provider against the fake server's /anthropic/v1 endpoint."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator

import pytest

from core import AsyncClient, errors
from core.providers import Anthropic
from tests.core_support import SECRET, collect, collect_until_error, contents
from tests.fakes.llm_server import FakeLLMServer, Script

MESSAGES = [
    {"role": "system", "content": "Be terse."},
    {"role": "user", "content": "hello there"},
    {"role": "assistant", "content": "hi"},
    {"role": "user", "content": "how are you"},
]


@pytest.fixture
async def server() -> AsyncIterator[FakeLLMServer]:
    async with FakeLLMServer(require_key=SECRET) as fake:
        yield fake


@pytest.fixture
def client(server: FakeLLMServer) -> AsyncClient:
    provider = Anthropic(SECRET, base_url=server.anthropic_base_url, max_retries=0)
    return AsyncClient(provider)


async def test_stream_yields_text_usage_and_stop(server, client) -> None:
    server.enqueue(Script(pieces=["Fine", ", thanks"]))
    chunks = await collect(
        client.chat.completions.create(MESSAGES, model="claude-fake", stream=True)
    )
    assert contents(chunks) == ["Fine", ", thanks", None]
    final = chunks[-1]
    assert final.choices[0].finish_reason == "stop"
    assert final.provider == "Anthropic"
    # The server counts words of the prompt, system included: 2 + 2 + 1 + 3.
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (8, 2)
    assert final.usage.total_tokens == 10
    request = server.requests[0]
    assert request.path == "/anthropic/v1/messages"
    assert request.headers["x-api-key"] == SECRET
    assert request.headers["anthropic-version"]
    assert request.json["stream"] is True


async def test_the_system_prompt_moves_to_system(server, client) -> None:
    before = copy.deepcopy(MESSAGES)
    await client.chat.completions.create(MESSAGES, model="claude-fake")
    body = server.requests[0].json
    assert body["system"] == "Be terse."
    assert body["messages"] == MESSAGES[1:]
    assert all(m["role"] != "system" for m in body["messages"])
    assert body["max_tokens"] > 0
    assert before == MESSAGES


async def test_non_stream_answer_with_usage(server, client) -> None:
    server.enqueue(
        Script(pieces=["Whole", " answer"], usage={"input_tokens": 5, "output_tokens": 7})
    )
    completion = await client.chat.completions.create("q", model="claude-fake")
    assert completion.choices[0].message.content == "Whole answer"
    assert completion.choices[0].finish_reason == "stop"
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (5, 7)
    assert server.requests[0].json["stream"] is False
    assert "system" not in server.requests[0].json


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
async def test_max_tokens_stop_reason_becomes_length(server, client, stream) -> None:
    server.enqueue(Script(pieces=["a", "b", "c"]))
    create = client.chat.completions.create
    if stream:
        chunks = await collect(create("q", model="claude-fake", max_tokens=2, stream=True))
        assert contents(chunks) == ["a", "b", None]
        finish = chunks[-1].choices[0].finish_reason
    else:
        completion = await create("q", model="claude-fake", max_tokens=2)
        assert completion.choices[0].message.content == "ab"
        finish = completion.choices[0].finish_reason
    assert finish == "length"
    assert server.requests[0].json["max_tokens"] == 2


async def test_stop_strings_are_sent_as_stop_sequences_and_enforced(server, client) -> None:
    server.enqueue(Script(pieces=["keep ", "END", " drop"]))
    completion = await client.chat.completions.create("q", model="claude-fake", stop=["END"])
    assert completion.choices[0].message.content == "keep "
    assert server.requests[0].json["stop_sequences"] == ["END"]


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (401, errors.MissingAuthError),
        (429, errors.RateLimitError),
        (400, errors.ResponseStatusError),
        (529, errors.ResponseStatusError),
    ],
)
async def test_error_statuses_are_typed_and_key_free(server, client, status, expected) -> None:
    server.enqueue(Script(status=status, error_message=f"refused key {SECRET}"))
    with pytest.raises(errors.ParleyError) as caught:
        await collect(client.chat.completions.create("q", model="claude-fake", stream=True))
    assert isinstance(caught.value, expected)
    assert SECRET not in str(caught.value)
    assert "ANTHROPIC_API_KEY" in str(caught.value) or status != 401
    assert len(server.requests) == 1


async def test_a_wrong_key_is_an_auth_error(server) -> None:
    wrong = Anthropic("sk-wrong-key", base_url=server.anthropic_base_url, max_retries=0)
    with pytest.raises(errors.MissingAuthError) as caught:
        await AsyncClient(wrong).chat.completions.create("q", model="claude-fake")
    assert "sk-wrong-key" not in str(caught.value)


async def test_an_unknown_model_is_a_model_error() -> None:
    async with FakeLLMServer(models={"claude-real"}) as server:
        provider = Anthropic(SECRET, base_url=server.anthropic_base_url, max_retries=0)
        with pytest.raises(errors.ModelNotFoundError) as caught:
            await AsyncClient(provider).chat.completions.create("q", model="claude-missing")
    assert "claude-missing" in str(caught.value)


async def test_no_key_means_not_working_and_a_clear_error(server) -> None:
    provider = Anthropic(None, base_url=server.anthropic_base_url)
    assert provider.working is False
    with pytest.raises(errors.ProviderNotWorkingError):
        AsyncClient(provider).chat.completions.create("q")
    with pytest.raises(errors.MissingAuthError) as caught:
        await AsyncClient(provider).chat.completions.create("q", ignore_working=True)
    assert "ANTHROPIC_API_KEY" in str(caught.value)
    assert server.requests == []


async def test_a_cut_stream_raises_after_the_delivered_text(server, client) -> None:
    server.enqueue(Script(pieces=["one", " two", " three"], cut_after=2))
    stream = client.chat.completions.create("q", model="claude-fake", stream=True)
    chunks, raised = await collect_until_error(stream)
    assert contents(chunks) == ["one", " two"]
    assert isinstance(raised, errors.ProviderConnectionError)


async def test_malformed_stream_json_is_a_typed_error(server, client) -> None:
    server.enqueue(Script(pieces=["one", " two"], malformed_after=1))
    stream = client.chat.completions.create("q", model="claude-fake", stream=True)
    chunks, raised = await collect_until_error(stream)
    assert contents(chunks) == ["one"]
    assert isinstance(raised, errors.ResponseStatusError)


@pytest.mark.parametrize(
    "event",
    [
        b'event: message_start\ndata: {"type": "message_start"}\n\n',
        b'event: message_start\ndata: {"type": "message_start", "message": {"usage": 3}}\n\n',
        b'event: content_block_delta\ndata: {"type": "content_block_delta", "delta": "x"}\n\n',
        b"data: [1, 2]\n\n",
    ],
    ids=["start-without-message", "usage-number", "delta-string", "not-an-object"],
)
async def test_well_formed_json_of_the_wrong_shape_is_a_typed_error(server, client, event) -> None:
    server.enqueue(
        Script(raw_sse=event + b'event: message_stop\ndata: {"type": "message_stop"}\n\n')
    )
    stream = client.chat.completions.create("q", model="claude-fake", stream=True)
    _, raised = await collect_until_error(stream)
    assert isinstance(raised, errors.ResponseStatusError), repr(raised)


async def test_an_error_event_inside_the_stream_is_typed_and_key_free(server, client) -> None:
    raw = (
        b'event: error\ndata: {"type": "error", "error": {"type": "overloaded_error", '
        b'"message": "Overloaded for key ' + SECRET.encode() + b'"}}\n\n'
    )
    server.enqueue(Script(raw_sse=raw))
    stream = client.chat.completions.create("q", model="claude-fake", stream=True)
    _, raised = await collect_until_error(stream)
    assert isinstance(raised, errors.ResponseStatusError)
    assert "Overloaded" in str(raised)
    assert SECRET not in str(raised)


@pytest.mark.parametrize(
    "body",
    [
        b"[]",
        b'{"content": "text"}',
        b'{"content": [{"type": "text", "text": "x"}], "usage": 5}',
        b'{"content": [], "usage": {"input_tokens": "many"}}',
        b'{"content": [], "stop_reason": ["max_tokens"]}',
    ],
    ids=["list", "content-string", "usage-number", "usage-text", "stop-reason-list"],
)
async def test_a_whole_answer_of_the_wrong_shape_is_a_typed_error(server, client, body) -> None:
    server.enqueue(Script(raw_sse=body))
    with pytest.raises(errors.ParleyError) as caught:
        await client.chat.completions.create("q", model="claude-fake")
    assert isinstance(caught.value, errors.ResponseStatusError), repr(caught.value)
