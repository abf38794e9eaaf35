"""ffmpeg and ffprobe as subprocesses: an audio file's length, and its conversion to OGG/Opus.

Both tools run with `asyncio.create_subprocess_exec` (no shell, so no quoting of names a user
chose), under a timeout, and are killed if the caller is cancelled or the timeout passes. The
input is a temporary file, not stdin: ffmpeg reads MP4, MOV and 3GP files whose index (`moov`)
comes after the audio only from a file it can seek in (from a pipe, a five-minute `.m4a` fails
with "partial file"), cannot read an iPhone's CAF from a pipe at all ("Missing packet table"),
and gives no length for OGG, MP3 or WAV on a pipe (`N/A`). The output, a stream ffmpeg writes
front to back, comes back on stdout.

The target is mono 16 kHz Opus in OGG, at 24 kbit/s: Whisper hears at 16 kHz mono anyway, and
ten minutes of it are under 2 MB, well within any endpoint's upload limit.

At most as many conversions run at once as the machine has cores, so a burst of voice notes
queues instead of starving the event loop's process of CPU.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import tempfile
import weakref
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

from .. import errors

log = logging.getLogger(__name__)

FFMPEG = "ffmpeg"
FFPROBE = "ffprobe"
#: Seconds one ffmpeg or ffprobe run may take: ten minutes of speech convert in about one.
TOOL_TIMEOUT = 60.0
#: What ffmpeg makes of an audio file the endpoint would not take.
OPUS_ARGS = ("-ac", "1", "-ar", "16000", "-c:a", "libopus", "-b:a", "24k", "-application", "voip")
#: Characters of ffmpeg's error output kept in an error message.
MAX_TOOL_ERROR = 300

_SAFE_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,8}")
_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)


def _slot() -> asyncio.Semaphore:
    """This loop's limit on tools running at once (a semaphore is bound to one loop)."""
    loop = asyncio.get_running_loop()
    slot = _slots.get(loop)
    if slot is None:
        slot = _slots[loop] = asyncio.Semaphore(os.cpu_count() or 1)
    return slot


def _write_temporary(data: bytes, suffix: str) -> Path:
    """A new temporary file holding `data`; none is left behind when the write fails."""
    handle, raw_path = tempfile.mkstemp(prefix="parley-audio-", suffix=suffix)
    path = Path(raw_path)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def _discard(write: asyncio.Future[Path]) -> None:
    """Remove the file of a write its caller stopped waiting for."""
    if not write.cancelled() and write.exception() is None:
        write.result().unlink(missing_ok=True)


async def _written(data: bytes, suffix: str) -> Path:
    """`_write_temporary` in a worker thread, which a cancellation cannot strand: the write runs
    to its end (a thread cannot be stopped midway), and the file it made is removed then."""
    write = asyncio.ensure_future(asyncio.to_thread(_write_temporary, data, suffix))
    try:
        return await asyncio.shield(write)
    except asyncio.CancelledError:
        write.add_done_callback(_discard)
        raise


@asynccontextmanager
async def on_disk(data: bytes, name: str = "") -> AsyncIterator[Path]:
    """`data` in a temporary file for the tools to read, removed afterwards however the block
    ends, a cancellation included. The suffix of `name`, when it is a plain one, is kept:
    ffmpeg takes it as a hint for raw formats.

    The removal is a plain call, not an awaited one: an await there could itself be cancelled
    (a second cancellation, or a timeout firing during the clean-up) and leave a user's audio
    in the temporary folder; an unlink is one system call."""
    found = _SAFE_SUFFIX.fullmatch(Path(name).suffix)
    path = await _written(data, found[0] if found else ".bin")
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


async def run_tool(tool: str, args: Sequence[str], timeout: float = TOOL_TIMEOUT) -> bytes:
    """Run `tool` with `args`; its stdout. Raises `FFmpegMissingError` when it is not
    installed and `AudioConversionError` when it fails or overruns `timeout`."""
    async with _slot():
        try:
            process = await asyncio.create_subprocess_exec(
                tool,
                *args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except FileNotFoundError:
            raise errors.FFmpegMissingError(
                f"{tool} is not installed (not found on PATH); voice notes in formats the "
                "transcription endpoint does not take, and audio of unknown length, need it. "
                "Install ffmpeg (Debian: apt-get install ffmpeg)."
            ) from None
        try:
            async with asyncio.timeout(timeout):
                out, err = await process.communicate()
        except TimeoutError:  # the builtin, which asyncio.timeout raises
            raise errors.AudioConversionError(
                f"{tool} took longer than {timeout:g} s and was stopped.",
                "The audio took too long to convert. Please send a shorter one.",
            ) from None
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    if process.returncode != 0:
        detail = err.decode(errors="replace").strip()[-MAX_TOOL_ERROR:] or "no error output"
        raise errors.AudioConversionError(
            f"{tool} failed with exit code {process.returncode}: {detail}"
        )
    return out


#: Read a user's file only as one of these containers, and only from the file itself: left to
#: guess, ffmpeg reads a 78-byte HLS playlist as a list of other files on this server (found in
#: review: a "voice note" naming /tmp/secret.mp3 came back converted, ready to be transcribed).
INPUT_GUARD = (
    *("-protocol_whitelist", "file"),
    *(
        "-format_whitelist",
        "mov,mp4,m4a,3gp,3g2,mj2,ogg,mp3,wav,flac,matroska,webm,amr,caf,aiff,asf,aac",
    ),
)


async def probe_seconds(path: Path, timeout: float = TOOL_TIMEOUT) -> float:
    """The length of the audio in `path`, in seconds, as ffprobe reads it."""
    out = await run_tool(
        FFPROBE,
        (
            *("-v", "error", *INPUT_GUARD),
            *("-show_entries", "format=duration", "-of", "csv=p=0", str(path)),
        ),
        timeout,
    )
    text = out.decode(errors="replace").strip()
    try:
        return float(text)
    except ValueError:
        raise errors.AudioConversionError(
            f"ffprobe could not tell the length of the audio: {text or 'no output'!r}",
            "The length of that audio could not be read, so it was not transcribed.",
        ) from None


async def to_ogg_opus(path: Path, timeout: float = TOOL_TIMEOUT) -> bytes:
    """The first audio track of `path` as mono 16 kHz OGG/Opus (the video, if any, dropped)."""
    args = [
        *("-nostdin", "-hide_banner", "-loglevel", "error", *INPUT_GUARD, "-i", str(path)),
        *("-map", "0:a:0", "-vn", *OPUS_ARGS, "-f", "ogg", "pipe:1"),
    ]
    out = await run_tool(FFMPEG, args, timeout)
    if not out:
        raise errors.AudioConversionError("ffmpeg wrote no audio.")
    return out
