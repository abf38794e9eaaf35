"""Providers: one async-generator method each, plus fallback and the registry of presets."""

from .anthropic import Anthropic
from .base import BaseProvider, ProviderLike, provider_name
from .fallback import IterListProvider, RetryProvider
from .openai_compatible import OpenAICompatible
from .registry import Provider, ProviderRegistry, get_providers

__all__ = [
    "Anthropic",
    "BaseProvider",
    "IterListProvider",
    "OpenAICompatible",
    "Provider",
    "ProviderLike",
    "ProviderRegistry",
    "RetryProvider",
    "get_providers",
    "provider_name",
]
