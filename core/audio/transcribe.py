"""Speech to text through an OpenAI-compatible `POST {TRANSCRIBE_BASE_URL}/audio/transcriptions`.

The request is OpenAI's multipart form (`file`, `model`, `response_format`, and `language` when
the caller knows it), which OpenAI, Groq, and the self-hosted Whisper servers that copy its API
(speaches / faster-whisper-server, LocalAI, whisper.cpp's server) all read. It goes through the
core's one HTTP pool (`core.providers.http.shared_client`), and its failures are mapped by the
same functions as a chat provider's (`status_error`, `transport_error`: the key redacted, the
server's text cut to a line), then told to the chat user as a `TranscriptionError` whose hint
names the voice service, not "the model".

No retries: a failed upload of up to VOICE_MAX_BYTES is not resent on the user's behalf (a
chat provider's retry resends a few kilobytes of JSON); the user gets a clear line and can send
the note again.

Transcription is off until TRANSCRIBE_BASE_URL is set (see `core.config.CoreSettings`). The
key is TRANSCRIBE_API_KEY, or OPENAI_API_KEY when both base URLs name the same server: the
operator of `https://api.openai.com/v1` sets one key, and the OpenAI key is never sent to
another host.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import httpx

from .. import errors
from ..config import CoreSettings
from ..providers.http import POOL_TIMEOUT, shared_client, status_error, transport_error
from ..redact import Redactor
from .prepare import PreparedAudio, prepare_audio

log = logging.getLogger(__name__)

PATH = "/audio/transcriptions"
#: The name failures carry in their messages and in metrics.
SERVICE = "transcription"
KEY_HINT = "TRANSCRIBE_API_KEY"
#: `{"text": ...}`: the one format OpenAI's newer models (gpt-4o-transcribe) and Whisper share.
RESPONSE_FORMAT = "json"

_HINT_DOWN = "The voice transcription service could not be reached. Please try again later."
_HINT_SLOW = "The voice transcription service took too long. Please try again."
_HINT_KEY = "The voice transcription service refused the bot's key. Tell the bot's operator."
_HINT_BUSY = "The voice transcription service is busy. Please try again in a minute."
_HINT_SETUP = "Voice notes are misconfigured on this bot. Tell the bot's operator."
_HINT_REFUSED = "The voice transcription service could not use this audio (its format or length)."
_HINT_FAILED = "The voice transcription service had an error. Please try again."


def transcription_enabled(settings: CoreSettings) -> bool:
    """True when voice notes can be transcribed: TRANSCRIBE_BASE_URL is set."""
    return bool(settings.transcribe_base_url)


def _base_url(settings: CoreSettings) -> str:
    """TRANSCRIBE_BASE_URL, or `TranscriptionOffError` when it is unset."""
    if not settings.transcribe_base_url:
        raise errors.TranscriptionOffError(
            "Voice notes are off: set TRANSCRIBE_BASE_URL to an OpenAI-compatible server "
            "with /audio/transcriptions (and TRANSCRIBE_API_KEY, TRANSCRIBE_MODEL)."
        )
    return settings.transcribe_base_url


def _origin(url: str) -> tuple[str, str, int | None]:
    parsed = httpx.URL(url)
    return parsed.scheme, parsed.host, parsed.port


def transcription_key(settings: CoreSettings) -> str | None:
    """TRANSCRIBE_API_KEY, else OPENAI_API_KEY if both base URLs are the same server."""
    if settings.transcribe_api_key is not None:
        return settings.transcribe_api_key.get_secret_value() or None
    base = settings.transcribe_base_url
    openai_key = settings.openai_api_key
    if base and openai_key is not None and _origin(base) == _origin(settings.openai_base_url):
        return openai_key.get_secret_value() or None
    return None


def _hint(mapped: errors.ParleyError, status: int | None) -> str:
    """The chat user's line for a mapped HTTP failure of the transcription endpoint."""
    if isinstance(mapped, errors.MissingAuthError):
        return _HINT_KEY
    if isinstance(mapped, errors.RateLimitError):
        return _HINT_BUSY
    if isinstance(mapped, errors.TimeoutError):
        return _HINT_SLOW
    if isinstance(mapped, errors.ProviderConnectionError):
        return _HINT_DOWN
    if isinstance(mapped, errors.ModelNotFoundError) or status in (404, 405):
        return _HINT_SETUP
    if status is not None and 400 <= status < 500:
        return _HINT_REFUSED
    return _HINT_FAILED


