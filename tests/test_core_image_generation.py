"""`client.images.generate` (sync and async) against the fake server's /images/generations."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import httpx
import pytest

from core import AsyncClient, Client, errors
from core.config import CoreSettings
from core.image_api import data_url_of
from core.providers import Anthropic, IterListProvider, OpenAICompatible
from core.providers.registry import ProviderRegistry
from core.types import ImagesResponse
from tests.core_support import SECRET, ThreadedServer, closed_port
from tests.fakes.llm_server import GENERATED_PNG, FakeLLMServer, Script

REFUSAL = Script(
    status=400,
    error_code="content_policy_violation",
    error_message="Your request was rejected as a result of our safety system.",
)


@pytest.fixture
async def keyed() -> AsyncIterator[FakeLLMServer]:
    async with FakeLLMServer(require_key=SECRET, models={"image-model", "gpt-image-1"}) as fake:
        yield fake


def provider_at(server: FakeLLMServer, **options: object) -> OpenAICompatible:
    return OpenAICompatible("Draw", server.base_url, SECRET, max_retries=0, **options)


async def test_b64_json_images_come_back_decoded_as_the_server_sent_them(keyed) -> None:
    client = AsyncClient(provider_at(keyed))
    answer = await client.images.generate(
        "a red dot", model="image-model", response_format="b64_json", n=2, size="256x256"
    )
    assert isinstance(answer, ImagesResponse)
    assert (answer.model, answer.provider, len(answer.data)) == ("image-model", "Draw", 2)
    # The server answered URLs (its default); the client fetched them, as g4f's does.
    assert all(base64.b64decode(image.b64_json) == GENERATED_PNG for image in answer.data)
    assert answer.data[0].revised_prompt == "a red dot"
    request = keyed.requests[0]
    assert request.path == "/v1/images/generations"
    assert request.headers["authorization"] == f"Bearer {SECRET}"
    assert request.json == {  # no response_format: some servers refuse it
        "prompt": "a red dot",
        "model": "image-model",
        "n": 2,
        "size": "256x256",
    }
    assert answer.model_dump()["data"][0]["b64_json"] == answer.data[0].b64_json


async def test_a_url_image_can_be_fetched_from_where_the_server_put_it(keyed) -> None:
    client = AsyncClient(provider_at(keyed))
    answer = await client.images.generate("a dot", model="image-model", response_format="url")
    url = answer.data[0].url
    assert url is not None and url.startswith(keyed.root_url)
    async with httpx.AsyncClient() as http:
        fetched = await http.get(url)
    assert fetched.content == GENERATED_PNG


async def test_the_model_routes_the_prompt_and_an_empty_model_is_left_to_the_server(
    tmp_path, monkeypatch, keyed
) -> None:
    path = tmp_path / "providers.toml"
    path.write_text(
        f'[[provider]]\nname = "Art"\nbase_url = "{keyed.base_url}"\n'
        f'api_key_env = "ART_KEY"\nmodels = ["image-*"]\n',
        encoding="utf-8",
    )
    monkeypatch.setenv("ART_KEY", SECRET)
    registry = ProviderRegistry.from_settings(CoreSettings(providers_file=path))
    answer = await AsyncClient(registry=registry).images.generate("a dot", model="image-model")
    assert answer.provider == "Art"
    async with FakeLLMServer() as default:
        plain = AsyncClient(OpenAICompatible("Plain", default.base_url))
        await plain.images.generate("a dot")
        assert "model" not in default.requests[0].json


def test_the_sync_client_draws_too() -> None:
    with ThreadedServer() as server:
        client = Client(OpenAICompatible("Local", server.base_url))
        answer = client.images.generate("a dot", model="m", response_format="b64_json")
        assert base64.b64decode(answer.data[0].b64_json) == GENERATED_PNG


async def test_a_refused_prompt_has_its_own_error_and_hint(keyed) -> None:
    keyed.image_scripts.append(REFUSAL)
    client = AsyncClient(provider_at(keyed))
    with pytest.raises(errors.ContentPolicyError) as caught:
        await client.images.generate("something forbidden", model="image-model")
    error = caught.value
    assert isinstance(error, errors.ResponseStatusError) and error.status_code == 400
    assert "safety system" in str(error)
    assert error.provider == "Draw"
    assert "refused this prompt" in errors.describe(error)


@pytest.mark.parametrize(
    ("client_args", "call", "error"),
    [
        ({"api_key": "sk-wrong"}, {"model": "image-model"}, errors.MissingAuthError),
        ({}, {"model": "no-such-model"}, errors.ModelNotFoundError),
        ({}, {"model": "image-model", "n": 11}, errors.ResponseStatusError),
    ],
)
async def test_server_errors_map_to_the_core_errors(keyed, client_args, call, error) -> None:
    client = AsyncClient(provider_at(keyed), **client_args)
    with pytest.raises(error):
        await client.images.generate("a dot", **call)


async def test_a_5xx_is_retried_before_giving_up(keyed) -> None:
    keyed.image_scripts.append(Script(status=503, headers={"Retry-After": "0"}))
    retrying = OpenAICompatible("Draw", keyed.base_url, SECRET, max_retries=1)
    answer = await AsyncClient(retrying).images.generate("a dot", model="image-model")
    assert len(keyed.requests) == 2 and answer.data[0].url


def raw_answer(body: bytes) -> Script:
    return Script(raw_sse=body, headers={"Content-Type": "application/json"})


async def test_a_url_asked_for_and_only_data_given_becomes_a_data_url(server) -> None:
    """A server may ignore `response_format` and send data only (OpenAI's gpt-image-1
    always does): `.url` is then a data URL of it, so a caller asking for URLs gets one."""
    png = base64.b64encode(GENERATED_PNG)
    server.image_scripts.append(
        raw_answer(b'{"created": 1, "data": [{"b64_json": "' + png + b'"}]}')
    )
    client = AsyncClient(OpenAICompatible("Local", server.base_url, max_retries=0))
    answer = await client.images.generate("x", response_format="url")
    assert answer.data[0].url == "data:image/png;base64," + png.decode()
    assert answer.data[0].b64_json == png.decode()
    assert data_url_of(base64.b64encode(b"\xff\xd8\xff\xe0").decode()).startswith(
        "data:image/jpeg;"
    )


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b'{"created": 1, "data": []}', errors.EmptyResponseError),
        (b'{"created": 1, "data": [{}]}', errors.EmptyResponseError),
        (b"<html>gateway</html>", errors.ResponseStatusError),
        (b'{"created": 1}', errors.ResponseStatusError),
    ],
)
async def test_an_answer_without_images_is_an_error(server, body, error) -> None:
    server.image_scripts.append(raw_answer(body))
    client = AsyncClient(OpenAICompatible("Local", server.base_url, max_retries=0))
    with pytest.raises(error):
        await client.images.generate("x")


async def test_a_fallback_list_moves_past_a_dead_server_but_not_past_a_refusal(keyed) -> None:
    dead = OpenAICompatible("Dead", f"http://127.0.0.1:{closed_port()}/v1", max_retries=0)
    client = AsyncClient(IterListProvider([dead, provider_at(keyed)]))
    answer = await client.images.generate("a dot", model="image-model")
    assert answer.provider == "Draw"
    keyed.image_scripts.append(REFUSAL)
    async with FakeLLMServer() as other:
        refusing_first = AsyncClient(
            IterListProvider([provider_at(keyed), OpenAICompatible("Other", other.base_url)])
        )
        with pytest.raises(errors.ContentPolicyError):
            await refusing_first.images.generate("forbidden", model="image-model")
        assert other.requests == []


async def test_what_cannot_draw_says_so(server) -> None:
    anthropic = AsyncClient(Anthropic("k", base_url=server.anthropic_base_url))
    with pytest.raises(errors.ConfigurationError, match="does not draw images"):
        await anthropic.images.generate("a dot", model="claude-x")
    keyless = AsyncClient(OpenAICompatible("Keyless", server.base_url, needs_auth=True))
    with pytest.raises(errors.ProviderNotWorkingError):
        await keyless.images.generate("a dot")
    with pytest.raises(errors.InvalidRequestError, match="needs a prompt"):
        await AsyncClient(OpenAICompatible("L", server.base_url)).images.generate("  ")
    assert server.requests == []


@pytest.mark.parametrize("response_format", ["url", "b64_json"])
async def test_a_gpt_image_model_that_refuses_the_parameter_still_answers_either_form(
    keyed, response_format: str
) -> None:
    """OpenAI's gpt-image models answer data only and refuse `response_format` with a 400."""
    client = AsyncClient(provider_at(keyed))
    answer = await client.images.generate(
        "a dot", model="gpt-image-1", response_format=response_format
    )
    image = answer.data[0]
    assert image.b64_json is not None and base64.b64decode(image.b64_json) == GENERATED_PNG
    if response_format == "url":
        assert image.url == "data:image/png;base64," + image.b64_json
