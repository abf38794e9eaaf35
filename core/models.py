"""Model names, as g4f's `models` module offers them.

Parley does not keep a catalogue of every model a provider serves: a model is its name, and
the name is routed to a provider (see `core.providers.registry`). `models.default` follows the
`DEFAULT_MODEL` setting at the moment it is read, so code written as
`model=models.default` picks up the operator's choice. Printed, it shows the process-wide
setting; passed to a client built from other settings (`client_for(settings)`), it means
those settings' default, as `""` does.
"""

from __future__ import annotations

from dataclasses import dataclass

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
