"""The one error tree of Parley's core.

Every failure a provider can have is raised as one of these, so callers (the bots, the CLI,
code ported from g4f) catch `ParleyError` and never a bare `KeyError` or httpx exception.
Each message says what to fix; none ever contains an API key.
"""

from __future__ import annotations

import builtins


class ParleyError(Exception):
    """Base class of every error the core raises on purpose."""

    #: Short text fit to show a chat user; the full message goes to the log.
    user_hint: str = "The model could not answer. Please try again."


class ConfigurationError(ParleyError):
    """The operator's settings cannot work as they are; the message says what to change."""


class ProviderNotFoundError(ParleyError):
    user_hint = "That provider is not configured."


class ProviderNotWorkingError(ParleyError):
    user_hint = "That provider is not available right now (missing key or disabled)."


class StreamNotSupportedError(ParleyError):
    user_hint = "That provider cannot stream replies."


class ModelNotFoundError(ParleyError):
    user_hint = "That model does not exist at the provider. Choose another with /model."


class MissingAuthError(ParleyError):
    user_hint = "The provider rejected the bot's API key. Tell the bot's operator."


class RateLimitError(ParleyError):
    user_hint = "The model is rate limited. Please try again in a minute."

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ResponseStatusError(ParleyError):
    user_hint = "The model's server returned an error. Please try again."

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class ProviderConnectionError(ParleyError):
    """The provider's server could not be reached, or the connection broke mid-answer."""

    user_hint = "The model's server could not be reached. Please try again."


class TimeoutError(ParleyError, builtins.TimeoutError):
    """g4f's name, kept; it is also a builtin `TimeoutError` so generic handlers catch it."""

    user_hint = "The model took too long to answer. Please try again."


class RetryProviderError(ParleyError):
    """Every provider of a fallback list failed; the message names each with its error."""

    user_hint = "No model provider could answer. Please try again later."

    def __init__(self, message: str, errors: dict[str, BaseException] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or {}


class RetryNoProviderError(ParleyError):
    user_hint = "No model provider is configured or working."


class InvalidSettingError(ParleyError):
    """A /model or /system argument breaks a rule of `core.chat_settings`; the message says which."""


def describe(exc: BaseException) -> str:
    """A one-line, key-free explanation of `exc` for a chat user."""
    if isinstance(exc, ParleyError):
        return exc.user_hint
    if isinstance(exc, builtins.TimeoutError):
        return TimeoutError.user_hint
    return ParleyError.user_hint


__all__ = [
    "ConfigurationError",
    "InvalidSettingError",
    "MissingAuthError",
    "ModelNotFoundError",
    "ParleyError",
    "ProviderConnectionError",
    "ProviderNotFoundError",
    "ProviderNotWorkingError",
    "RateLimitError",
    "ResponseStatusError",
    "RetryNoProviderError",
    "RetryProviderError",
    "StreamNotSupportedError",
    "TimeoutError",
    "describe",
]
