"""The fake LLM server speaks both wire formats exactly and misbehaves only when scripted to.

Every other suite trusts this server, so each of its scripted behaviours is checked here with a
plain httpx client, independent of Parley's own provider code.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.llm_server import FakeLLMServer, Script

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ANTHROPIC_HEADERS = {"anthropic-version": "2023-06-01"}
USER = [{"role": "user", "content": "tell me something"}]
#: Generous bound for anything that should happen at once (slow shared CI machine).
PROMPT = 5.0


class _AnyString:
    """Equal to any non-empty string: error messages are free text."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and bool(other)


ANY = _AnyString()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=PROMPT) as client:
        yield client


def sse_data(body: str) -> list[str]:
    """The `data:` payloads of an SSE body, in order."""
    events = [e for e in body.replace("\r\n", "\n").split("\n\n") if e.strip()]
    return [
        line[len("data: ") :] for e in events for line in e.split("\n") if line.startswith("data: ")
    ]


def sse_events(body: str) -> list[tuple[str, dict[str, Any]]]:
    """(event name, parsed data) pairs of an Anthropic-style SSE body."""
    out = []
    for event in (e for e in body.split("\n\n") if e.strip()):
        name_line, data_line = event.split("\n")
        assert name_line.startswith("event: ") and data_line.startswith("data: ")
        out.append((name_line[len("event: ") :], json.loads(data_line[len("data: ") :])))
    return out


def chat(stream: bool = False, **extra: Any) -> dict[str, Any]:
    return {"model": "fake-model", "messages": USER, "stream": stream, **extra}


def anthropic(stream: bool = False, **extra: Any) -> dict[str, Any]:
    return {"model": "claude-fake", "max_tokens": 100, "messages": USER, "stream": stream, **extra}


# -- OpenAI: success shapes ------------------------------------------------------------------


async def test_stream_has_one_chunk_per_piece_then_finish_usage_and_done(server, http) -> None:
    pieces = [f"p{i} " for i in range(150)]  # more than one write batch
    server.enqueue(Script(pieces=pieces))
    response = await http.post(
        f"{server.base_url}/chat/completions",
        json=chat(stream=True, stream_options={"include_usage": True}),
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    data = sse_data(response.text)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert len(chunks) == len(pieces) + 2
    content, finish, usage = chunks[: len(pieces)], chunks[-2], chunks[-1]
    assert [c["choices"][0]["delta"]["content"] for c in content] == pieces
    assert content[0]["choices"][0]["delta"]["role"] == "assistant"
    assert "role" not in content[1]["choices"][0]["delta"]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1 and chunks[0]["id"].startswith("chatcmpl-")
    assert all(c["choices"][0]["finish_reason"] is None for c in content)
    assert finish["choices"] == [
        {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    ]
    assert usage["choices"] == []
    assert usage["usage"] == {"prompt_tokens": 3, "completion_tokens": 150, "total_tokens": 153}


async def test_stream_without_include_usage_has_no_usage_chunk(server, http) -> None:
    response = await http.post(f"{server.base_url}/chat/completions", json=chat(stream=True))
    data = sse_data(response.text)
    chunks = [json.loads(d) for d in data[:-1]]
    assert data[-1] == "[DONE]"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert all("usage" not in c for c in chunks)


async def test_stream_with_delay_delivers_the_same_events(server, http) -> None:
    server.enqueue(Script(pieces=["a", "b", "c"], delay=0.01))
    response = await http.post(f"{server.base_url}/chat/completions", json=chat(stream=True))
    chunks = [json.loads(d) for d in sse_data(response.text)[:-1]]
    assert [c["choices"][0]["delta"].get("content") for c in chunks] == ["a", "b", "c", None]


async def test_non_stream_completion_json(server, http) -> None:
    server.enqueue(Script(pieces=["Hi", " there"], usage={"prompt_tokens": 7}))
    response = await http.post(f"{server.base_url}/chat/completions", json=chat())
    body = response.json()
    assert response.headers["content-type"].startswith("application/json")
    assert body["object"] == "chat.completion" and body["model"] == "fake-model"
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert body["choices"][0]["message"]["content"] == "Hi there"
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"] == {"prompt_tokens": 7}


async def test_max_tokens_truncates_with_finish_reason_length(server, http) -> None:
    server.enqueue(Script(pieces=["a", "b", "c", "d"]), Script(pieces=["a", "b", "c", "d"]))
    url = f"{server.base_url}/chat/completions"
    whole = (await http.post(url, json=chat(max_tokens=2))).json()
    assert whole["choices"][0]["message"]["content"] == "ab"
    assert whole["choices"][0]["finish_reason"] == "length"
    assert whole["usage"]["completion_tokens"] == 2
    streamed = await http.post(url, json=chat(stream=True, max_completion_tokens=3))
    chunks = [json.loads(d) for d in sse_data(streamed.text)[:-1]]
    assert [c["choices"][0]["delta"].get("content") for c in chunks] == ["a", "b", "c", None]
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


async def test_stop_is_left_to_the_client(server, http) -> None:
    server.enqueue(Script(pieces=["one", " STOP", " two"]))
    body = (await http.post(f"{server.base_url}/chat/completions", json=chat(stop=["STOP"]))).json()
    assert body["choices"][0]["message"]["content"] == "one STOP two"


async def test_empty_queue_echoes_last_user_message_in_word_pieces(server, http) -> None:
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [{"type": "text", "text": "hello  big world"}]},
    ]
    response = await http.post(
        f"{server.base_url}/chat/completions",
        json={"model": "m", "messages": messages, "stream": True},
    )
    chunks = [json.loads(d) for d in sse_data(response.text)[:-1]]
    pieces = [c["choices"][0]["delta"]["content"] for c in chunks[:-1]]
    assert pieces == ["echo:", " hello", "  big", " world"]


