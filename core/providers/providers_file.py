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
[models."qwen-*"]                    # prices in USD, overruling `core.pricing.PRICE_PRESETS`
input = 0.40                         # per million prompt tokens
output = 1.20                        # per million completion tokens
image = 0.001                        # per image sent to the model (beyond its tokens)
audio_minute = 0.006                 # per minute of audio transcribed
generated_image = 0.04               # per image drawn
[models."llama3.1:*"]                # tokens, overruling `core.models.CONTEXT_PRESETS`
context_window = 16384               # what the server runs it with (Ollama's num_ctx)
output_reserve = 2048                # kept free for the answer
```

Which models take images is decided in that order: the first `[models]` pattern that matches
(in file order), then the `vision` of the provider the model is routed to, then the presets.
A `[models]` entry may give vision, prices, a context window or any of them; a price left out of an entry is 0. Prices
are checked here, where the operator can be told which key is wrong: a number of dollars from
0 to `MAX_PRICE_USD`; a window a whole number of tokens from `MIN_CONTEXT_WINDOW` to
`MAX_CONTEXT_WINDOW`, a reserve one below the window.
"""

from __future__ import annotations

import math
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
    #: (pattern, {price key: USD}) from the `[models]` tables that give prices, in file order.
    prices: list[tuple[str, dict[str, float]]] = field(default_factory=list)
    #: (pattern, context window, output reserve) from the `[models]` tables that give either
    #: (the other None), in file order.
    windows: list[tuple[str, int | None, int | None]] = field(default_factory=list)


#: The price keys of a `[models]` entry (USD; `core.pricing.Price` says what each is per).
PRICE_KEYS = ("input", "output", "image", "audio_minute", "generated_image")
#: Above this a price is a typo (cents for dollars, a missing decimal point), not a price: the
#: dearest model listed costs a few hundred dollars per million tokens.
MAX_PRICE_USD = 10_000.0
#: The context keys of a `[models]` entry, in tokens.
CONTEXT_KEYS = ("context_window", "output_reserve")
#: Below this no system prompt and question fit; above it is a typo (the largest windows
#: offered are a few million tokens).
MIN_CONTEXT_WINDOW = 512
MAX_CONTEXT_WINDOW = 100_000_000


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


def _price(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{where} must be a number of dollars, not {value!r}")
    if not math.isfinite(value) or value < 0 or value > MAX_PRICE_USD:
        raise ValueError(f"{where} must be from 0 to {MAX_PRICE_USD:,.0f} dollars, not {value!r}")
    return float(value)


def _tokens(value: Any, where: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{where} must be a whole number of tokens, not {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{where} must be from {low:,} to {high:,} tokens, not {value:,}")
    return value


def _context(entry: dict[str, Any], where: str) -> tuple[int | None, int | None]:
    """(window, reserve) of a `[models]` entry, each None when not given."""
    window = entry.get("context_window")
    if window is not None:
        window = _tokens(window, f"{where} context_window", MIN_CONTEXT_WINDOW, MAX_CONTEXT_WINDOW)
    reserve = entry.get("output_reserve")
    if reserve is not None:
        most = (window or MAX_CONTEXT_WINDOW) - 1
        reserve = _tokens(reserve, f"{where} output_reserve", 0, most)
    return window, reserve


Entries = tuple[
    list[tuple[str, bool]],
    list[tuple[str, dict[str, float]]],
    list[tuple[str, int | None, int | None]],
]


def _model_entries(table: Any) -> Entries:
    """The `[models]` tables: (pattern, vision), (pattern, prices) and (pattern, window,
    reserve) entries, in file order."""
    if not isinstance(table, dict):
        raise ValueError("[models] must be a table of model names or patterns")
    vision_of: list[tuple[str, bool]] = []
    prices_of: list[tuple[str, dict[str, float]]] = []
    windows_of: list[tuple[str, int | None, int | None]] = []
    for pattern, entry in table.items():
        where = f"[models.{pattern!r}]"
        if not isinstance(entry, dict):  # `"pattern" = true` is vision alone
            vision = _vision(entry, pattern)
            if vision is None:
                raise ValueError(f"{where} needs vision = true or false, or prices")
            vision_of.append((pattern, vision))
            continue
        unknown = sorted(set(entry) - {"vision", *PRICE_KEYS, *CONTEXT_KEYS})
        if unknown:
            known = ", ".join(("vision", *PRICE_KEYS, *CONTEXT_KEYS))
            raise ValueError(f"{where} has an unknown key {unknown[0]!r} (known: {known})")
        vision = _vision(entry.get("vision"), pattern)
        prices = {key: _price(entry[key], f"{where} {key}") for key in PRICE_KEYS if key in entry}
        window, reserve = _context(entry, where)
        if vision is None and not prices and window is None and reserve is None:
            raise ValueError(
                f"{where} needs vision = true or false, or prices, or a context_window"
            )
        if vision is not None:
            vision_of.append((pattern, vision))
        if prices:
            prices_of.append((pattern, prices))
        if window is not None or reserve is not None:
            windows_of.append((pattern, window, reserve))
    return vision_of, prices_of, windows_of


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
        vision, prices, windows = _model_entries(data.get("models", {}))
        return ProvidersFile(
            providers=[_provider(entry, settings) for entry in data.get("provider", [])],
            routes=[
                (pattern, _names(target, f"route {pattern!r}"))
                for pattern, target in data.get("routes", {}).items()
            ],
            fallback=_names(data.get("fallback", []), "fallback"),
            vision=vision,
            prices=prices,
            windows=windows,
        )
    except (KeyError, ValueError, TypeError) as exc:
        detail = f"missing key {exc}" if isinstance(exc, KeyError) else str(exc)
        raise errors.ProvidersFileError(
            f"The providers file {path} is invalid: {detail}."
        ) from None
