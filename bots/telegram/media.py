"""What a Telegram message carries, as `bots.attachments.Attachment`s the shared layer reads.

Telegram states every file's size (and a voice note's length) in the message, so the caps are
checked before anything is downloaded; the bytes come through the bot's own session (`getFile`,
then the file server), with its proxy and retries.

Decisions:
- A photo comes in several sizes; the largest whose stated size fits both IMAGE_MAX_BYTES and
  Telegram's 20 MB download limit is taken (the core downscales it to 2,048 px anyway). When
  none fits, the smallest is offered, so the user hears the limit rather than nothing.
- Voice notes, audio files and video notes are all audio to the bot: the words are what it
  answers. Other media (stickers, videos, locations) are no attachments: `handlers.other`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiogram import Bot
from aiogram.exceptions import TelegramBadRequest
from aiogram.types import Audio, Message, PhotoSize, VideoNote, Voice

from bots.attachments import Attachment, Kind
from core.config import CoreSettings
from core.errors import AttachmentTooLargeError
from core.figures import megabytes

#: The largest file a bot may download from Telegram's cloud Bot API.
DOWNLOAD_LIMIT = 20 * 1024 * 1024
#: Seconds one download may take: 20 MB on a slow link.
DOWNLOAD_TIMEOUT = 120
#: How Telegram words its refusal of a file over `DOWNLOAD_LIMIT` (`getFile`).
_TOO_BIG = "file is too big"


def has_attachments(message: Message) -> bool:
    """The message carries something `attachments_of` reads."""
    return any((message.photo, message.document, message.voice, message.audio, message.video_note))


def attachments_of(message: Message, bot: Bot, settings: CoreSettings) -> list[Attachment]:
    """The files of `message` (a Telegram message carries at most one; an album is one
    message per item), each fetched through `bot` when the shared layer asks for its bytes."""
    if message.photo:
        photo = best_photo(message.photo, min(settings.image_max_bytes, DOWNLOAD_LIMIT))
        return [
            Attachment(
                "photo.jpg",
                "image/jpeg",
                photo.file_size,
                _fetcher(bot, photo.file_id, "photo"),
                kind=Kind.IMAGE,
                label="photo",
            )
        ]
    if message.document:
        document = message.document
        name = document.file_name or "file"
        return [
            Attachment(
                name, document.mime_type, document.file_size, _fetcher(bot, document.file_id, name)
            )
        ]
    if message.voice:
        voice = message.voice
        return [_audio(bot, voice, "voice.ogg", voice.mime_type or "audio/ogg", "voice note")]
    if message.audio:
        audio = message.audio
        return [_audio(bot, audio, audio.file_name or "audio", audio.mime_type, "audio")]
    if message.video_note:
        return [_audio(bot, message.video_note, "video_note.mp4", "video/mp4", "video note")]
    return []


def _audio(
    bot: Bot, file: Voice | Audio | VideoNote, name: str, mime_type: str | None, label: str
) -> Attachment:
    """A voice note, music file or video note: all audio to the bot (the words are what it
    answers), with the length Telegram states."""
    return Attachment(
        name,
        mime_type,
        file.file_size,
        _fetcher(bot, file.file_id, label),
        kind=Kind.AUDIO,
        duration=file.duration,
        label=label,
    )


def best_photo(sizes: list[PhotoSize], limit: int) -> PhotoSize:
    """The largest size stated to fit `limit` bytes; the smallest when none does. A size
    without a stated `file_size` is taken to fit (the download limit still guards it)."""
    by_area = sorted(sizes, key=lambda size: size.width * size.height)
    fitting = [size for size in by_area if size.file_size is None or size.file_size <= limit]
    return fitting[-1] if fitting else by_area[0]


def _fetcher(bot: Bot, file_id: str, what: str) -> Callable[[], Awaitable[bytes]]:
    async def fetch() -> bytes:
        return await download(bot, file_id, what)

    return fetch


async def download(bot: Bot, file_id: str, what: str) -> bytes:
    """The bytes of `file_id`. Telegram's refusal of a file over 20 MB becomes
    `AttachmentTooLargeError`, whose line tells the user; other failures propagate (the shared
    layer says the file could not be downloaded)."""
    try:
        buffer = await bot.download(file_id, timeout=DOWNLOAD_TIMEOUT)
    except TelegramBadRequest as exc:
        if _TOO_BIG not in exc.message.lower():
            raise
        raise AttachmentTooLargeError(
            f"Telegram refused to hand over {what} {file_id}: {exc.message}",
            f"That {what} is over {megabytes(DOWNLOAD_LIMIT)}, more than Telegram lets a bot "
            "download.",
        ) from exc
    assert buffer is not None  # no destination given: aiogram returns the bytes in memory
    return buffer.read()