async def test_requests_are_recorded_in_order_and_awaitable(server, http) -> None:
    url = f"{server.base_url}/chat/completions"
    sent = asyncio.gather(
        http.post(url, json=chat(), headers={"X-Trace": "1"}),
        http.get(f"{server.base_url}/models"),
    )
    recorded = await server.wait_for_requests(2, timeout=PROMPT)
    await sent
    assert {r.path for r in recorded} == {"/v1/chat/completions", "/v1/models"}
    posted = next(r for r in recorded if r.method == "POST")
    assert posted.json == chat() and posted.headers["x-trace"] == "1"
    with pytest.raises(TimeoutError):
        await server.wait_for_requests(3, timeout=0.05)


# -- OpenAI: errors --------------------------------------------------------------------------


async def test_error_status_with_body_code_and_headers(server, http) -> None:
    server.enqueue(
        Script(status=429, error_message="slow down", headers={"Retry-After": "1"}),
        Script(status=503, error_code="overloaded"),
        Script(pieces=["fine"]),
    )
    url = f"{server.base_url}/chat/completions"
    limited = await http.post(url, json=chat(stream=True))
    assert limited.status_code == 429 and limited.headers["retry-after"] == "1"
    error = limited.json()["error"]
    assert error["message"] == "slow down" and error["type"] and error["code"] is None
    unavailable = await http.post(url, json=chat())
    assert unavailable.status_code == 503
    assert unavailable.json()["error"]["code"] == "overloaded"
    ok = await http.post(url, json=chat())
    assert ok.json()["choices"][0]["message"]["content"] == "fine"


@pytest.mark.parametrize(
    "content",
    [b"{not json", b"[1, 2]", b'{"model": "m"}', b'{"model": "m", "messages": []}'],
)
async def test_bad_request_bodies_get_400_and_the_server_keeps_working(
    server, http, content
) -> None:
    url = f"{server.base_url}/chat/completions"
    bad = await http.post(url, content=content, headers={"Content-Type": "application/json"})
    assert bad.status_code == 400
    assert bad.json()["error"]["type"] == "invalid_request_error"
    assert (await http.post(url, json=chat())).status_code == 200


async def test_key_and_model_checks(http) -> None:
    async with FakeLLMServer(require_key="sk-right", models={"good"}) as server:
        url = f"{server.base_url}/chat/completions"
        server.enqueue(Script(pieces=["queued"]))
        for headers in ({}, {"Authorization": "Bearer sk-wrong"}):
            denied = await http.post(url, json=chat(), headers=headers)
            assert denied.status_code == 401
            assert denied.json()["error"]["code"] == "invalid_api_key"
        auth = {"Authorization": "Bearer sk-right"}
        missing = await http.post(url, json={**chat(), "model": "bad"}, headers=auth)
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "model_not_found"
        ok = await http.post(url, json={**chat(), "model": "good"}, headers=auth)
        # Refused requests never consume the queue.
        assert ok.json()["choices"][0]["message"]["content"] == "queued"
        listed = await http.get(f"{server.base_url}/models", headers=auth)
        assert listed.json()["object"] == "list"
        assert [m["id"] for m in listed.json()["data"]] == ["good"]
        assert (await http.get(f"{server.base_url}/models")).status_code == 401


