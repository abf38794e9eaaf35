"""Tool calling through `chat.completions.create`, over real HTTP against the fake server's
OpenAI and Anthropic wires: tools and response_format go out in each wire's shape, tool calls
split across many chunks come back in OpenAI's chunk shape and gather into message.tool_calls."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from core import AsyncClient, ChatCompletion, Client, errors
from core.client import gather_tool_calls
from core.providers import Anthropic, OpenAICompatible
from core.providers.fallback import IterListProvider
from tests.core_support import SECRET, ThreadedServer, collect
from tests.fakes.llm_server import FakeLLMServer, Script, ToolCall

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
TIME = {"type": "function", "function": {"name": "get_time"}}
#: One call's arguments, split as a real server splits them: mid-key, mid-string.
PARIS = ['{"ci', 'ty": ', '"Pa', "ris", '"}']
ROME = ['{"city"', ': "Rome"', "}"]
SCHEMA_FORMAT = {
    "type": "json_schema",
    "json_schema": {
        "name": "answer",
        "schema": {"type": "object", "properties": {"n": {"type": "integer"}}},
    },
}
WIRES = ["openai", "anthropic"]


@pytest.fixture
async def server() -> AsyncIterator[FakeLLMServer]:
    async with FakeLLMServer(require_key=SECRET) as fake:
        yield fake


def provider_for(server: FakeLLMServer, wire: str) -> Any:
    if wire == "openai":
        return OpenAICompatible("Fake", server.base_url, SECRET, max_retries=0)
    return Anthropic(SECRET, base_url=server.anthropic_base_url, max_retries=0)


def calls_of(chunks: list[Any]) -> list[dict[str, Any]]:
    return [
        call.model_dump() for chunk in chunks for call in chunk.choices[0].delta.tool_calls or ()
    ]


def gathered(completion: ChatCompletion) -> list[tuple[str, str, dict[str, Any]]]:
    calls = completion.choices[0].message.tool_calls or []
    assert all(call.type == "function" for call in calls)
    return [(call.id, call.function.name, json.loads(call.function.arguments)) for call in calls]


@pytest.mark.parametrize("wire", WIRES)
async def test_a_call_split_across_chunks_streams_in_openai_shape(server, wire) -> None:
    call = ToolCall("get_weather", PARIS)
    # A pause between events: each piece leaves the server in its own write.
    server.enqueue(Script(pieces=[], tool_calls=[call], delay=0.001))
    client = AsyncClient(provider_for(server, wire))
    chunks = await collect(
        client.chat.completions.create(
            "weather in Paris?", model="fake-model", tools=[WEATHER], stream=True
        )
    )
    pieces = calls_of(chunks)
    assert pieces[0] == {
        "function": {"arguments": "", "name": "get_weather"},
        "id": call.id,
        "index": 0,
        "type": "function",
    }
    assert [p["function"]["arguments"] for p in pieces[1:]] == PARIS
    assert all(p["index"] == 0 and p["id"] is None for p in pieces[1:])
    assert all(chunk.choices[0].delta.content is None for chunk in chunks)
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert chunks[-1].usage is not None


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("wire", WIRES)
async def test_two_parallel_calls_gather_into_the_message(server, wire, stream) -> None:
    paris, rome = ToolCall("get_weather", PARIS), ToolCall("get_weather", ROME)
    server.enqueue(Script(pieces=["Checking", " both."], tool_calls=[paris, rome]))
    client = AsyncClient(provider_for(server, wire))
    if stream:
        chunks = await collect(
            client.chat.completions.create("both?", tools=[WEATHER], stream=True)
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks)
        assert text == "Checking both."
        assert {p["index"] for p in calls_of(chunks)} == {0, 1}
        return
    completion = await client.chat.completions.create("both?", tools=[WEATHER])
    assert completion.choices[0].message.content == "Checking both."
    assert gathered(completion) == [
        (paris.id, "get_weather", {"city": "Paris"}),
        (rome.id, "get_weather", {"city": "Rome"}),
    ]
    assert completion.choices[0].finish_reason == "tool_calls"
    dumped = completion.model_dump()["choices"][0]["message"]["tool_calls"][1]
    assert dumped == {
        "function": {"arguments": '{"city": "Rome"}', "name": "get_weather"},
        "id": rome.id,
        "type": "function",
    }


@pytest.mark.parametrize("wire", WIRES)
async def test_a_call_alone_has_no_content(server, wire) -> None:
    server.enqueue(Script(pieces=[], tool_calls=[ToolCall("get_time")]))
    completion = await AsyncClient(provider_for(server, wire)).chat.completions.create(
        "time?", tools=[TIME]
    )
    assert completion.choices[0].message.content is None
    assert gathered(completion)[0][1:] == ("get_time", {})


async def test_interleaved_pieces_of_parallel_calls_gather_per_index(server) -> None:
    """Pieces of two calls arriving interleaved (and a server repeating the id) still
    concatenate per index, and the calls come out in index order."""

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        body = {"id": "c1", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return b"data: " + json.dumps(body).encode() + b"\n\n"

    def piece(index: int, arguments: str, **head: Any) -> bytes:
        function = {"arguments": arguments, **({"name": head["name"]} if head else {})}
        call = {"index": index, "function": function}
        if head:
            call.update(id=head["id"], type="function")
        return chunk({"tool_calls": [call]})

    segments = [
        piece(1, "", id="b", name="get_time"),
        piece(0, '{"city":', id="a", name="get_weather"),
        piece(1, "{}", id="b", name="get_time"),
        piece(0, '"Oslo"}'),
        chunk({}, "tool_calls"),
        b"data: [DONE]\n\n",
    ]
    server.enqueue(Script(raw_sse=segments))
    chunks = await collect(
        AsyncClient(provider_for(server, "openai")).chat.completions.create(
            "x", tools=[WEATHER, TIME], stream=True
        )
    )
    pieces = [call for chunk in chunks for call in chunk.choices[0].delta.tool_calls or ()]
    calls = gather_tool_calls(pieces) or []
    assert [(c.id, c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("a", "get_weather", {"city": "Oslo"}),
        ("b", "get_time", {}),
    ]


async def test_openai_gets_the_tool_arguments_as_they_are(server) -> None:
    server.enqueue(Script(tool_calls=[ToolCall("get_weather", PARIS)]))
    choice = {"type": "function", "function": {"name": "get_weather"}}
    await AsyncClient(provider_for(server, "openai")).chat.completions.create(
        "x",
        tools=[WEATHER],
        tool_choice=choice,
        parallel_tool_calls=False,
        response_format={"type": "json_object"},
    )
    body = server.requests[0].json
    assert body["tools"] == [WEATHER] and body["tool_choice"] == choice
    assert body["parallel_tool_calls"] is False
    assert body["response_format"] == {"type": "json_object"}


async def test_anthropic_gets_tools_in_its_own_format(server) -> None:
    server.enqueue(Script(tool_calls=[ToolCall("get_weather", PARIS)]))
    client = AsyncClient(provider_for(server, "anthropic"))
    await client.chat.completions.create(
        "x", tools=[WEATHER, TIME], tool_choice="required", parallel_tool_calls=False
    )
    server.enqueue(Script())
    await client.chat.completions.create(
        "x", tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "get_weather"}}
    )
    first, second = (recorded.json for recorded in server.requests)
    assert first["tools"] == [
        {
            "name": "get_weather",
            "input_schema": WEATHER["function"]["parameters"],
            "description": "The weather in a city.",
        },
        {"name": "get_time", "input_schema": {"type": "object", "properties": {}}},
    ]
    assert first["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert second["tool_choice"] == {"type": "tool", "name": "get_weather"}


#: A finished round of two calls and their results, in OpenAI's format.
ROUND = [
    {"role": "system", "content": "Use tools."},
    {"role": "user", "content": "weather in Paris and Rome?"},
    {
        "role": "assistant",
        "tool_calls": [
            {
                "id": "call_a",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            },
            {
                "id": "call_b",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'},
            },
        ],
    },
    {"role": "tool", "tool_call_id": "call_a", "content": "18 C"},
    {"role": "tool", "tool_call_id": "call_b", "content": "24 C"},
]


async def test_tool_results_go_back_to_openai_as_they_are(server) -> None:
    server.enqueue(Script(pieces=["Warm in both."]))
    completion = await AsyncClient(provider_for(server, "openai")).chat.completions.create(
        ROUND, tools=[WEATHER]
    )
    assert completion.choices[0].message.content == "Warm in both."
    assert server.requests[0].json["messages"] == ROUND


async def test_tool_results_go_back_to_anthropic_as_blocks(server) -> None:
    server.enqueue(Script(pieces=["Warm in both."]))
    chunks = await collect(
        AsyncClient(provider_for(server, "anthropic")).chat.completions.create(
            [*ROUND[:2], {**ROUND[2], "content": "Let me look."}, *ROUND[3:]],
            tools=[WEATHER],
            stream=True,
        )
    )
    assert chunks[-1].choices[0].finish_reason == "stop"
    body = server.requests[0].json
    assert body["system"] == "Use tools."
    assert body["messages"][1:] == [
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me look."},
                {
                    "type": "tool_use",
                    "id": "call_a",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
                {
                    "type": "tool_use",
                    "id": "call_b",
                    "name": "get_weather",
                    "input": {"city": "Rome"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_a", "content": "18 C"},
                {"type": "tool_result", "tool_use_id": "call_b", "content": "24 C"},
            ],
        },
    ]


@pytest.mark.parametrize("wire", WIRES)
async def test_a_result_for_no_call_is_refused_by_the_server(server, wire) -> None:
    """The fake refuses what the real APIs refuse, so the translation above is checked."""
    orphan = [ROUND[1], {"role": "tool", "tool_call_id": "call_x", "content": "?"}]
    if wire == "anthropic":
        orphan[0] = {**ROUND[2], "tool_calls": [{**ROUND[2]["tool_calls"][0]}]}
        orphan.insert(0, ROUND[1])
    with pytest.raises(errors.ResponseStatusError):
        await AsyncClient(provider_for(server, wire)).chat.completions.create(orphan)


@pytest.mark.parametrize("stream", [True, False])
async def test_anthropic_answers_a_json_schema_through_a_forced_tool(server, stream) -> None:
    server.enqueue(Script(pieces=[], tool_calls=[ToolCall("response_format", ['{"n"', ": 42}"])]))
    client = AsyncClient(provider_for(server, "anthropic"))
    if stream:
        chunks = await collect(
            client.chat.completions.create("n?", response_format=SCHEMA_FORMAT, stream=True)
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks)
        assert not calls_of(chunks)
        finish = chunks[-1].choices[0].finish_reason
    else:
        completion = await client.chat.completions.create("n?", response_format=SCHEMA_FORMAT)
        text = completion.choices[0].message.content or ""
        assert completion.choices[0].message.tool_calls is None
        finish = completion.choices[0].finish_reason
    assert json.loads(text) == {"n": 42} and finish == "stop"
    body = server.requests[0].json
    assert body["tools"][0]["input_schema"] == SCHEMA_FORMAT["json_schema"]["schema"]
    assert body["tool_choice"] == {"type": "tool", "name": "response_format"}


@pytest.mark.parametrize(
    "arguments",
    [
        {"response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "array"}}}},
        {"response_format": {"type": "xml"}},
        {"response_format": SCHEMA_FORMAT, "tools": [WEATHER]},
        {"tools": [{"type": "code_interpreter"}]},
        {"tools": [WEATHER], "tool_choice": "sometimes"},
    ],
)
async def test_what_anthropic_cannot_be_asked_is_refused_before_sending(server, arguments) -> None:
    with pytest.raises(errors.InvalidRequestError):
        await AsyncClient(provider_for(server, "anthropic")).chat.completions.create(
            "x", **arguments
        )
    assert server.requests == []


async def test_malformed_arguments_of_a_past_call_are_refused_for_anthropic(server) -> None:
    broken = {**ROUND[2], "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{"}}]}
    with pytest.raises(errors.InvalidRequestError, match="not JSON"):
        await AsyncClient(provider_for(server, "anthropic")).chat.completions.create(
            [ROUND[1], broken]
        )


async def test_a_call_only_answer_is_not_empty_to_a_fallback_list(server) -> None:
    server.enqueue(Script(pieces=[], tool_calls=[ToolCall("get_time")]))
    fallback = IterListProvider([provider_for(server, "openai")])
    completion = await AsyncClient(fallback).chat.completions.create("time?", tools=[TIME])
    assert gathered(completion)[0][1] == "get_time"
    assert completion.provider == "Fake"


def test_the_sync_client_and_legacy_api_pass_tools_through() -> None:
    from core.legacy import ChatCompletion as LegacyChatCompletion

    with ThreadedServer(require_key=SECRET) as server:
        call = ToolCall("get_weather", PARIS)
        server.enqueue(
            Script(pieces=[], tool_calls=[call]), Script(pieces=[], tool_calls=[call]), Script()
        )
        provider = provider_for(server, "openai")
        chunks = list(Client(provider).chat.completions.create("x", tools=[WEATHER], stream=True))
        assert "".join(p["function"]["arguments"] for p in calls_of(chunks)) == "".join(PARIS)
        completion = Client(provider).chat.completions.create("x", tools=[WEATHER])
        assert gathered(completion)[0][2] == {"city": "Paris"}
        answer = LegacyChatCompletion.create(
            "fake-model", "x", provider, tools=[WEATHER], response_format={"type": "text"}
        )
        assert answer == "Hello, world"
        assert [r.json["tools"] for r in server.requests] == [[WEATHER]] * 3
        assert server.requests[2].json["response_format"] == {"type": "text"}
