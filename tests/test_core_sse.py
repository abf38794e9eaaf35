"""The SSE decoder (core/providers/sse.py): unit checks on byte streams, then over real TCP.

Servers differ in line endings, comments and how their writes fall into reads; the decoder
must give the same events whatever the split.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable

import pytest

from core import AsyncClient
from core.providers import OpenAICompatible
from core.providers.sse import iter_sse
from tests.core_support import collect, contents
from tests.fakes.llm_server import FakeLLMServer, Script


async def feed(parts: Iterable[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def decode(parts: Iterable[bytes]) -> list[tuple[str, str]]:
    return [(event.event, event.data) async for batch in iter_sse(feed(parts)) for event in batch]


def every_split(body: bytes) -> list[list[bytes]]:
    """The body whole, byte by byte, and cut in two at every position."""
    return [[body], [body[i : i + 1] for i in range(len(body))]] + [
        [body[:i], body[i:]] for i in range(1, len(body))
    ]


BODY_LF = b'data: {"a":1}\n\n: keep-alive comment\n\nevent: delta\ndata: line one\ndata: line two\n\ndata:tight\n\n'
EXPECTED = [("", '{"a":1}'), ("delta", "line one\nline two"), ("", "tight")]


@pytest.mark.parametrize("body", [BODY_LF, BODY_LF.replace(b"\n", b"\r\n")], ids=["LF", "CRLF"])
async def test_events_are_the_same_however_the_bytes_are_split(body) -> None:
    for parts in every_split(body):
        assert await decode(parts) == EXPECTED, parts


async def test_several_events_in_one_read() -> None:
    body = b"data: 1\n\ndata: 2\n\ndata: [DONE]\n\n"
    assert await decode([body]) == [("", "1"), ("", "2"), ("", "[DONE]")]


async def test_a_last_event_without_its_blank_line_is_delivered() -> None:
    assert await decode([b"data: 1\n\ndata: last"]) == [("", "1"), ("", "last")]
    assert await decode([b"data: 1\n\ndata: last\n"]) == [("", "1"), ("", "last")]


async def test_comments_and_other_fields_carry_no_event() -> None:
    body = b": ping\n\nid: 7\nretry: 100\n\n:another\ndata: x\n\n"
    assert await decode([body]) == [("", "x")]


async def test_an_event_name_applies_only_to_its_own_event() -> None:
    body = b"event: first\ndata: a\n\ndata: b\n\n"
    assert await decode([body]) == [("first", "a"), ("", "b")]


# -- over real TCP, through the provider -------------------------------------------------------


def chunk(text: str, finish: str | None = None) -> bytes:
    finish_json = "null" if finish is None else f'"{finish}"'
    return (
        '{"choices":[{"index":0,"delta":{"content":"' + text + '"},"finish_reason":'
        f"{finish_json}" + "}]}"
    ).encode()


async def test_split_crlf_events_with_comments_decode_over_tcp() -> None:
    first, second = chunk("Hel"), chunk("lo", "stop")
    raw = [
        b": opening comment\r\n\r\ndata: " + first[:20],
        first[20:] + b"\r",
        b"\n\r\n",
        b"data: " + second + b"\r\n\r\n: trailing\r\n",
        b"\r\ndata: [DONE]\r\n\r\n",
    ]
    async with FakeLLMServer() as server:
        server.enqueue(Script(raw_sse=raw, delay=0.02))
        client = AsyncClient(OpenAICompatible("Fake", server.base_url, max_retries=0))
        chunks = await collect(client.chat.completions.create("hi", stream=True))
    assert contents(chunks) == ["Hel", "lo", None]
    assert chunks[-1].choices[0].finish_reason == "stop"


async def test_multi_line_data_is_one_json_value_over_tcp() -> None:
    raw = [
        b'data: {"choices":[{"index":0,\ndata: "delta":{"content":"joined"},',
        b'\ndata: "finish_reason":"stop"}]}\n\n',
        b"data: [DONE]\n\n",
    ]
    async with FakeLLMServer() as server:
        server.enqueue(Script(raw_sse=raw, delay=0.02))
        client = AsyncClient(OpenAICompatible("Fake", server.base_url, max_retries=0))
        chunks = await collect(client.chat.completions.create("hi", stream=True))
    assert contents(chunks) == ["joined", None]


async def test_a_character_split_across_reads_survives() -> None:
    body = 'data: {"content": "héllo ✓ 👋"}\n\n'.encode()
    for parts in every_split(body):
        assert await decode(parts) == [("", '{"content": "héllo ✓ 👋"}')], parts
