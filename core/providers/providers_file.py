"""The optional providers file (TOML): extra providers, model routes and fallback order.

```toml
fallback = ["OpenAI", "Groq"]        # tried in order for models no route claims

[[provider]]
name = "Work"
type = "openai"                      # "openai" (any compatible endpoint) or "anthropic"
base_url = "https://llm.example.com/v1"
api_key_env = "WORK_LLM_KEY"         # the key is read from this variable, never from the file
models = ["qwen-*"]                  # names (fnmatch patterns) this provider claims
default_model = "qwen-72b"
vision = true                        # the models routed here take images (optional)

[routes]
"gpt-4o" = ["OpenAI", "OpenRouter"]  # a list is a fallback order
"claude-*" = "Anthropic"

[models."qwen2.5-vl-*"]              # per model name or pattern, wherever it is routed
vision = true
[models."gpt-4o-audio*"]
vision = false                       # overrules a preset (`core.models.VISION_PRESETS`)
```

Which models take images is decided in that order: the first `[models]` pattern that matches
(in file order), then the `vision` of the provider the model is routed to, then the presets.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import errors
from ..config import CoreSettings, env_secret
from .anthropic import ANTHROPIC_BASE_URL, Anthropic
from .base import BaseProvider
from .openai_compatible import OpenAICompatible
from .presets import network_options


@dataclass
class ProvidersFile:
    providers: list[BaseProvider] = field(default_factory=list)
    routes: list[tuple[str, list[str]]] = field(default_factory=list)
    fallback: list[str] = field(default_factory=list)
    #: (pattern, takes images) from the `[models]` tables, in file order.
    vision: list[tuple[str, bool]] = field(default_factory=list)


def _names(value: Any, where: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ValueError(f"{where} must be a provider name or a list of names")


def _vision(value: Any, where: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise ValueError(f"{where}: vision must be true or false, not {value!r}")


def _model_vision(table: Any) -> list[tuple[str, bool]]:
    if not isinstance(table, dict):
        raise ValueError("[models] must be a table of model names or patterns")
    declared = []
    for pattern, entry in table.items():
        vision = _vision(entry.get("vision") if isinstance(entry, dict) else entry, pattern)
        if vision is None:
            raise ValueError(f"[models.{pattern!r}] needs vision = true or false")
        declared.append((pattern, vision))
    return declared


def _provider(entry: dict[str, Any], settings: CoreSettings) -> BaseProvider:
    if "api_key" in entry:
        raise ValueError("keys do not belong in the file: use api_key_env = 'VARIABLE_NAME'")
    name = entry["name"]
    key_env = entry.get("api_key_env")
    key = env_secret(key_env) if key_env else None
    common: dict[str, Any] = {
        "default_model": entry.get("default_model"),
        "models": entry.get("models"),
        "key_env": key_env or f"api_key_env for {name}",
        "vision": _vision(entry.get("vision"), f"provider {name!r}"),
        **network_options(settings),
    }
    kind = entry.get("type", "openai")
    if kind == "anthropic":
        return Anthropic(
            key, name=name, base_url=entry.get("base_url", ANTHROPIC_BASE_URL), **common
        )
    if kind == "openai":
        return OpenAICompatible(
            name,
            entry["base_url"],
            key,
            headers=entry.get("headers"),
            needs_auth=bool(key_env),
            **common,
        )
    raise ValueError(f"provider {name!r}: type must be 'openai' or 'anthropic', not {kind!r}")


def load_providers_file(path: Path, settings: CoreSettings) -> ProvidersFile:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise errors.ProvidersFileError(
            f"Cannot read the providers file {path}: {exc.strerror}."
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise errors.ProvidersFileError(
            f"The providers file {path} is not valid TOML: {exc}."
        ) from None
    try:
        return ProvidersFile(
            providers=[_provider(entry, settings) for entry in data.get("provider", [])],
            routes=[
                (pattern, _names(target, f"route {pattern!r}"))
                for pattern, target in data.get("routes", {}).items()
            ],
            fallback=_names(data.get("fallback", []), "fallback"),
            vision=_model_vision(data.get("models", {})),
        )
    except (KeyError, ValueError, TypeError) as exc:
        detail = f"missing key {exc}" if isinstance(exc, KeyError) else str(exc)
        raise errors.ProvidersFileError(
            f"The providers file {path} is invalid: {detail}."
        ) from None
