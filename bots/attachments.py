"""What a user attached to a message, read into what the model is asked: one mechanism for both
bots, so a photo, a voice note or a file is treated alike on Telegram and Discord.

A platform adapter describes each file as an `Attachment`: its name, type and size as the
platform states them, and how to download it. `gather` turns a message's text and attachments
into a `Gathered`: the prompt to store and answer (the text, then what the audio said, then each
text file under its name), the images, the transcript to show first, and one line for the user
per file it could not use. It never raises over a bad file: the person is told which one and
why, and the rest of the message still goes (a caption is answered without its broken photo).

Caps are checked on what the platform states before anything is downloaded (a 200 MB video
sent by mistake costs nothing), and again on the bytes by the core (`core.images`,
`core.audio`, `core.text_files`), which trust no platform.
"""

from __future__ import annotations

import asyncio
import logging
import mimetypes
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import PurePosixPath

import httpx

from core import errors
from core.audio import Transcript, check_audio_caps, transcribe
from core.config import CoreSettings
from core.figures import megabytes
from core.images import prepare_images
from core.text_files import SUPPORTED, check_text_attachment, display_name, read_text_attachment
from storage import MessageImage

log = logging.getLogger(__name__)

#: Extensions of audio files, for platforms that send them without a MIME type.
AUDIO_EXTENSIONS = frozenset(
    {"ogg", "oga", "opus", "mp3", "m4a", "wav", "flac", "aac", "amr", "weba", "mpga", "caf"}
)
#: Characters of a transcript quoted whole; a longer one is cut (the answer follows it, and a
#: wall of quoted text would push the answer off the screen).
TRANSCRIPT_QUOTE_CHARS = 500
#: Seconds one attachment's download may take (20 MB on a slow link): a platform whose
#: download hangs costs that file, never the message (discord.py's session waits 5 minutes).
DOWNLOAD_TIMEOUT_SECONDS = 120
#: What the user is told a message can carry, when a file is of none of those kinds.
READABLE = f"photos, voice notes and {SUPPORTED}"


class Kind(StrEnum):
    """What the bot does with a file: look at it, listen to it, read it, or say it cannot."""

    IMAGE = "image"
    AUDIO = "audio"
    TEXT = "text"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class Attachment:
    """One file of a user's message, as its platform describes it.

    `fetch` downloads the bytes. It raises a `core.errors.AttachmentError` for a refusal the
    platform explains (its `user_hint` is shown: Telegram's "file is too big"); any other
    exception reads as a failed download.
    """

    name: str
    mime_type: str | None
    #: Bytes, as the platform states them; None when it does not say.
    size: int | None
    fetch: Callable[[], Awaitable[bytes]] = field(repr=False)
    #: None: classified from the name and MIME type (`classify`).
    kind: Kind | None = None
    #: Seconds of audio, as the platform states them.
    duration: float | None = None
    #: How the user's lines name it: "photo", "voice note", "audio", "video note", "file".
    label: str = "file"

    @property
    def sort(self) -> Kind:
        return self.kind or classify(self.name, self.mime_type)


@dataclass(frozen=True, slots=True)
class Gathered:
    """A message's text and attachments, read."""

    #: What is stored and answered: the text, the transcript, the text files' blocks.
    text: str
    images: list[MessageImage]
    #: What the audio said, to show before the answer; None when no audio was read.
    transcript: str | None
    #: One line for the user per attachment refused or left out, in order.
    notes: list[str]
    #: What the history keeps of a message none of which could be read ("[voice note: not read]").
    record: str
    #: Seconds of audio transcribed (stated or measured), which the transcription is billed by.
    audio_seconds: float = 0.0

    @property
    def answerable(self) -> bool:
        """There is something to ask the model: text or an image."""
        return bool(self.text.strip() or self.images)


