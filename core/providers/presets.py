"""The documented APIs Parley knows by name, built from the operator's settings.

Hosted presets work once their key is set. Local servers (Ollama, LM Studio, llama.cpp,
vLLM) work once their address is set: an unconfigured local server is as unavailable as a
missing key, and probing localhost ports nobody asked for would only produce noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict
from urllib.parse import urlsplit

from ..config import CoreSettings
from .anthropic import Anthropic
from .base import BaseProvider
from .openai_compatible import OpenAICompatible

OPENAI_HOST = "api.openai.com"


@dataclass(frozen=True)
class HostedPreset:
    name: str
    base_url: str
    key_field: str
    models: tuple[str, ...] = ()


@dataclass(frozen=True)
class LocalPreset:
    name: str
    url_field: str
    default_url: str


HOSTED = (
    HostedPreset("OpenRouter", "https://openrouter.ai/api/v1", "openrouter_api_key"),
    HostedPreset("Groq", "https://api.groq.com/openai/v1", "groq_api_key"),
    HostedPreset("Together", "https://api.together.xyz/v1", "together_api_key"),
    HostedPreset("DeepSeek", "https://api.deepseek.com/v1", "deepseek_api_key", ("deepseek-*",)),
    HostedPreset(
        "Mistral",
        "https://api.mistral.ai/v1",
        "mistral_api_key",
        ("mistral-*", "open-mistral-*", "codestral-*", "ministral-*", "magistral-*"),
    ),
    HostedPreset(
        "Gemini",
        "https://generativelanguage.googleapis.com/v1beta/openai",
        "gemini_api_key",
        ("gemini-*",),
    ),
)

LOCAL = (
    LocalPreset("Ollama", "ollama_base_url", "http://localhost:11434/v1"),
    LocalPreset("LMStudio", "lmstudio_base_url", "http://localhost:1234/v1"),
    LocalPreset("LlamaCpp", "llamacpp_base_url", "http://localhost:8080/v1"),
    LocalPreset("VLLM", "vllm_base_url", "http://localhost:8000/v1"),
)


def _secret(settings: CoreSettings, field: str) -> str | None:
    value = getattr(settings, field)
    return value.get_secret_value() if value is not None else None


class NetworkOptions(TypedDict):
    """The keyword arguments of `HTTPProvider` that come from the network settings."""

    connect_timeout: float
    read_timeout: float
    max_retries: int


def network_options(settings: CoreSettings) -> NetworkOptions:
    """The settings every HTTP provider takes, presets and providers-file entries alike."""
    return {
        "connect_timeout": settings.connect_timeout,
        "read_timeout": settings.read_timeout,
        "max_retries": settings.max_retries,
    }


def default_provider(settings: CoreSettings) -> OpenAICompatible:
    """`OPENAI_BASE_URL`: OpenAI itself, or any OpenAI-compatible endpoint the operator names.

    Only OpenAI's own host insists on a key; a local or self-hosted endpoint may have none.
    """
    host = urlsplit(settings.openai_base_url).hostname or ""
    return OpenAICompatible(
        "OpenAI",
        settings.openai_base_url,
        _secret(settings, "openai_api_key"),
        default_model=settings.default_model,
        needs_auth=host == OPENAI_HOST,
        key_env="OPENAI_API_KEY",
        **network_options(settings),
    )


def preset_providers(settings: CoreSettings) -> list[BaseProvider]:
    """Every named preset except the default provider, configured or not."""
    providers: list[BaseProvider] = []
    for preset in HOSTED:
        providers.append(
            OpenAICompatible(
                preset.name,
                preset.base_url,
                _secret(settings, preset.key_field),
                models=list(preset.models),
                needs_auth=True,
                key_env=preset.key_field.upper(),
                **network_options(settings),
            )
        )
    providers.append(Anthropic(_secret(settings, "anthropic_api_key"), **network_options(settings)))
    for local in LOCAL:
        configured = getattr(settings, local.url_field)
        provider = OpenAICompatible(
            local.name, configured or local.default_url, **network_options(settings)
        )
        provider.working = configured is not None
        providers.append(provider)
    return providers
