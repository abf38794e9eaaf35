"""The provider registry: every configured provider by name, and which one serves a model.

`Provider` (exported from `core`) is a live view of the registry for the process-wide settings,
so `Provider.OpenAI`, `Provider.get("groq")` and `get_providers()` read like g4f's module of
provider classes while reflecting the operator's keys.
"""

from __future__ import annotations

from collections.abc import Iterator
from fnmatch import fnmatchcase
from typing import Any

from .. import errors
from ..config import CoreSettings, get_settings
from ..models import ContextWindow, context_window, declared_vision, sees_images
from .base import BaseProvider, provider_name
from .fallback import IterListProvider
from .presets import default_provider, preset_providers
from .providers_file import load_providers_file


class ProviderRegistry:
    """Named providers plus routing: routes, then claimed model patterns, then the default.

    It keeps the settings it was built from (`settings`), so everything that uses it (the
    client's default model, the health check) follows that one object and never the
    process-wide settings, which may say something else.
    """

    def __init__(
        self,
        providers: list[Any],
        default: Any,
        routes: list[tuple[str, list[str]]] | None = None,
        fallback: list[str] | None = None,
        *,
        settings: CoreSettings,
        vision: list[tuple[str, bool]] | None = None,
        windows: list[tuple[str, int | None, int | None]] | None = None,
    ) -> None:
        self.settings = settings
        #: (pattern, takes images) declared per model in the providers file, in its order.
        self.vision = list(vision or [])
        #: (pattern, context window, output reserve) declared in the providers file.
        self.windows = list(windows or [])
        self.default = default
        self._by_key: dict[str, Any] = {}
        for provider in [default, *providers]:
            self._by_key[provider_name(provider).casefold()] = provider
        self.routes = [(pattern, [self.get(n) for n in names]) for pattern, names in routes or []]
        self.fallback = [self.get(name) for name in fallback or []]

    @classmethod
    def from_settings(cls, settings: CoreSettings) -> ProviderRegistry:
        extra = (
            load_providers_file(settings.providers_file, settings)
            if settings.providers_file
            else None
        )
        providers = preset_providers(settings)
        if extra:
            # A file's provider replaces a preset of the same name.
            names = {provider_name(p).casefold() for p in extra.providers}
            providers = [p for p in providers if provider_name(p).casefold() not in names]
            providers += extra.providers
        try:
            return cls(
                providers,
                default_provider(settings),
                extra.routes if extra else None,
                extra.fallback if extra else None,
                settings=settings,
                vision=extra.vision if extra else None,
                windows=extra.windows if extra else None,
            )
        except errors.ProviderNotFoundError as exc:
            raise errors.ProviderNotFoundError(
                f"The providers file {settings.providers_file} names an unknown provider: {exc}"
            ) from None

    def get(self, name: str) -> Any:
        try:
            return self._by_key[name.casefold()]
        except KeyError:
            known = ", ".join(provider_name(p) for p in self) or "none"
            raise errors.ProviderNotFoundError(
                f"No provider named {name!r}. Known providers: {known}."
            ) from None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self.get(name)
        except errors.ProviderNotFoundError as exc:
            raise AttributeError(str(exc)) from None

    def __iter__(self) -> Iterator[Any]:
        return iter(self._by_key.values())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.casefold() in self._by_key

    def for_model(self, model: str) -> Any:
        """The provider that serves `model`; unclaimed names go to the default unchanged."""
        for pattern, targets in self.routes:
            if fnmatchcase(model, pattern):
                return targets[0] if len(targets) == 1 else IterListProvider(targets)
        for provider in self:
            if provider is self.default or not getattr(provider, "working", False):
                continue
            if any(fnmatchcase(model, pattern) for pattern in getattr(provider, "models", ())):
                return provider
        if self.fallback:
            return IterListProvider(self.fallback)
        return self.default

    def sees_images(self, model: str, provider: Any = None) -> bool:
        """Whether `model` takes images: the providers file's `[models]` entry for it, else the
        `vision` of `provider` (by default the one `model` is routed to), else the presets.

        A fallback list has no `vision` of its own: its members may differ, so only a
        declaration for the model, or a preset, answers for it."""
        declared = declared_vision(model, self.vision)
        if declared is not None:
            return declared
        served_by = provider if provider is not None else self.for_model(model)
        flag = getattr(served_by, "vision", None)
        return flag if isinstance(flag, bool) else sees_images(model)

    def context_window(self, model: str) -> ContextWindow:
        """`model`'s context window and output reserve: the providers file's, else the presets',
        else `core.models.DEFAULT_CONTEXT`."""
        return context_window(model, self.windows)


_current: tuple[CoreSettings, ProviderRegistry] | None = None


def current_registry() -> ProviderRegistry:
    """The registry for the process-wide settings, rebuilt when that object changes.

    Only for the g4f-style entry points that are handed no registry (`AsyncClient()`,
    `Provider`, `get_providers()`); the app builds its own from its settings.
    """
    global _current
    settings = get_settings()
    if _current is None or _current[0] is not settings:
        _current = (settings, ProviderRegistry.from_settings(settings))
    return _current[1]


class _ProviderView:
    """`core.Provider`: attribute and `get()` access to the current registry."""

    def __getattr__(self, name: str) -> Any:
        return getattr(current_registry(), name)

    def get(self, name: str) -> Any:
        return current_registry().get(name)

    def __iter__(self) -> Iterator[Any]:
        return iter(current_registry())

    def __contains__(self, name: object) -> bool:
        return name in current_registry()

    def __repr__(self) -> str:
        return f"<Provider registry: {', '.join(provider_name(p) for p in self)}>"


Provider = _ProviderView()


def get_providers() -> list[BaseProvider]:
    """Every registered provider, working or not (g4f code filters on `.working`)."""
    return list(current_registry())


def resolve_provider(provider: Any, registry: ProviderRegistry | None = None) -> Any:
    """A provider object from what a caller passed: an object, a name, or a list (fallback)."""
    if isinstance(provider, str):
        return (registry or current_registry()).get(provider)
    if isinstance(provider, list | tuple):
        return IterListProvider([resolve_provider(p, registry) for p in provider])
    return provider
