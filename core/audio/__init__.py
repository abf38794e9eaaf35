"""Voice notes and audio files to text: caps, ffmpeg when needed, and the transcription call.

`transcribe(audio, filename, mime_type, settings, duration=...)` is the one entry point a bot
needs; `check_audio_caps` refuses a file from what the platform says of it before it is
downloaded. The modules, bottom up: `formats` (what the bytes are, what the endpoint takes),
`ffmpeg` (length and conversion in a subprocess), `prepare` (caps, and ffmpeg only when
needed), `transcribe` (the HTTP call and its errors).
"""

from __future__ import annotations

from .formats import ACCEPTED, AudioFormat, sniff
from .prepare import PreparedAudio, check_audio_caps, prepare_audio
from .transcribe import (
    Transcript,
    request_transcript,
    transcribe,
    transcription_enabled,
    transcription_key,
)

__all__ = [
    "ACCEPTED",
    "AudioFormat",
    "PreparedAudio",
    "Transcript",
    "check_audio_caps",
    "prepare_audio",
    "request_transcript",
    "sniff",
    "transcribe",
    "transcription_enabled",
    "transcription_key",
]