async def test_models_default_list(server, http) -> None:
    listed = (await http.get(f"{server.base_url}/models")).json()
    assert listed["data"] and all(m["object"] == "model" for m in listed["data"])


# -- OpenAI: broken streams ------------------------------------------------------------------


async def test_cut_after_drops_the_connection_mid_stream(server, http) -> None:
    server.enqueue(Script(pieces=["a", "b", "c", "d"], cut_after=2))
    received: list[str] = []
    with pytest.raises(httpx.RemoteProtocolError):
        async with http.stream(
            "POST", f"{server.base_url}/chat/completions", json=chat(stream=True)
        ) as response:
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    received.append(line)
    assert [json.loads(d[6:])["choices"][0]["delta"]["content"] for d in received] == ["a", "b"]
    await server.wait_until_no_active_streams(PROMPT)


async def test_cut_after_without_stream_gives_no_response(server, http) -> None:
    server.enqueue(Script(cut_after=0))
    with pytest.raises(httpx.RemoteProtocolError):
        await http.post(f"{server.base_url}/chat/completions", json=chat())


async def test_malformed_after_inserts_a_bad_event_then_continues(server, http) -> None:
    server.enqueue(Script(pieces=["a", "b", "c"], malformed_after=1))
    response = await http.post(f"{server.base_url}/chat/completions", json=chat(stream=True))
    data = sse_data(response.text)
    assert data[1] == "{not json"
    assert json.loads(data[0])["choices"][0]["delta"]["content"] == "a"
    assert json.loads(data[2])["choices"][0]["delta"]["content"] == "b"
    assert data[-1] == "[DONE]"


async def test_stall_after_keeps_quiet_until_the_client_leaves(server) -> None:
    server.enqueue(Script(pieces=["a", "b"], stall_after=1))
    timeout = httpx.Timeout(PROMPT, read=0.2)
    async with httpx.AsyncClient(timeout=timeout) as http:
        received: list[str] = []
        with pytest.raises(httpx.ReadTimeout):
            async with http.stream(
                "POST", f"{server.base_url}/chat/completions", json=chat(stream=True)
            ) as response:
                async for line in response.aiter_lines():
                    if line:
                        received.append(line)
        assert len(received) == 1
    await server.wait_until_no_active_streams(PROMPT)
    assert server.active_streams == 0


async def test_hold_after_sends_part_then_waits_for_the_release(server, http) -> None:
    script = Script(pieces=["a", "b", "c"], hold_after=2)
    server.enqueue(script)
    received: list[str] = []
    async with http.stream(
        "POST", f"{server.base_url}/chat/completions", json=chat(stream=True)
    ) as response:
        lines = response.aiter_lines()
        while len(received) < 2:
            line = await asyncio.wait_for(anext(lines), PROMPT)
            if line.startswith("data: "):
                received.append(json.loads(line[6:])["choices"][0]["delta"]["content"])
        assert server.active_streams == 1  # held, not finished
        script.release.set()
        rest = [line async for line in lines if line.startswith("data: ")]
    assert received == ["a", "b"]
    assert json.loads(rest[0][6:])["choices"][0]["delta"]["content"] == "c"
    assert rest[-1] == "data: [DONE]"


async def test_close_ends_a_stalled_stream_promptly(http) -> None:
    server = FakeLLMServer()
    await server.start()
    server.enqueue(Script(stall_after=0))
    async with http.stream(
        "POST", f"{server.base_url}/chat/completions", json=chat(stream=True)
    ) as response:
        assert response.status_code == 200
        assert server.active_streams == 1
        await asyncio.wait_for(server.close(), PROMPT)
        with pytest.raises(httpx.RemoteProtocolError):
            await response.aread()


async def test_raw_sse_segments_are_sent_verbatim(server, http) -> None:
    segments = [b": comment\r\n", b'data: {"x":', b" 1}\r\n\r\n", b"data: [DONE]\n\n"]
    server.enqueue(Script(raw_sse=segments, delay=0.01), Script(raw_sse=b"data: [DONE]\n\n"))
    url = f"{server.base_url}/chat/completions"
    assert (await http.post(url, json=chat(stream=True))).content == b"".join(segments)
    assert (await http.post(url, json=chat())).content == b"data: [DONE]\n\n"


