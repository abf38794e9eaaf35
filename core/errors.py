"""The one error tree of Parley's core: every exception the core raises on purpose is here.

Every failure a provider can have is raised as one of these, so callers (the bots, the CLI,
code ported from g4f) catch `ParleyError` and never a bare `KeyError` or httpx exception;
httpx's are mapped in one place, `core.providers.http`. Each message says what to fix; none
ever contains an API key. The tree (g4f's names kept where g4f has them):

* ParleyError
  + ConfigurationError            the operator's settings cannot work as they are
    - ProvidersFileError          the providers file cannot be read or is invalid
    - PersonasFileError           the personas file cannot be read or is invalid
    - TranscriptionOffError       TRANSCRIBE_BASE_URL is unset: voice notes are not set up
    - FFmpegMissingError          an audio file needs ffmpeg or ffprobe, which is not installed
    - ImageGenerationOffError     /image with IMAGE_MODEL unset, or turned off in that chat
  + AttachmentError               an image, voice note or file the bot will not use; `user_hint`
                                  is the line for the chat, so a bot catches this one class
    - EmptyAttachmentError        it has no bytes
    - AttachmentTooLargeError     over a size or duration cap
    - UnsupportedAttachmentError  a file type or audio format the bot does not read
    - NotUTF8Error                a text file that is not UTF-8 text
    - AudioConversionError        ffmpeg could not convert it (corrupt, or took too long)
    - ImageError                  an image a user sent cannot be used (`core.images`)
      . EmptyImageError           0 bytes arrived
      . ImageTooLargeError        over IMAGE_MAX_BYTES, or more pixels than Pillow's bomb limit
      . UnsupportedImageError     not a JPEG, PNG or WebP image (or no image at all)
      . CorruptImageError         its header reads as an image, its pixels do not decode
  + TranscriptionError            the transcription endpoint failed; carries `status_code`
    - NoSpeechError               it answered with an empty transcript
  + InvalidRequestError           the caller's arguments are wrong (also a ValueError)
  + InvalidSettingError           a /model, /system or /budget argument breaks its rule
  + OverBudgetError               the asker's budget is spent: `user_hint` names it and its reset
  + ProviderNotFoundError         no provider of that name
  + ProviderNotWorkingError       the provider has no key or address
  + StreamNotSupportedError
  + ModelNotFoundError
  + MissingAuthError              the provider refused the key, or there is none
  + RateLimitError                carries `retry_after`
  + ResponseStatusError           carries `status_code`
    - EmptyResponseError          every provider tried finished without any text
    - ContentPolicyError          the model refused the prompt (an image model, mostly)
  + ProviderConnectionError       unreachable, or the connection broke mid-answer
  + TimeoutError                  also the builtin `TimeoutError`
  + RetryProviderError            every provider of a fallback list failed; carries `errors`
  + RetryNoProviderError          a fallback list with no working provider

* RuntimeError
  + IllegalMoveError              a reply was driven through a move its state machine forbids:
                                  a bug in Parley, never a condition to handle, so not a
                                  ParleyError (see `core.conversation.reply.MOVES`)

Storage's errors (`storage.errors.StorageError` and below) are a separate tree on purpose:
storage is the lowest layer (the core's conversation service imports it), so it cannot
import this module without importing the core, its client and httpx, and turning the
layers into a cycle. The app catches both roots; see `bots.errors`.
"""

from __future__ import annotations

import builtins
import re


class ParleyError(Exception):
    """Base class of every error the core raises on purpose."""

    #: Short text fit to show a chat user; the full message goes to the log.
    user_hint: str = "The model could not answer. Please try again."
    #: The provider whose failure this is, when known: the client names it as the error leaves
    #: a provider (a fallback list names its member), so metrics can count errors by provider.
    provider: str | None = None

    def __init__(self, message: str = "", user_hint: str | None = None) -> None:
        """`user_hint`: this failure's own line for the chat, when the class's is too general
        (it names the cap a file broke, or the chat where drawing is off)."""
        super().__init__(message)
        if user_hint is not None:
            self.user_hint = user_hint


class ConfigurationError(ParleyError):
    """The operator's settings cannot work as they are; the message says what to change."""


class ProvidersFileError(ConfigurationError):
    """The providers file cannot be used; the message names the file and the fix."""


class PersonasFileError(ConfigurationError):
    """The personas file cannot be used; the message names the file, the persona and the fix."""


class InvalidRequestError(ParleyError, ValueError):
    """The caller's arguments cannot make a request (no messages, a malformed message)."""

    user_hint = "The request was not valid."


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


class EmptyResponseError(ResponseStatusError):
    """Every provider tried finished without producing any text, and none raised."""

    user_hint = "The model returned an empty answer. Please try again."


class ContentPolicyError(ResponseStatusError):
    """The provider refused the prompt under its content policy (OpenAI's 400 with code
    `content_policy_violation`); retrying the same prompt cannot help, rewording may."""

    user_hint = (
        "The model refused this prompt under its content policy. Try wording it differently."
    )


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
    """A /model or /system argument breaks a rule of `core.chat_settings`, or a /budget one of
    `core.budget_command`; the message says which."""


class OverBudgetError(ParleyError):
    """A paid call outside a conversation (`/image`) asked by someone whose budget is spent;
    `user_hint` is the budget's polite line (`core.budgets.OverBudget.line`)."""


