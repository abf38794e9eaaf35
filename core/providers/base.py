"""What a provider is: a declared capability set and one async-generator method.

As in simonw/llm's models, a provider declares what it can do (`working`, `supports_stream`,
`needs_auth`) and implements one method that yields text. Everything else (the response
objects, stop strings, fallback, timing) is policy that the client adds on top, as httpx's
client adds policy on top of a transport.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol, runtime_checkable

from ..types import ChoiceDeltaToolCall, FinishReason, ProviderInfo, Reasoning, ResponseId, Usage

Messages = list[dict[str, Any]]
#: What a provider's generator may yield: text pieces, `Reasoning` pieces and tool call pieces
#: (`ChoiceDeltaToolCall`), plus at most one `ResponseId`, `Usage` and `FinishReason` (and,
#: from fallback providers, `ProviderInfo`).
StreamItem = (
    str | Reasoning | ChoiceDeltaToolCall | Usage | FinishReason | ResponseId | ProviderInfo | None
)


@runtime_checkable
class ProviderLike(Protocol):
    """The duck type the client accepts: a `BaseProvider` or any class/instance shaped like one."""

    working: bool
    supports_stream: bool

    def create_async_generator(
        self, model: str, messages: Messages, **kwargs: Any
    ) -> AsyncIterator[StreamItem]: ...


class BaseProvider:
    """Base for Parley's own providers. Subclasses implement `create_async_generator`."""

    # Class attributes, as on g4f's provider classes; an instance may set its own.
    working: bool = True
    supports_stream: bool = True
    needs_auth: bool = False
    default_model: str | None = None
    models: Sequence[str] = ()
    #: Whether the models routed to this provider take images; None leaves it to the model
    #: presets (`core.models.VISION_PRESETS`). Set by the providers file's `vision = ...`.
    vision: bool | None = None

    @property
    def name(self) -> str:
        # Annotated `type`: mypy would read the `__name__` property below, but on a class
        # the metaclass's `type.__name__` answers.
        cls: type = type(self)
        return cls.__name__

    @property
    def __name__(self) -> str:
        # g4f code prints `provider.__name__` for instances and classes alike.
        return self.name

    def create_async_generator(
        self, model: str, messages: Messages, **kwargs: Any
    ) -> AsyncIterator[StreamItem]:
        raise NotImplementedError

    async def create_async(self, model: str, messages: Messages, **kwargs: Any) -> str:
        """The whole answer as one string (g4f's `provider.create_async`)."""
        parts = [
            item
            async for item in self.create_async_generator(model, messages, **kwargs)
            if isinstance(item, str)
        ]
        return "".join(parts)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} working={self.working}>"


def provider_name(provider: Any) -> str:
    """A provider's display name: its `name`, else its class name (classes and instances)."""
    name = getattr(provider, "name", None)
    if isinstance(name, str) and name:
        return name
    if isinstance(provider, type):
        return provider.__name__
    return type(provider).__name__
