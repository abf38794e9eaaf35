"""Real servers, read exactly: LiteLLM 1.81's proxy bytes, replayed by the fake server.

Run against a real LiteLLM proxy (mock responses, OpenAI and Anthropic formats), the core got
every text right but misread what came around it. Each test here sends the bytes that proxy
writes (compact JSON on /chat/completions, `json.dumps`'s spaced JSON on /v1/messages) and
checks one thing the core must read as the server meant it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from bots.config import Settings
from bots.relay import relay
from bots.write_budget import WriteBudget, WriteLimits
from core import AsyncClient, errors
from core.conversation import ConversationService
from core.providers import Anthropic, OpenAICompatible
from core.providers.wire import MAX_SERVER_TEXT
from storage import MessageStatus, open_store
from tests.core_support import collect, collect_until_error, contents
from tests.fakes.llm_server import Script
from tests.test_conversation_fakes import ALICE, chat

SERVER_ID = "chatcmpl-3b1d2f9e-5c4a-4e8b-9f0a-7d6c5b4a3e21"
MESSAGE_ID = "msg_6f1c2d3e-4b5a-4c6d-8e7f-0a1b2c3d4e5f"
JSON_HEADERS = {"Content-Type": "application/json"}

# -- OpenAI format (/chat/completions) -----------------------------------------------------------

_HEAD = (
    b'data: {"id":"' + SERVER_ID.encode() + b'","created":1767225600,"model":"gpt-4o-mini",'
    b'"object":"chat.completion.chunk","system_fingerprint":null,'
)
#: Content chunks as LiteLLM writes them: no "finish_reason" key at all.
LITELLM_HI = _HEAD + b'"choices":[{"index":0,"delta":{"content":"Hi","role":"assistant"}}]}\n\n'
LITELLM_THERE = (
    _HEAD + b'"choices":[{"index":0,"delta":{"content":" there","role":"assistant"}}]}\n\n'
)
LITELLM_FINISH = _HEAD + b'"choices":[{"finish_reason":"stop","index":0,"delta":{}}]}\n\n'
LITELLM_USAGE = (
    _HEAD + b'"choices":[{"index":0,"delta":{}}],"usage":{"completion_tokens":20,'
    b'"prompt_tokens":10,"total_tokens":30,"completion_tokens_details":null,'
    b'"prompt_tokens_details":null}}\n\n'
)
DONE = b"data: [DONE]\n\n"
LITELLM_STREAM = [LITELLM_HI, LITELLM_THERE, LITELLM_FINISH, LITELLM_USAGE, DONE]
LITELLM_WHOLE = (
    b'{"id":"' + SERVER_ID.encode() + b'","created":1767225600,"model":"gpt-4o-mini",'
    b'"object":"chat.completion","system_fingerprint":null,"choices":[{"finish_reason":"stop",'
    b'"index":0,"message":{"content":"Sure. STOP and then more","role":"assistant",'
    b'"tool_calls":null,"function_call":null}}],"usage":{"completion_tokens":20,'
    b'"prompt_tokens":10,"total_tokens":30,"completion_tokens_details":null,'
    b'"prompt_tokens_details":null}}'
)
SERVER_USAGE = {"completion_tokens": 20, "prompt_tokens": 10, "total_tokens": 30}

#: What LiteLLM's proxy puts in an error it sends inside a stream, `f"{exc}\n\n{traceback}"`:
#: 681 characters, as long as the one seen from the real proxy.
TRACEBACK = (
    "litellm.InternalServerError: OpenAIException - Connection error.\n\n"
    "Traceback (most recent call last):\n"
    '  File "/usr/lib/python3.13/site-packages/litellm/proxy/proxy_server.py", line 10214, '
    "in async_data_generator\n"
    "    async for chunk in proxy_logging_obj.async_post_call_streaming_iterator_hook(\n"
    '  File "/usr/lib/python3.13/site-packages/litellm/litellm_core_utils/streaming_handler.py",'
    " line 1917, in __anext__\n"
    "    raise exception_type(\n"
    '  File "/usr/lib/python3.13/site-packages/litellm/litellm_core_utils/exception_mapping_'
    'utils.py", line 2301, in exception_type\n'
    "    raise err\n"
    "litellm.exceptions.InternalServerError: litellm.InternalServerError: OpenAIException - "
    "Connection error.\n"
)
LITELLM_ERROR = (
    b"data: "
    + json.dumps(
        {"error": {"message": TRACEBACK, "type": "None", "param": "None", "code": "500"}}
    ).encode()
    + b"\n\n"
)
#: The traceback's tail: text that must never reach a chat or the history.
TRACEBACK_TAIL = "exception_mapping_utils.py"


@pytest.fixture
def openai_client(server) -> AsyncClient:
    return AsyncClient(OpenAICompatible("LiteLLM", server.base_url, max_retries=0))


async def test_content_chunks_without_finish_reason_take_the_fast_path(
    server, openai_client, monkeypatch
) -> None:
    """Only the finish and usage chunks are off the common shape; the content chunks, which
    lack the "finish_reason" key, are read inline (about 10% of CPU per chunk otherwise)."""
    irregular: list[Any] = []
    slow_path = OpenAICompatible._irregular_chunk

    def counted(self: OpenAICompatible, payload: Any, data: str, redact: Any) -> Any:
        irregular.append(payload)
        return slow_path(self, payload, data, redact)

    monkeypatch.setattr(OpenAICompatible, "_irregular_chunk", counted)
    server.enqueue(Script(raw_sse=LITELLM_STREAM))
    chunks = await collect(openai_client.chat.completions.create("hi", stream=True))
    assert contents(chunks) == ["Hi", " there", None]
    assert len(irregular) == 2
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert chunks[-1].usage.model_dump() == SERVER_USAGE


async def test_the_answer_id_is_the_servers(server, openai_client) -> None:
    server.enqueue(Script(raw_sse=LITELLM_STREAM), Script(raw_sse=LITELLM_WHOLE))
    chunks = await collect(openai_client.chat.completions.create("hi", stream=True))
    assert {chunk.id for chunk in chunks} == {SERVER_ID}
    completion = await openai_client.chat.completions.create("hi")
    assert completion.id == SERVER_ID


async def test_an_answer_without_an_id_gets_a_generated_one(server, openai_client) -> None:
    no_id = b'data: {"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":"stop"}]}\n\n'
    server.enqueue(Script(raw_sse=[no_id, DONE]), Script(raw_sse=[no_id, DONE]))
    first = await collect(openai_client.chat.completions.create("hi", stream=True))
    second = await collect(openai_client.chat.completions.create("hi", stream=True))
    assert first[0].id.startswith("chatcmpl-") and len({c.id for c in first}) == 1
    assert first[0].id != second[0].id


async def test_a_stop_string_keeps_the_usage_the_server_already_sent(server, openai_client) -> None:
    server.enqueue(Script(raw_sse=LITELLM_WHOLE, headers=JSON_HEADERS))
    completion = await openai_client.chat.completions.create("hi", stop=["STOP"])
    assert completion.choices[0].message.content == "Sure. "
    assert completion.usage.model_dump() == SERVER_USAGE
    assert not completion.usage.estimated


async def test_a_stop_string_before_the_servers_usage_gives_a_marked_estimate(
    server, openai_client
) -> None:
    """Streaming, the usage would come after the cut: the client does not read on for it."""
    server.enqueue(Script(raw_sse=LITELLM_STREAM))
    chunks = await collect(openai_client.chat.completions.create("hi", stream=True, stop=["er"]))
    assert contents(chunks) == ["Hi", " th", None]
    usage = chunks[-1].usage
    assert usage.estimated and usage.model_dump()["estimated"] is True
    assert (usage.prompt_tokens, usage.completion_tokens) == (1, 2)  # "hi" and "Hi th"


async def test_a_traceback_sent_in_the_stream_is_one_short_line_and_logged_whole(
    server, openai_client, caplog
) -> None:
    server.enqueue(Script(raw_sse=[LITELLM_HI, LITELLM_ERROR]))
    with caplog.at_level(logging.WARNING):
        chunks, raised = await collect_until_error(
            openai_client.chat.completions.create("hi", stream=True)
        )
    assert contents(chunks) == ["Hi"]
    assert isinstance(raised, errors.ResponseStatusError) and raised.status_code == 500
    message = str(raised)
    assert "\n" not in message and len(message) < MAX_SERVER_TEXT + 60
    assert "litellm.InternalServerError" in message and TRACEBACK_TAIL not in message
    assert len([r for r in caplog.records if TRACEBACK_TAIL in r.getMessage()]) == 1


class _Surface:
    """A chat that keeps the last text of each message, as a user would read it."""

    max_length = 4096

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.budget = WriteBudget(WriteLimits(1, 0.001))

    async def send(self, text: str, *, final: bool) -> object:
        self.messages.append(text)
        return len(self.messages) - 1

    async def edit(self, handle: object, text: str, *, final: bool) -> None:
        self.messages[handle] = text  # type: ignore[index]

    async def typing(self) -> None:
        pass


async def test_a_traceback_reaches_neither_the_chat_nor_the_history(server, tmp_path: Path):
    server.enqueue(Script(raw_sse=[LITELLM_HI, LITELLM_ERROR]))
    store = await open_store(f"sqlite:///{tmp_path}/history.db")
    try:
        settings = Settings(_env_file=None, default_model="gpt-4o-mini")
        client = AsyncClient(OpenAICompatible("LiteLLM", server.base_url, max_retries=0))
        service = ConversationService(store, client, settings)
        surface = _Surface()
        result = await relay(
            service, surface, chat(), ALICE, "hi", group=False, platform_message_id="1"
        )
        assert isinstance(result.error, errors.ResponseStatusError)
        (shown,) = surface.messages
        assert shown.startswith("Hi") and errors.ResponseStatusError.user_hint in shown
        conversation = await store.current_conversation(chat())
        assert conversation is not None
        _, reply = await store.conversation_messages(conversation)
    finally:
        await store.close()
    assert reply.status == MessageStatus.ERROR and reply.text == "Hi"
    assert reply.error is not None and "litellm.InternalServerError" in reply.error
    for text in (shown, reply.text, reply.error):
        assert TRACEBACK_TAIL not in text and "Traceback" not in text


# -- Anthropic format (/v1/messages) -------------------------------------------------------------


def _event(name: str, data: dict[str, Any]) -> bytes:
    """An event as LiteLLM's Anthropic adapter writes it (`json.dumps`, default spacing)."""
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


