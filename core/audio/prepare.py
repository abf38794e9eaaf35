"""From the bytes a user sent to an upload the transcription endpoint takes: caps, then ffmpeg
only when it is needed.

ffmpeg is needed for two things only: converting a format the endpoint does not take
(`formats.ACCEPTED`), and measuring an audio file whose length the platform did not give
(Telegram gives it for voice notes, audio and video notes, Discord for voice messages; a plain
Discord attachment comes without). Telegram's OGG/Opus voice notes, MP3s, M4As and MP4 video
notes with a known length go out as they came, and need no ffmpeg on the server.

An audio file of unknown length on a server without ffprobe is refused (`FFmpegMissingError`)
rather than sent unmeasured: the length cap is the operator's bound on what transcription
costs, and a 20 MB Opus file can hold hours.

What is trusted: the length a platform states is what the sender's app said, and a modified
client can say anything. It is believed only for a file that goes out as it came and whose
size fits it (at most `PLAUSIBLE_BYTES_PER_SECOND`), so that a Telegram voice note still needs
no ffmpeg. A file that is on disk for ffmpeg anyway is measured by ffprobe (some milliseconds
beside the conversion), and so is one whose size says its stated length is wrong. A lie that
fits the size passes, and is bounded by VOICE_MAX_BYTES, which always applies: 20 MB of
24 kbit/s Opus is under two hours.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .. import errors
from ..figures import megabytes, minutes
from .ffmpeg import on_disk, probe_seconds, to_ogg_opus
from .formats import AudioFormat, sniff

#: Stem of the uploaded file's name; the extension is that of the format it really is.
UPLOAD_STEM = "audio"
#: Most bytes per second of stated length that the statement is believed for: CD-quality PCM
#: (44.1 kHz, 16-bit stereo) is 176,400 and 48 kHz 192,000; a voice note in Opus is 2,000 to
#: 4,000. More bytes than this for the length stated means the length is wrong.
PLAUSIBLE_BYTES_PER_SECOND = 200_000


@dataclass(frozen=True)
class PreparedAudio:
    """An upload ready for the endpoint: its bytes, the name and type it goes under, whether
    ffmpeg made it, and its length in seconds as believed or measured (what a transcription is
    billed by)."""

    data: bytes
    filename: str
    mime_type: str
    converted: bool = False
    seconds: float | None = None


def check_audio_caps(
    size: int | None, duration: float | None, *, max_seconds: float, max_bytes: int
) -> None:
    """Refuse audio over the caps from what the platform says of it, before downloading it.
    Unknown figures pass here; `prepare_audio` checks them once it has the bytes."""
    if size == 0:
        raise errors.EmptyAttachmentError(
            "The audio has no bytes.", "That voice note is empty, so there is nothing to hear."
        )
    if size is not None and size > max_bytes:
        raise errors.AttachmentTooLargeError(
            f"The audio is {size} bytes; VOICE_MAX_BYTES is {max_bytes}.",
            f"That audio is {megabytes(size)}; the limit is {megabytes(max_bytes)}.",
        )
    if duration is not None and duration > max_seconds:
        raise errors.AttachmentTooLargeError(
            f"The audio lasts {duration:g} s; VOICE_MAX_SECONDS is {max_seconds:g}.",
            # Rounded apart, so a note just over the cap never reads as the cap itself.
            f"That audio is {minutes(math.ceil(duration))} long; "
            f"the limit is {minutes(math.floor(max_seconds))}.",
        )


def _believable(size: int, duration: float | None) -> bool:
    """Whether a stated `duration` can be the length of `size` bytes of audio."""
    return duration is not None and size <= duration * PLAUSIBLE_BYTES_PER_SECOND


def _as_is(data: bytes, found: AudioFormat, seconds: float | None) -> PreparedAudio:
    return PreparedAudio(data, f"{UPLOAD_STEM}.{found.name}", found.mime_type, seconds=seconds)


async def prepare_audio(
    data: bytes,
    filename: str,
    mime_type: str | None,
    *,
    duration: float | None,
    max_seconds: float,
    max_bytes: int,
) -> PreparedAudio:
    """`data` as the endpoint will take it, within the caps.

    `filename` and `mime_type` are what the platform said; the bytes decide the format.
    `duration` is the platform's figure in seconds, or None; see the module's docstring for
    when it is believed and when ffprobe measures instead. VOICE_MAX_BYTES (`max_bytes`)
    applies to every file.
    """
    check_audio_caps(len(data), duration, max_seconds=max_seconds, max_bytes=max_bytes)
    found = sniff(data)
    if found is None:  # never handed to ffmpeg to guess at (see `ffmpeg.INPUT_GUARD`)
        raise errors.UnsupportedAttachmentError(
            f"{filename!r} ({mime_type or 'no type'}) is not an audio format Parley reads.",
            "That file is not audio Parley can read, so it could not be transcribed.",
        )
    if found.accepted and _believable(len(data), duration):
        return _as_is(data, found, duration)
    async with on_disk(data, filename) as path:
        measured = await probe_seconds(path)
        check_audio_caps(None, measured, max_seconds=max_seconds, max_bytes=max_bytes)
        if found.accepted:
            return _as_is(data, found, measured)
        converted = await to_ogg_opus(path)
    return PreparedAudio(
        converted, f"{UPLOAD_STEM}.ogg", "audio/ogg", converted=True, seconds=measured
    )
