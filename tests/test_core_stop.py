"""Stop strings, enforced by the client whatever the provider does with them.

The fake server ignores `stop`, so everything cut here was cut by Parley's client.
"""

from __future__ import annotations

import asyncio

import pytest

from core import AsyncClient
from core.providers import OpenAICompatible
from tests.core_support import PROMPT, ScriptedProvider, collect, contents
from tests.fakes.llm_server import FakeLLMServer, Script


@pytest.fixture
def client(server: FakeLLMServer) -> AsyncClient:
    return AsyncClient(OpenAICompatible("Fake", server.base_url, max_retries=0))


async def streamed_text(client: AsyncClient, stop, **kwargs) -> tuple[str, list]:
    chunks = await collect(client.chat.completions.create("hi", stream=True, stop=stop, **kwargs))
    return "".join(c for c in contents(chunks)[:-1]), chunks


async def test_a_stop_string_spanning_chunks_is_cut_while_streaming(server, client) -> None:
    server.enqueue(Script(pieces=["Hel", "lo ST", "OP world"]))
    text, chunks = await streamed_text(client, "STOP")
    assert text == "Hello "
    assert not any("S" in (c or "") for c in contents(chunks))
    assert contents(chunks)[-1] is None
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert server.requests[0].json["stop"] == "STOP"


@pytest.mark.parametrize(
    "pieces",
    [["S", "T", "O", "P"], ["xS", "TO", "Py"], ["x", "STOP"], ["xSTOPy"]],
    ids=["letter-by-letter", "straddling", "whole-piece", "inside-one-piece"],
)
async def test_stop_is_found_however_the_pieces_fall(pieces) -> None:
    provider = ScriptedProvider(["before ", *pieces, " after"])
    text, chunks = await streamed_text(AsyncClient(provider), "STOP")
    expected = "before " + ("x" if pieces[0].startswith("x") else "")
    assert text == expected
    assert chunks[-1].choices[0].finish_reason == "stop"


async def test_the_first_of_several_stop_strings_ends_the_text() -> None:
    provider = ScriptedProvider(["one HA", "LT two E", "ND three"])
    text, _ = await streamed_text(AsyncClient(provider), ["END", "HALT"])
    assert text == "one "
    provider = ScriptedProvider(["one E", "ND two HALT"])
    text, _ = await streamed_text(AsyncClient(provider), ["HALT", "END"])
    assert text == "one "


async def test_a_stop_at_the_very_start_gives_no_text(server, client) -> None:
    server.enqueue(Script(pieces=["STOP", " and more"]))
    text, chunks = await streamed_text(client, "STOP")
    assert text == ""
    assert contents(chunks) == [None]
    assert chunks[-1].choices[0].finish_reason == "stop"


@pytest.mark.parametrize(
    ("pieces", "expected"),
    [
        (["wait ST", "ILL here"], "wait STILL here"),
        (["ends with ST"], "ends with ST"),
        (["S", "T", "O", "!"], "STO!"),
    ],
    ids=["continues", "at-the-end", "one-letter-short"],
)
async def test_a_prefix_that_is_not_a_stop_is_delivered_intact(pieces, expected) -> None:
    text, chunks = await streamed_text(AsyncClient(ScriptedProvider(pieces)), "STOP")
    assert text == expected
    assert chunks[-1].choices[0].finish_reason == "stop"


async def test_non_streaming_text_is_cut_at_the_stop_string(server, client) -> None:
    server.enqueue(Script(pieces=["Hel", "lo ST", "OP world"]))
    completion = await client.chat.completions.create("hi", stop=["nothing", "STOP"])
    assert completion.choices[0].message.content == "Hello "
    assert completion.choices[0].finish_reason == "stop"


async def test_a_stop_overrides_a_length_finish(server, client) -> None:
    server.enqueue(Script(pieces=["a", "STOP", "b", "c"]))
    completion = await client.chat.completions.create("hi", stop="STOP", max_tokens=3)
    assert completion.choices[0].message.content == "a"
    assert completion.choices[0].finish_reason == "stop"


async def test_hitting_a_stop_ends_the_stream_and_frees_the_connection(server, client) -> None:
    """The server would never finish this reply: the stop string alone must end it."""
    server.enqueue(Script(pieces=["done STOP", " unread"], stall_after=2))
    text, chunks = await asyncio.wait_for(streamed_text(client, "STOP"), PROMPT)
    assert text == "done "
    assert chunks[-1].choices[0].finish_reason == "stop"
    await server.wait_until_no_active_streams(PROMPT)