_ZERO_USAGE = {
    "input_tokens": 0,
    "output_tokens": 0,
    "cache_creation_input_tokens": 0,
    "cache_read_input_tokens": 0,
}
ANTHROPIC_START = [
    _event(
        "message_start",
        {
            "type": "message_start",
            "message": {
                "id": MESSAGE_ID,
                "type": "message",
                "role": "assistant",
                "content": [],
                "model": "claude-fake",
                "stop_reason": None,
                "stop_sequence": None,
                "usage": _ZERO_USAGE,
            },
        },
    ),
    _event(
        "content_block_start",
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    ),
    _event(
        "content_block_delta",
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
    ),
]
ANTHROPIC_END = [
    _event("content_block_stop", {"type": "content_block_stop", "index": 0}),
    _event(
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {**_ZERO_USAGE, "input_tokens": 10, "output_tokens": 20},
        },
    ),
    _event("message_stop", {"type": "message_stop"}),
]
#: The failing case: a bare data line, no `event: error` before it, then the stream ends.
ANTHROPIC_BARE_ERROR = LITELLM_ERROR


@pytest.fixture
def anthropic_client(server) -> AsyncClient:
    provider = Anthropic("sk-ant-test", base_url=server.anthropic_base_url, max_retries=0)
    return AsyncClient(provider)