async def test_a_raw_body_takes_the_content_type_its_headers_give(server, http) -> None:
    body = b'{"id":"chatcmpl-x","choices":[]}'
    server.enqueue(Script(raw_sse=body, headers={"Content-Type": "application/json"}))
    response = await http.post(f"{server.base_url}/chat/completions", json=chat())
    assert response.headers["content-type"] == "application/json"
    assert response.content == body


# -- Anthropic -------------------------------------------------------------------------------


async def test_anthropic_stream_event_order(server, http) -> None:
    server.enqueue(Script(pieces=["Hi", " you"]))
    response = await http.post(
        f"{server.anthropic_base_url}/messages",
        json=anthropic(stream=True, system="be kind"),
        headers=ANTHROPIC_HEADERS,
    )
    events = sse_events(response.text)
    names = [name for name, _ in events]
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(data["type"] == name for name, data in events)
    start = events[0][1]["message"]
    assert (
        start["role"] == "assistant" and start["content"] == [] and start["id"].startswith("msg_")
    )
    assert start["usage"]["input_tokens"] == 5  # "be kind" + "tell me something"
    assert [d["delta"] for _, d in events[3:5]] == [
        {"type": "text_delta", "text": "Hi"},
        {"type": "text_delta", "text": " you"},
    ]
    assert events[6][1]["delta"]["stop_reason"] == "end_turn"
    assert events[6][1]["usage"] == {"output_tokens": 2}


async def test_anthropic_non_stream_and_max_tokens(server, http) -> None:
    server.enqueue(Script(pieces=["a", "b", "c"]))
    response = await http.post(
        f"{server.anthropic_base_url}/messages",
        json=anthropic(max_tokens=2),
        headers=ANTHROPIC_HEADERS,
    )
    body = response.json()
    assert body["type"] == "message" and body["role"] == "assistant"
    assert body["content"] == [{"type": "text", "text": "ab"}]
    assert body["stop_reason"] == "max_tokens"
    assert body["usage"] == {"input_tokens": 3, "output_tokens": 2}


async def test_anthropic_errors_have_anthropic_shape(http) -> None:
    async with FakeLLMServer(require_key="sk-ant", models={"claude-fake"}) as server:
        url = f"{server.anthropic_base_url}/messages"
        keyed = {**ANTHROPIC_HEADERS, "x-api-key": "sk-ant"}
        cases = [
            ({**ANTHROPIC_HEADERS, "x-api-key": "nope"}, anthropic(), 401, "authentication_error"),
            ({"x-api-key": "sk-ant"}, anthropic(), 400, "invalid_request_error"),
            (keyed, {**anthropic(), "model": "other"}, 404, "not_found_error"),
            (keyed, {"model": "claude-fake", "messages": USER}, 400, "invalid_request_error"),
        ]
        for headers, body, status, kind in cases:
            response = await http.post(url, json=body, headers=headers)
            assert response.status_code == status
            assert response.json() == {"type": "error", "error": {"type": kind, "message": ANY}}
        server.enqueue(Script(status=529, error_message="busy"))
        busy = await http.post(url, json=anthropic(stream=True), headers=keyed)
        assert busy.status_code == 529
        assert busy.json()["error"] == {"type": "overloaded_error", "message": "busy"}


async def test_anthropic_cut_after(server, http) -> None:
    server.enqueue(Script(pieces=["a", "b", "c"], cut_after=1))
    with pytest.raises(httpx.RemoteProtocolError):
        await http.post(
            f"{server.anthropic_base_url}/messages",
            json=anthropic(stream=True),
            headers=ANTHROPIC_HEADERS,
        )
    await server.wait_until_no_active_streams(PROMPT)


# -- command line ----------------------------------------------------------------------------


async def test_command_line_server_serves_fixed_pieces_until_terminated(http) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.fakes.llm_server",
        "--port",
        "0",
        "--pieces",
        "50",
        "--piece",
        "tok ",
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), PROMPT)).decode()
        assert line.startswith("READY http://127.0.0.1:") and line.endswith("/v1\n")
        base_url = line.split()[1]
        response = await http.post(f"{base_url}/chat/completions", json=chat(stream=True))
        chunks = [json.loads(d) for d in sse_data(response.text)[:-1]]
        assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == "tok " * 50
        process.terminate()
        assert await asyncio.wait_for(process.wait(), PROMPT) == 0
        assert await process.stdout.read() == b""
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
