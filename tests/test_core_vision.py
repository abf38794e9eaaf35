"""Which models take images: the presets, the providers file, and `client.sees_images`."""

from __future__ import annotations

import pytest

from core import AsyncClient, Client, errors, models
from core.config import CoreSettings
from core.providers import OpenAICompatible
from core.providers.registry import ProviderRegistry
from tests.core_support import ScriptedProvider

#: Names that take images, as each provider spells them.
SEES = [
    *("gpt-4o", "gpt-4o-mini", "gpt-4o-2024-08-06", "GPT-4.1-nano", "gpt-4.1", "gpt-5"),
    *("gpt-5-mini", "gpt-4-turbo", "o1", "o1-2024-12-17", "o3", "o3-pro", "o4-mini"),
    *("claude-3-5-sonnet-latest", "claude-3-haiku-20240307", "claude-sonnet-4-5"),
    *("claude-opus-4-1", "anthropic/claude-sonnet-4", "gemini-2.5-flash", "gemini-1.5-pro"),
    *("pixtral-12b-2409", "mistralai/pixtral-large-2411"),
    *("llava:13b", "llava-llama3", "bakllava", "minicpm-v:8b", "moondream"),
    *("llama3.2-vision:11b", "meta-llama/llama-3.2-11b-vision-instruct", "llama4:scout"),
    *("qwen2.5vl:7b", "qwen/qwen2.5-vl-72b-instruct", "Qwen/Qwen2.5-VL-7B-Instruct"),
    *("qwen2-vl-7b-instruct", "qwen3-vl:8b", "granite3.2-vision", "granite3.2-vision:2b"),
    *("gemma3", "gemma3:4b", "gemma3:12b", "gemma3:27b-it-qat", "google/gemma-3-27b-it"),
    "openai/gpt-4o",  # OpenRouter's vendor prefix
    models.gpt_4o,
]
#: Names that do not, some of them close to one that does.
BLIND = [
    *("gpt-3.5-turbo", "gpt-4", "gpt-4-0613", "o1-mini", "o1-preview", "o3-mini", "o3-mini-high"),
    *("gpt-4o-audio-preview", "gpt-4o-realtime-preview", "gpt-4o-mini-tts"),
    *("llama3.1:8b", "llama3.2:3b", "gemma3:1b", "gemma3:270m", "google/gemma-3-1b-it"),
    *("gemma2:9b", "mistral:7b", "mistral-large", "deepseek-r1", "deepseek-r1:14b"),
    *("deepseek-chat", "qwen2.5:7b", "qwen3:8b", "granite3.1-dense", "gemini-pro"),
    "text-embedding-3-small",
]


@pytest.mark.parametrize("name", SEES, ids=str)
def test_presets_know_well_known_vision_models(name) -> None:
    assert models.sees_images(name)


@pytest.mark.parametrize("name", BLIND, ids=str)
def test_text_only_models_do_not_see(name) -> None:
    assert not models.sees_images(name)


def registry_from(tmp_path, text: str, **settings: object) -> ProviderRegistry:
    path = tmp_path / "providers.toml"
    path.write_text(text, encoding="utf-8")
    return ProviderRegistry.from_settings(CoreSettings(providers_file=path, **settings))


def test_the_providers_file_declares_and_overrules(tmp_path) -> None:
    registry = registry_from(
        tmp_path,
        """
[[provider]]
name = "Lab"
base_url = "http://127.0.0.1:9/v1"
models = ["lab-*"]
vision = true

[[provider]]
name = "Blind"
base_url = "http://127.0.0.1:9/v1"
models = ["gemma3-text*"]
vision = false

[models."lab-text-*"]
vision = false
[models."my-llava"]
vision = true
[models."gpt-4o-audio*"]
vision = false
""",
    )
    assert registry.sees_images("lab-vl-7b")  # its provider says so
    assert not registry.sees_images("lab-text-1")  # the model's own entry wins over it
    assert registry.sees_images("MY-LLAVA")  # routed to the default, declared per model
    assert not registry.sees_images("gpt-4o-audio-preview")  # a preset overruled
    assert registry.sees_images("gpt-4o")  # presets still apply
    assert not registry.sees_images("gemma3-text-2b")  # the provider overrules the preset
    assert not registry.sees_images("qwen-7b")


@pytest.mark.parametrize(
    ("text", "detail"),
    [
        ('[models."x"]\nvision = "yes"\n', "vision must be true or false"),
        ('[models."x"]\nother = 1\n', "unknown key 'other'"),
        ('[models."x"]\n', "needs vision = true or false, or prices"),
        ('[[provider]]\nname = "P"\nbase_url = "http://h/v1"\nvision = 1\n', "provider 'P'"),
    ],
)
def test_a_bad_vision_entry_is_a_clear_error(tmp_path, text, detail) -> None:
    with pytest.raises(errors.ProvidersFileError, match=detail):
        registry_from(tmp_path, text)


def test_the_client_answers_for_its_routing_and_default_model(tmp_path) -> None:
    registry = registry_from(
        tmp_path,
        '[models."house-model"]\nvision = true\n',
        default_model="house-model",
    )
    client = AsyncClient(registry=registry)
    assert client.sees_images()  # "" is the default model
    assert client.sees_images(models.default) is client.sees_images("house-model")
    assert not client.sees_images("gpt-3.5-turbo")
    assert Client(registry=registry).sees_images("claude-sonnet-4-5")


def test_a_clients_own_provider_decides_over_the_presets() -> None:
    blind = OpenAICompatible("Blind", "http://127.0.0.1:9/v1", vision=False)
    assert not AsyncClient(blind).sees_images("gpt-4o")
    seeing = OpenAICompatible("Seeing", "http://127.0.0.1:9/v1", vision=True)
    assert AsyncClient(seeing).sees_images("anything")
    # A provider that declares nothing leaves it to the presets.
    assert AsyncClient(ScriptedProvider()).sees_images("gpt-4o")
    assert not AsyncClient(ScriptedProvider()).sees_images("gpt-4")
