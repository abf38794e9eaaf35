"""The models `/model` offers when it is given no name: a keyboard on Telegram, autocomplete on
Discord. Nobody should need to know a model's exact spelling to switch to one the operator set
up, so the menu lists what the configuration names: DEFAULT_MODEL, each working provider's
default model, the providers file's routes that name one model (a pattern such as `qwen-*` is
not a model), and the personas' models. A name typed after /model is still taken as before,
listed here or not.
"""

from __future__ import annotations

from collections.abc import Iterable

from core.chat_settings import MODEL_NAME
from core.personas import Personas
from core.providers.registry import ProviderRegistry

#: Characters that make a route a pattern rather than one model's name (`fnmatch`).
_WILDCARDS = frozenset("*?[")


def offered_models(registry: ProviderRegistry, personas: Personas | None = None) -> list[str]:
    """The configured models, the operator's default first, each once, in a stable order."""
    names: list[str | None] = [registry.settings.default_model]
    names += [
        getattr(provider, "default_model", None)
        for provider in registry
        if getattr(provider, "working", False)
    ]
    names += [pattern for pattern, _ in registry.routes]
    names += [persona.model for persona in personas or ()]
    return _usable(names)


def _usable(names: Iterable[str | None]) -> list[str]:
    """Each name once, leaving out patterns and what `/model` would refuse anyway."""
    seen: dict[str, None] = {}
    for name in names:
        if name and not _WILDCARDS & set(name) and MODEL_NAME.fullmatch(name):
            seen.setdefault(name, None)
    return list(seen)


def matching(models: Iterable[str], typed: str, limit: int) -> list[str]:
    """Up to `limit` of `models` containing `typed`, any case (autocomplete)."""
    needle = typed.strip().casefold()
    return [name for name in models if needle in name.casefold()][:limit]