def classify(name: str, mime_type: str | None) -> Kind:
    """The kind of a file from its MIME type, else its name. Any `image/*` is an image, even a
    format the bot will refuse (the user then hears which formats it reads, not "unsupported
    file"); a text file is recognised by `core.text_files`."""
    mime = (mime_type or "").split(";")[0].strip().lower() or (mimetypes.guess_type(name)[0] or "")
    extension = PurePosixPath(name).suffix.lower().lstrip(".")
    if mime.startswith("image/") and mime != "image/svg+xml":  # an SVG is XML text
        return Kind.IMAGE
    if mime.startswith("audio/") or extension in AUDIO_EXTENSIONS:
        return Kind.AUDIO
    try:
        check_text_attachment(name, None, 1, mime_type)
    except errors.AttachmentError:
        return Kind.OTHER
    return Kind.TEXT


async def gather(
    text: str,
    attachments: Sequence[Attachment],
    settings: CoreSettings,
    *,
    http_client: httpx.AsyncClient | None = None,
) -> Gathered:
    """Read `attachments` (downloads, image preparation and transcription run at once) and
    put them together with `text`. Images past IMAGES_PER_MESSAGE are not downloaded."""
    several = len(attachments) > 1
    images_wanted = [a for a in attachments if a.sort is Kind.IMAGE]
    kept_images = images_wanted[: settings.images_per_message]
    others = [a for a in attachments if a.sort is not Kind.IMAGE]
    readings, (images, image_notes) = await asyncio.gather(
        asyncio.gather(*(_read(a, settings, http_client) for a in others)),
        _images(kept_images, settings),
    )
    transcripts: list[str] = []
    audio_seconds = 0.0
    blocks: list[str] = []
    notes: list[str] = []
    unread: list[str] = []
    for other, reading in zip(others, readings, strict=True):
        if isinstance(reading, errors.ParleyError):
            notes.append(_note(other, errors.describe(reading), several))
            unread.append(_unread(other))
        elif isinstance(reading, Transcript):
            transcripts.append(reading.text)
            audio_seconds += reading.seconds or 0.0
        else:
            blocks.append(reading)
    for image, hint in image_notes:
        notes.append(_note(image, hint, several))
        unread.append(_unread(image))
    left_out = len(images_wanted) - len(kept_images)
    if left_out:
        notes.append(
            f"I looked at the first {len(kept_images)} images only "
            f"({settings.images_per_message} per message); {left_out} more were left out."
        )
    transcript = "\n\n".join(transcripts) or None
    prompt = "\n\n".join(part for part in (text.strip(), transcript, *blocks) if part)
    return Gathered(
        text=prompt,
        images=images,
        transcript=transcript,
        notes=notes,
        record=" ".join(unread) or text,
        audio_seconds=audio_seconds,
    )


def transcript_quote(transcript: str) -> str:
    """The transcript as shown before the answer: quoted, whole when short, cut when long (the
    history keeps it all)."""
    shown = " ".join(transcript.split())
    if len(shown) > TRANSCRIPT_QUOTE_CHARS:
        shown = shown[: TRANSCRIPT_QUOTE_CHARS - 1].rstrip() + "…"
    return f"🎤 “{shown}”"


def notes_text(notes: Sequence[str]) -> str:
    """The notes as one message (one line each)."""
    return "\n".join(f"⚠️ {note}" for note in notes)