class TranscriptionOffError(ConfigurationError):
    """A voice note arrived and TRANSCRIBE_BASE_URL is unset (`core.config.CoreSettings`)."""

    user_hint = "Voice notes are not set up on this bot. Please send your question as text."


class FFmpegMissingError(ConfigurationError):
    """The audio's format or unknown length needs ffmpeg, and the server has none."""

    user_hint = (
        "This audio needs converting, and the bot's server has no ffmpeg. "
        "Tell the bot's operator, or send a voice note instead."
    )


class ImageGenerationOffError(ConfigurationError):
    """`/image` where drawing is off: IMAGE_MODEL is unset, or the chat's admins turned it off.
    The message (and `user_hint`) says which, since only one of them is the user's to change."""

    user_hint = "Drawing images is not set up on this bot."


class AttachmentError(ParleyError):
    """An image, voice note or file the bot will not use. The message is for the log (it may
    name settings and byte counts); `user_hint`, set per instance when the cause has figures
    (the cap, the file's size), is the one line for the chat. A bot catches this one class for
    every kind of attachment and shows `user_hint`, never `str(exc)`."""

    user_hint = "That file could not be read."


class EmptyAttachmentError(AttachmentError):
    user_hint = "That file is empty."


class AttachmentTooLargeError(AttachmentError):
    user_hint = "That file is too large."


class UnsupportedAttachmentError(AttachmentError):
    user_hint = "That kind of file is not supported."


class NotUTF8Error(AttachmentError):
    user_hint = "That file is not UTF-8 text, so it could not be read."


class AudioConversionError(AttachmentError):
    user_hint = "The audio could not be read: it may be damaged, or in a format I cannot read."


class ImageError(AttachmentError):
    """An image a user sent cannot go to the model; `user_hint` is the one line they are shown,
    and the chat goes on without the image. An `AttachmentError` like any other file's."""

    user_hint = "That image could not be read."


class EmptyImageError(ImageError):
    user_hint = "The image arrived empty (0 bytes). Please send it again."


class ImageTooLargeError(ImageError):
    """Too many bytes to accept, or so many pixels that decoding it could exhaust memory (a
    decompression bomb); the hint names the byte limit when that was the one broken."""

    user_hint = "That image is too large. Please send a smaller one."


class UnsupportedImageError(ImageError):
    user_hint = "That is not an image I can read. Please send a JPEG, PNG or WebP image."


class CorruptImageError(ImageError):
    user_hint = "That image is damaged and could not be read. Please send it again."


class TranscriptionError(ParleyError):
    """The transcription endpoint failed. One class for every cause, told apart by
    `status_code` and by the `user_hint` chosen for the cause (down, slow, key refused, the
    audio refused, a server error) in `core.audio.transcribe`."""

    user_hint = "The voice note could not be transcribed. Please try again."

    def __init__(
        self, message: str, status_code: int | None = None, user_hint: str | None = None
    ) -> None:
        super().__init__(message, user_hint)
        self.status_code = status_code


class NoSpeechError(TranscriptionError):
    user_hint = "No speech was heard in that voice note."


class IllegalMoveError(RuntimeError):
    """The conversation service tried a move `MOVES` does not allow: a bug, never the user's doing."""


def name_provider(exc: BaseException, provider: str) -> None:
    """Name `provider` as the one whose failure `exc` is, unless a layer nearer the failure
    already did (a fallback list names its member before the client names the list)."""
    if isinstance(exc, ParleyError) and exc.provider is None:
        exc.provider = provider


def error_kind(exc: BaseException) -> str:
    """A short stable name for the kind of failure, for a metrics label: the class name in
    snake case without "Error" (`RateLimitError` -> "rate_limit"), "timeout" for any timeout,
    and "unexpected" for what the core did not raise on purpose."""
    if isinstance(exc, ParleyError):
        name = type(exc).__name__.removesuffix("Error") or type(exc).__name__
        return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
    if isinstance(exc, builtins.TimeoutError):
        return "timeout"
    return "unexpected"


def describe(exc: BaseException) -> str:
    """A one-line, key-free explanation of `exc` for a chat user."""
    if isinstance(exc, ParleyError):
        return exc.user_hint
    if isinstance(exc, builtins.TimeoutError):
        return TimeoutError.user_hint
    return ParleyError.user_hint


__all__ = [
    "AttachmentError",
    "AttachmentTooLargeError",
    "AudioConversionError",
    "ConfigurationError",
    "ContentPolicyError",
    "CorruptImageError",
    "EmptyAttachmentError",
    "EmptyImageError",
    "EmptyResponseError",
    "FFmpegMissingError",
    "IllegalMoveError",
    "ImageError",
    "ImageGenerationOffError",
    "ImageTooLargeError",
    "InvalidRequestError",
    "InvalidSettingError",
    "MissingAuthError",
    "ModelNotFoundError",
    "NoSpeechError",
    "NotUTF8Error",
    "OverBudgetError",
    "ParleyError",
    "ProviderConnectionError",
    "ProviderNotFoundError",
    "ProviderNotWorkingError",
    "ProvidersFileError",
    "RateLimitError",
    "ResponseStatusError",
    "RetryNoProviderError",
    "RetryProviderError",
    "StreamNotSupportedError",
    "TimeoutError",
    "TranscriptionError",
    "TranscriptionOffError",
    "UnsupportedAttachmentError",
    "UnsupportedImageError",
    "describe",
    "error_kind",
    "name_provider",
]
