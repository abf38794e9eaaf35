"""Images in chat requests, over real HTTP: each provider's wire format, and g4f's arguments.

The fake server checks image parts as the real APIs do (OpenAI: a base64 data URL or an http
URL; Anthropic: `image` blocks only, base64 of a listed media type), so a part sent in the
wrong format fails here as it would in production.
"""

from __future__ import annotations

import base64

import httpx
import pytest

from core import AsyncClient, Client, errors
from core.config import CoreSettings
from core.content import IMAGE_CHARS
from core.providers import Anthropic, OpenAICompatible
from core.providers.registry import ProviderRegistry
from tests.core_support import SECRET, ScriptedProvider, ThreadedServer, collect, contents
from tests.fakes.llm_server import GENERATED_PNG, FakeLLMServer, Script

PNG_B64 = base64.b64encode(GENERATED_PNG).decode()
PNG_URL = f"data:image/png;base64,{PNG_B64}"
QUESTION = [
    {"role": "system", "content": "Describe images."},
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "what is this?"},
            {"type": "image_url", "image_url": {"url": PNG_URL}},
        ],
    },
]


@pytest.mark.parametrize("stream", [False, True])
async def test_openai_compatible_sends_the_parts_as_they_are(server, stream) -> None:
    client = AsyncClient(OpenAICompatible("Local", server.base_url, max_retries=0))
    if stream:
        chunks = await collect(
            client.chat.completions.create(QUESTION, model="fake-model", stream=True)
        )
        assert "".join(c for c in contents(chunks) if c) == "echo: what is this?"
    else:
        completion = await client.chat.completions.create(QUESTION, model="fake-model")
        assert completion.choices[0].message.content == "echo: what is this?"
    assert server.requests[0].json["messages"] == QUESTION
    assert server.image_parts == [QUESTION[1]["content"][1]]


async def test_ollama_takes_image_url_parts_through_its_v1_endpoint(server) -> None:
    """Parley talks to Ollama at its OpenAI-compatible /v1, which reads base64 `image_url`
    parts itself: the preset needs no format of its own."""
    registry = ProviderRegistry.from_settings(CoreSettings(ollama_base_url=server.base_url))
    client = AsyncClient(registry=registry)
    completion = await client.chat.completions.create(QUESTION, model="llava:7b", provider="Ollama")
    assert completion.provider == "Ollama"
    assert server.requests[0].path == "/v1/chat/completions"
    assert server.image_parts == [{"type": "image_url", "image_url": {"url": PNG_URL}}]


@pytest.mark.parametrize("stream", [False, True])
async def test_anthropic_gets_base64_image_blocks_and_its_system_prompt(stream) -> None:
    async with FakeLLMServer(require_key=SECRET) as server:
        client = AsyncClient(Anthropic(SECRET, base_url=server.anthropic_base_url, max_retries=0))
        server.enqueue(Script(pieces=["A", " dot"]))
        if stream:
            chunks = await collect(
                client.chat.completions.create(QUESTION, model="claude-fake", stream=True)
            )
            text = "".join(c for c in contents(chunks) if c)
        else:
            completion = await client.chat.completions.create(QUESTION, model="claude-fake")
            text = completion.choices[0].message.content
        assert text == "A dot"
        body = server.requests[0].json
    assert body["system"] == "Describe images."
    assert body["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is this?"},
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64},
                },
            ],
        }
    ]


async def test_the_fake_anthropic_refuses_an_unconverted_openai_part() -> None:
    """The check that makes the test above mean something: Anthropic has no `image_url`."""
    body = {"model": "claude-fake", "max_tokens": 10, "messages": QUESTION[1:]}
    async with FakeLLMServer() as server, httpx.AsyncClient() as http:
        answer = await http.post(
            f"{server.anthropic_base_url}/messages",
            json=body,
            headers={"anthropic-version": "2023-06-01"},
        )
    assert answer.status_code == 400
    assert "image_url" in answer.json()["error"]["message"]


async def test_g4f_image_arguments_reach_the_server_as_image_parts(server, tmp_path) -> None:
    path = tmp_path / "dot.png"
    path.write_bytes(GENERATED_PNG)
    client = AsyncClient(OpenAICompatible("Local", server.base_url, max_retries=0))
    messages = [{"role": "user", "content": "compare these"}]
    completion = await client.chat.completions.create(
        messages,
        model="fake-model",
        image=GENERATED_PNG,
        images=[(str(path), "dot.png"), ("https://example.com/b.png", "b.png")],
    )
    assert completion.choices[0].message.content == "echo: compare these"
    assert messages == [{"role": "user", "content": "compare these"}]
    sent = server.requests[0].json
    assert set(sent) == {"model", "messages"}  # image/images are not forwarded as fields
    assert sent["messages"][0]["content"][0] == {"type": "text", "text": "compare these"}
    assert [part["image_url"]["url"] for part in server.image_parts] == [
        PNG_URL,
        PNG_URL,
        "https://example.com/b.png",
    ]


def test_the_sync_client_takes_an_image_too() -> None:
    with ThreadedServer() as server:
        client = Client(OpenAICompatible("Local", server.base_url, max_retries=0))
        completion = client.chat.completions.create("what is it?", image=GENERATED_PNG)
        assert completion.choices[0].message.content == "echo: what is it?"
        assert [part["image_url"]["url"] for part in server.image_parts] == [PNG_URL]


async def test_a_broken_image_fails_before_any_request(server) -> None:
    client = AsyncClient(OpenAICompatible("Local", server.base_url, max_retries=0))
    with pytest.raises(errors.InvalidRequestError, match="not a JPEG, PNG, GIF or WebP"):
        await client.chat.completions.create("look", image=b"not an image")
    assert server.requests == []


async def test_the_usage_estimate_counts_an_image_as_a_fixed_weight() -> None:
    provider = ScriptedProvider(["four"])  # reports no usage: the client estimates
    client = AsyncClient(provider)
    completion = await client.chat.completions.create(QUESTION)
    chars = len("Describe images.") + len("what is this?") + IMAGE_CHARS
    assert completion.usage.estimated
    assert completion.usage.prompt_tokens == -(-chars // 4)
    assert completion.usage.completion_tokens == 1