async def _read(
    attachment: Attachment, settings: CoreSettings, http_client: httpx.AsyncClient | None
) -> Transcript | str | errors.ParleyError:
    """An audio file's transcript or a text file's block; the error, for the user's line."""
    kind = attachment.sort
    try:
        if kind is Kind.AUDIO:
            check_audio_caps(
                attachment.size,
                attachment.duration,
                max_seconds=settings.voice_max_seconds,
                max_bytes=settings.voice_max_bytes,
            )
            if not settings.transcribe_base_url:
                raise errors.TranscriptionOffError("TRANSCRIBE_BASE_URL is not set.")
            data = await _download(attachment)
            return await transcribe(
                data,
                attachment.name,
                attachment.mime_type,
                settings,
                duration=attachment.duration,
                http_client=http_client,
            )
        if kind is Kind.TEXT:
            check_text_attachment(
                attachment.name, attachment.size, settings.text_file_max_bytes, attachment.mime_type
            )
            data = await _download(attachment)
            return read_text_attachment(attachment.name, data, settings.text_file_max_chars)
        return errors.UnsupportedAttachmentError(
            f"{attachment.name!r} ({attachment.mime_type or 'no type'}) is not read.",
            f"I can't read {display_name(attachment.name)}: I read {READABLE}.",
        )
    except errors.ParleyError as exc:
        log.info("Attachment %r not read: %s", attachment.name, exc)
        return exc
    except Exception as exc:  # a bug, or a library failing in a way not foreseen
        return _unforeseen(attachment, exc)


async def _images(
    attachments: Sequence[Attachment], settings: CoreSettings
) -> tuple[list[MessageImage], list[tuple[Attachment, str]]]:
    """The images prepared for the model, and a line for each one refused."""
    results = await asyncio.gather(*(_image(a, settings) for a in attachments))
    images = [result for result in results if isinstance(result, MessageImage)]
    refused = [
        (attachment, errors.describe(result))
        for attachment, result in zip(attachments, results, strict=True)
        if not isinstance(result, MessageImage)
    ]
    return images, refused


async def _image(
    attachment: Attachment, settings: CoreSettings
) -> MessageImage | errors.ParleyError:
    """One image downloaded and prepared (`core.images`: checked, upright, downscaled)."""
    limit = settings.image_max_bytes
    try:
        if attachment.size is not None and attachment.size > limit:
            raise errors.ImageTooLargeError(
                f"Image {attachment.name!r} is {attachment.size} bytes, over IMAGE_MAX_BYTES.",
                f"That image is over {megabytes(limit)}. Please send a smaller one.",
            )
        prepared = await prepare_images([await _download(attachment)], limit=1, max_bytes=limit)
    except errors.ParleyError as exc:
        log.info("Image %r not read: %s", attachment.name, exc)
        return exc
    except Exception as exc:  # a bug, or a library failing in a way not foreseen
        return _unforeseen(attachment, exc)
    if prepared.refused:
        log.info("Image %r not read: %s", attachment.name, prepared.refused[0])
        return prepared.refused[0]
    return prepared.images[0]


async def _download(attachment: Attachment) -> bytes:
    """The attachment's bytes; a failed download becomes a line naming the file."""
    try:
        async with asyncio.timeout(DOWNLOAD_TIMEOUT_SECONDS):
            return await attachment.fetch()
    except errors.ParleyError:
        raise
    except Exception as exc:  # the platform's HTTP error, a timeout, an expired link
        log.warning("Could not download %r: %r", attachment.name, exc)
        raise errors.AttachmentError(
            f"Download of {attachment.name!r} failed: {exc!r}",
            f"I could not download {display_name(attachment.name)}. Please send it again.",
        ) from exc


def _unforeseen(attachment: Attachment, exc: Exception) -> errors.AttachmentError:
    """A failure no code path expects, as a line naming the file: the rest of the message
    still goes, and the traceback reaches the log for the operator."""
    log.error("Reading %r failed unexpectedly", attachment.name, exc_info=exc)
    return errors.AttachmentError(
        f"Reading {attachment.name!r} failed: {exc!r}",
        f"I could not read {display_name(attachment.name)}. Please send it again.",
    )


def _note(attachment: Attachment, hint: str, several: bool) -> str:
    """The user's line for a refused attachment; named when the message had several."""
    if not several:
        return hint
    return f"{attachment.label.capitalize()} {display_name(attachment.name)}: {hint}"


def _unread(attachment: Attachment) -> str:
    """What the history keeps of an attachment that could not be read."""
    if attachment.label == "file":
        return f"[file {display_name(attachment.name)}: not read]"
    return f"[{attachment.label}: not read]"
