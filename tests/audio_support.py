"""Real audio for the voice tests, made by the real ffmpeg: a sine tone in several containers.

The tests that need ffmpeg skip, saying why, on a machine without it; CI installs it
(`.ci/run`).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

HAS_FFMPEG = shutil.which("ffmpeg") is not None and shutil.which("ffprobe") is not None
needs_ffmpeg = pytest.mark.skipif(
    not HAS_FFMPEG, reason="ffmpeg and ffprobe are not installed (Debian: apt-get install ffmpeg)"
)

#: Container (the file's extension) -> the codec ffmpeg writes into it.
CODECS = {
    "ogg": "libopus",  # Telegram's and Discord's voice notes
    "mp3": "libmp3lame",
    "wav": "pcm_s16le",
    "flac": "flac",
    "m4a": "aac",
    "mp4": "aac",
    "webm": "libopus",
    "aac": "aac",  # raw ADTS
    "caf": "alac",  # an iPhone's recording
    "mov": "aac",
    "3gp": "aac",
    "aiff": "pcm_s16be",
    "mka": "libopus",
}


def tone(path: Path, seconds: float = 2.0, codec: str | None = None) -> bytes:
    """A 440 Hz tone of `seconds` in the container `path`'s extension names; its bytes."""
    codec = codec or CODECS[path.suffix.removeprefix(".")]
    subprocess.run(
        [
            *("ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y"),
            *("-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}"),
            *("-c:a", codec, str(path)),
        ],
        check=True,
        timeout=60,
    )
    return path.read_bytes()


def tone_video(path: Path, seconds: float = 1.0) -> bytes:
    """A square MP4 with a picture and a tone, as a Telegram video note is."""
    subprocess.run(
        [
            *("ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y"),
            *("-f", "lavfi", "-i", f"color=c=blue:s=240x240:d={seconds}"),
            *("-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}"),
            *("-c:v", "mpeg4", "-c:a", "aac", "-shortest", str(path)),
        ],
        check=True,
        timeout=60,
    )
    return path.read_bytes()


def silent_video(path: Path, seconds: float = 1.0) -> bytes:
    """An MOV with a picture and no sound at all."""
    subprocess.run(
        [
            *("ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y"),
            *("-f", "lavfi", "-i", f"color=c=red:s=64x64:d={seconds}"),
            *("-c:v", "mpeg4", str(path)),
        ],
        check=True,
        timeout=60,
    )
    return path.read_bytes()
