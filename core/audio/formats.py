"""What an audio file really is, read from its first bytes, and whether it can go as it is.

The name and MIME type a platform reports are hints at best: a Discord attachment may be called
anything, Telegram's video notes come with no MIME type, and an iPhone's recording is a `.m4a`
or a `.caf` depending on the app. So the container is read from its magic bytes, as ffmpeg's
probes do, and the upload is named after what it is: OpenAI's endpoint goes by the file name's
extension and refuses one it does not list, even when the bytes would do.

`ACCEPTED` is the list OpenAI's `/audio/transcriptions` documents (self-hosted Whisper servers
decode with ffmpeg and take at least these). Everything else (AMR, raw AAC, CAF, AIFF, MOV,
3GP, Matroska, WMA, or bytes nobody recognises) is converted by ffmpeg first.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The formats OpenAI's transcription endpoint takes as they are, by file extension.
ACCEPTED = frozenset({"flac", "m4a", "mp3", "mp4", "mpeg", "mpga", "oga", "ogg", "wav", "webm"})

#: The MIME type sent with each accepted format.
MIME_TYPES = {
    "flac": "audio/flac",
    "m4a": "audio/mp4",
    "mp3": "audio/mpeg",
    "mp4": "video/mp4",
    "ogg": "audio/ogg",
    "wav": "audio/wav",
    "webm": "audio/webm",
}

#: How far into an EBML header the DocType ("webm" or "matroska") is looked for.
_EBML_HEAD = 64


@dataclass(frozen=True)
class AudioFormat:
    """A container, as a file extension (`ogg`, `m4a`, `caf`, ...)."""

    name: str

    @property
    def accepted(self) -> bool:
        """True when the endpoint takes it as it is, so no conversion is needed."""
        return self.name in ACCEPTED

    @property
    def mime_type(self) -> str:
        return MIME_TYPES.get(self.name, "application/octet-stream")


def _id3_size(data: bytes) -> int:
    """Bytes of an ID3v2 tag at the start of `data` (its size is four 7-bit bytes)."""
    size = 0
    for byte in data[6:10]:
        size = (size << 7) | (byte & 0x7F)
    footer = 10 if len(data) > 5 and data[5] & 0x10 else 0
    return 10 + size + footer


def _iso_media(brand: bytes) -> str:
    """The format of an ISO base media file (MP4's family) from its `ftyp` major brand."""
    if brand in (b"M4A ", b"M4B "):
        return "m4a"
    if brand == b"qt  ":
        return "mov"
    if brand.startswith((b"3gp", b"3g2")):
        return "3gp"
    return "mp4"


def _mpeg_frame(data: bytes) -> str | None:
    """MPEG audio (MP3) or ADTS AAC from a frame header: both start with 12 sync bits, and
    the two layer bits are 00 only in ADTS."""
    if len(data) < 2 or data[0] != 0xFF or data[1] & 0xE0 != 0xE0:
        return None
    return "aac" if (data[1] >> 1) & 0b11 == 0 else "mp3"


def sniff(data: bytes) -> AudioFormat | None:
    """The container of `data` from its magic bytes, or None when it is none known here."""
    if data.startswith(b"ID3"):
        # A tag before the audio: MP3 usually, FLAC sometimes; what follows it decides.
        rest = data[_id3_size(data) :]
        if rest.startswith(b"fLaC"):
            return AudioFormat("flac")
        return AudioFormat(_mpeg_frame(rest) or "mp3")
    head = data[:12]
    if head.startswith(b"OggS"):
        return AudioFormat("ogg")
    if head.startswith(b"fLaC"):
        return AudioFormat("flac")
    if head.startswith(b"RIFF") and head[8:12] == b"WAVE":
        return AudioFormat("wav")
    if head[4:8] == b"ftyp":
        return AudioFormat(_iso_media(head[8:12]))
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return AudioFormat("webm" if b"webm" in data[:_EBML_HEAD] else "mkv")
    if head.startswith(b"#!AMR"):
        return AudioFormat("amr")
    if head.startswith(b"caff"):
        return AudioFormat("caf")
    if head.startswith(b"FORM") and head[8:12] in (b"AIFF", b"AIFC"):
        return AudioFormat("aiff")
    if head.startswith(b"\x30\x26\xb2\x75\x8e\x66\xcf\x11"):
        return AudioFormat("wma")
    frame = _mpeg_frame(head)
    return AudioFormat(frame) if frame else None
