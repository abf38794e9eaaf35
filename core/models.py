"""Model names, as g4f's `models` module offers them.

Parley does not keep a catalogue of every model a provider serves: a model is its name, and
the name is routed to a provider (see `core.providers.registry`). Which names can see images
is the one thing known of a model by its name alone: `VISION_PRESETS` below, which the
providers file can extend or overrule (`ProviderRegistry.sees_images`). `models.default` follows the
`DEFAULT_MODEL` setting at the moment it is read, so code written as
`model=models.default` picks up the operator's choice. Printed, it shows the process-wide
setting; passed to a client built from other settings (`client_for(settings)`), it means
those settings' default, as `""` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

from .config import CoreSettings, get_settings


@dataclass(frozen=True, slots=True)
class Model:
    name: str
    base_provider: str = ""

    def __str__(self) -> str:
        return self.name


class _DefaultModel(Model):
    """The configured default; its name is looked up on every read."""

    def __init__(self) -> None:
        pass

    @property
    def name(self) -> str:
        return get_settings().default_model

    @property
    def base_provider(self) -> str:
        return ""

    def __repr__(self) -> str:
        return f"models.default({self.name!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Model) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)


default: Model = _DefaultModel()

gpt_4o = Model("gpt-4o", "OpenAI")
gpt_4o_mini = Model("gpt-4o-mini", "OpenAI")
gpt_4 = Model("gpt-4", "OpenAI")
claude_sonnet = Model("claude-sonnet-4-5", "Anthropic")
llama_3_1_8b = Model("llama3.1:8b", "Ollama")


def model_name(model: str | Model | None, settings: CoreSettings | None = None) -> str:
    """The name to send to a provider; `""`, `None` and `models.default` mean the default model
    of `settings` (a registry's, a client's), or of the process-wide settings when none is given."""
    if model is None or model == "" or model is default:
        return (settings if settings is not None else get_settings()).default_model
    return model.name if isinstance(model, Model) else str(model)


#: Name patterns (fnmatch, matched case-insensitively against the name after any
#: "vendor/" prefix, so OpenRouter's "openai/gpt-4o" and Ollama's "llava:13b" match too) of
#: well-known model families that take images. Short on purpose: a family is listed when all
#: its current chat models see; anything else is declared in the providers file
#: (`vision = true`), which also overrules a preset with `vision = false`.
VISION_PRESETS: tuple[str, ...] = (
    "gpt-4o*",  # OpenAI GPT-4o and -mini (not gpt-4o-audio, which no chat bot routes to)
    "gpt-4.1*",
    "gpt-5*",
    "claude-3*",  # Anthropic Claude 3 and 3.5/3.7
    "claude-*-4*",  # Claude 4 names: claude-sonnet-4-5, claude-opus-4-1, ...
    "gemini-*",
    "pixtral*",  # Mistral
    "llava*",  # Ollama's vision models from here on
    "llama3.2-vision*",
    "qwen2.5vl*",
    "gemma3*",
)


def _names(model: str | Model) -> tuple[str, str]:
    """The folded name, and its part after any "vendor/" prefix."""
    name = (model.name if isinstance(model, Model) else model).casefold()
    return name, name.rsplit("/", 1)[-1]


def declared_vision(model: str | Model, declared: Sequence[tuple[str, bool]]) -> bool | None:
    """What the first of `declared` (pattern, takes images) pairs matching `model` says, or
    None when none matches. Patterns are fnmatch, case-insensitive, as the presets'."""
    name, short = _names(model)
    for pattern, vision in declared:
        folded = pattern.casefold()
        if fnmatchcase(name, folded) or fnmatchcase(short, folded):
            return vision
    return None


def sees_images(model: str | Model) -> bool:
    """Whether `model` is of a family `VISION_PRESETS` knows to take images."""
    return any(fnmatchcase(_names(model)[1], pattern) for pattern in VISION_PRESETS)