async def test_anthropic_prompt_tokens_sent_in_message_delta_are_read(
    server, anthropic_client
) -> None:
    server.enqueue(Script(raw_sse=ANTHROPIC_START + ANTHROPIC_END))
    chunks = await collect(
        anthropic_client.chat.completions.create("hi", model="claude-fake", stream=True)
    )
    assert contents(chunks) == ["Hi", None]
    assert chunks[-1].usage.model_dump() == SERVER_USAGE
    assert {chunk.id for chunk in chunks} == {MESSAGE_ID}


async def test_anthropic_bare_error_line_is_the_servers_error(server, anthropic_client) -> None:
    server.enqueue(Script(raw_sse=[*ANTHROPIC_START, ANTHROPIC_BARE_ERROR]))
    chunks, raised = await collect_until_error(
        anthropic_client.chat.completions.create("hi", model="claude-fake", stream=True)
    )
    assert contents(chunks) == ["Hi"]
    assert type(raised) is errors.ResponseStatusError and raised.status_code == 500
    assert "litellm.InternalServerError" in str(raised)
    assert "ended before" not in str(raised) and TRACEBACK_TAIL not in str(raised)
    assert errors.describe(raised) == errors.ResponseStatusError.user_hint


async def test_anthropic_whole_answer_keeps_id_and_usage_through_a_stop_string(
    server, anthropic_client
) -> None:
    body = {
        "id": MESSAGE_ID,
        "type": "message",
        "role": "assistant",
        "model": "claude-fake",
        "content": [{"type": "text", "text": "Sure. STOP and then more"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 20},
    }
    server.enqueue(Script(raw_sse=json.dumps(body).encode(), headers=JSON_HEADERS))
    completion = await anthropic_client.chat.completions.create(
        "hi", model="claude-fake", stop=["STOP"]
    )
    assert completion.choices[0].message.content == "Sure. "
    assert completion.id == MESSAGE_ID
    assert completion.usage.model_dump() == SERVER_USAGE


async def test_a_traceback_in_an_http_error_body_is_one_short_line_and_logged_whole(
    server, openai_client, caplog
) -> None:
    """LiteLLM answers a failure before the stream with HTTP 500 and the same traceback."""
    body = json.dumps(
        {"error": {"message": TRACEBACK, "type": "None", "param": "None", "code": "500"}}
    ).encode()
    server.enqueue(Script(status=500, raw_sse=body, headers=JSON_HEADERS))
    with caplog.at_level(logging.WARNING), pytest.raises(errors.ResponseStatusError) as caught:
        await openai_client.chat.completions.create("hi")
    message = str(caught.value)
    assert caught.value.status_code == 500
    assert "\n" not in message and "litellm.InternalServerError" in message
    assert TRACEBACK_TAIL not in message
    assert len([r for r in caplog.records if TRACEBACK_TAIL in r.getMessage()]) == 1


async def test_a_traceback_in_an_http_error_body_is_logged_once_across_retries(
    server, caplog
) -> None:
    body = json.dumps(
        {"error": {"message": TRACEBACK, "type": "None", "param": "None", "code": "500"}}
    ).encode()
    for _ in range(3):
        server.enqueue(
            Script(status=500, raw_sse=body, headers={**JSON_HEADERS, "Retry-After": "0"})
        )
    client = AsyncClient(OpenAICompatible("LiteLLM", server.base_url, max_retries=2))
    with caplog.at_level(logging.WARNING), pytest.raises(errors.ResponseStatusError):
        await client.chat.completions.create("hi")
    assert len(server.requests) == 3
    assert len([r for r in caplog.records if TRACEBACK_TAIL in r.getMessage()]) == 1


#: Azure OpenAI's first chunk: no choices, an empty id, the prompt's content-filter results.
AZURE_FILTER_CHUNK = (
    b'data: {"choices":[],"created":0,"id":"","model":"","object":"","prompt_filter_results":'
    b'[{"prompt_index":0,"content_filter_results":{"hate":{"filtered":false,"severity":"safe"}}}]}'
    b"\n\n"
)


async def test_an_empty_id_in_the_first_chunk_waits_for_the_real_one(server, openai_client) -> None:
    server.enqueue(Script(raw_sse=[AZURE_FILTER_CHUNK, *LITELLM_STREAM]))
    chunks = await collect(openai_client.chat.completions.create("hi", stream=True))
    assert contents(chunks) == ["Hi", " there", None]
    assert {chunk.id for chunk in chunks} == {SERVER_ID}
