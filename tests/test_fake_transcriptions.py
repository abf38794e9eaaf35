"""The fake server's `/audio/transcriptions` checks a request as OpenAI does, checked here with
a plain httpx client, independent of Parley's own transcription code."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.fakes.llm_server import MAX_AUDIO_BYTES, FakeLLMServer, Script

KEY = "sk-fake-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture
async def fake() -> AsyncIterator[FakeLLMServer]:
    async with FakeLLMServer(require_key=KEY) as server:
        yield server


async def post(
    fake: FakeLLMServer,
    data: dict[str, str],
    files: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.post(
            f"{fake.base_url}/audio/transcriptions",
            data=data,
            files=files,
            headers=AUTH if headers is None else headers,
        )


def error_message(response: httpx.Response) -> str:
    body = response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return str(body["error"]["message"])


async def test_a_scripted_transcript_in_each_response_format(fake: FakeLLMServer) -> None:
    fake.enqueue(Script(pieces=["one"]), Script(pieces=["two"]), Script(pieces=["three"]))
    upload = {"file": ("v.ogg", b"OggS....", "audio/ogg")}
    as_json = await post(fake, {"model": "whisper-1"}, upload)
    as_text = await post(fake, {"model": "whisper-1", "response_format": "text"}, upload)
    verbose = await post(fake, {"model": "whisper-1", "response_format": "verbose_json"}, upload)
    assert as_json.json() == {"text": "one"}
    assert as_text.text == "two\n"
    assert verbose.json()["text"] == "three" and verbose.json()["task"] == "transcribe"
    assert [request.files["file"].data for request in fake.requests] == [b"OggS...."] * 3


@pytest.mark.parametrize(
    ("data", "files", "message"),
    [
        ({"model": "whisper-1"}, None, "field required"),
        ({}, {"file": ("v.ogg", b"OggS", "audio/ogg")}, "you must provide a model parameter"),
        ({"model": "m"}, {"file": ("v.amr", b"#!AMR", "audio/amr")}, "Invalid file format."),
        ({"model": "m"}, {"file": ("v.ogg", b"", "audio/ogg")}, "Audio file is too short."),
    ],
    ids=["no-file", "no-model", "format", "empty"],
)
async def test_what_openai_refuses_is_a_400(
    fake: FakeLLMServer, data: dict[str, str], files: dict[str, Any] | None, message: str
) -> None:
    response = await post(fake, data, files or {"other": ("x", b"x")})
    assert response.status_code == 400
    assert message in error_message(response)


async def test_a_wrong_key_is_a_401_and_a_huge_upload_a_413(fake: FakeLLMServer) -> None:
    upload = {"file": ("v.ogg", b"OggS", "audio/ogg")}
    refused = await post(fake, {"model": "m"}, upload, headers={"Authorization": "Bearer no"})
    assert refused.status_code == 401
    huge = await post(fake, {"model": "m"}, {"file": ("v.wav", b"\0" * (MAX_AUDIO_BYTES + 1))})
    assert huge.status_code == 413
    assert "Maximum content size limit" in error_message(huge)