def _failure(mapped: errors.ParleyError, status: int | None = None) -> errors.TranscriptionError:
    return errors.TranscriptionError(str(mapped), status, _hint(mapped, status))


def _transcript(response: httpx.Response, redact: Redactor) -> str:
    """The text of a 2xx answer: `{"text": ...}`, or a plain-text body from a server that
    answers so whatever was asked."""
    if response.headers.get("content-type", "").startswith("text/plain"):
        return response.text.strip()
    try:
        payload = json.loads(response.content)
        text = payload["text"]
    except (ValueError, LookupError, TypeError):
        text = None
    if not isinstance(text, str):
        start = redact(response.content[:200].decode(errors="replace"))
        raise errors.TranscriptionError(
            f"{SERVICE}: the answer holds no transcript: {start!r}",
            response.status_code,
            _HINT_FAILED,
        )
    return text.strip()


async def request_transcript(
    audio: PreparedAudio,
    settings: CoreSettings,
    *,
    language: str | None = None,
    http_client: httpx.AsyncClient | None = None,
) -> str:
    """POST `audio` to the endpoint and return its transcript.

    `language`: an ISO-639-1 code, when known, which helps Whisper with short notes.
    `http_client`: send through it (never closed here) instead of the shared pool.
    """
    base = _base_url(settings)
    key = transcription_key(settings)
    redact = Redactor(key)
    form = {"model": settings.transcribe_model, "response_format": RESPONSE_FORMAT}
    if language:
        form["language"] = language
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    timeout = httpx.Timeout(
        settings.transcribe_timeout, connect=settings.connect_timeout, pool=POOL_TIMEOUT
    )
    client = http_client or shared_client()
    try:
        response = await client.post(
            base.rstrip("/") + PATH,
            data=form,
            files={"file": (audio.filename, audio.data, audio.mime_type)},
            headers=headers,
            timeout=timeout,
        )
    except httpx.HTTPError as exc:
        raise _failure(transport_error(SERVICE, exc, redact)) from None
    if response.status_code >= 400:
        mapped = status_error(SERVICE, response, response.content, KEY_HINT, redact)
        raise _failure(mapped, response.status_code)
    text = _transcript(response, redact)
    if not text:
        raise errors.NoSpeechError(
            f"{SERVICE}: the transcript of {audio.filename} is empty.", response.status_code
        )
    return text


@dataclass(frozen=True, slots=True)
class Transcript:
    """What the audio said, and how long it was (None: neither stated nor measured): the
    seconds are what a transcription is billed by, so the usage ledger records them."""

    text: str
    seconds: float | None


async def transcribe(
    audio: bytes,
    filename: str,
    mime_type: str | None,
    settings: CoreSettings,
    *,
    duration: float | None = None,
    language: str | None = None,
    http_client: httpx.AsyncClient | None = None,
) -> Transcript:
    """The transcript of a voice note or audio file a user sent, with its length.

    Checks the caps (VOICE_MAX_BYTES, VOICE_MAX_SECONDS; `duration` is the platform's figure,
    None to measure it), converts with ffmpeg only a format the endpoint does not take, and
    posts it. Every failure is a `core.errors.ParleyError` with a `user_hint` fit for the chat:
    `TranscriptionOffError`, an `AttachmentError`, `FFmpegMissingError`, `TranscriptionError`.
    """
    _base_url(settings)  # before any work on the audio: there may be nobody to send it to
    prepared = await prepare_audio(
        audio,
        filename,
        mime_type,
        duration=duration,
        max_seconds=settings.voice_max_seconds,
        max_bytes=settings.voice_max_bytes,
    )
    if prepared.converted:
        log.debug("%s converted to OGG/Opus for transcription", filename or "audio")
    text = await request_transcript(prepared, settings, language=language, http_client=http_client)
    return Transcript(text, prepared.seconds)
