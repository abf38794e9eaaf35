"""Audio a user sends, made ready for the transcription endpoint: the real ffmpeg converts only
the formats the endpoint refuses, measures only what the platform did not, and every bad input
(empty, too long, too large, not audio, damaged, no ffmpeg) becomes one clear error."""

from __future__ import annotations

import asyncio
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from core import errors
from core.audio import ACCEPTED, check_audio_caps, prepare_audio, sniff
from core.audio import ffmpeg as ffmpeg_module
from core.audio.ffmpeg import on_disk, probe_seconds, to_ogg_opus
from core.audio.prepare import PLAUSIBLE_BYTES_PER_SECOND
from tests.audio_support import CODECS, needs_ffmpeg, silent_video, tone, tone_video

CAPS = {"max_seconds": 600.0, "max_bytes": 20 * 1024 * 1024}
#: Containers ffmpeg writes and what `sniff` calls each.
SNIFFED = {**{name: name for name in CODECS}, "mka": "mkv"}
PASS_AS_IS = sorted(name for name in CODECS if name in ACCEPTED)
CONVERTED = sorted(name for name in CODECS if name not in ACCEPTED)


@pytest.fixture(scope="module")
def tones(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """A two-second tone in every container of `CODECS`, made once for the module."""
    folder = tmp_path_factory.mktemp("tones")
    return {name: tone(folder / f"tone.{name}") for name in CODECS}


@pytest.fixture
def no_ffmpeg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A PATH on which neither ffmpeg nor ffprobe can be found."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


async def opus_seconds(data: bytes) -> float:
    async with on_disk(data, "out.ogg") as path:
        return await probe_seconds(path)


# -- what the bytes are ---------------------------------------------------------------------------


@needs_ffmpeg
@pytest.mark.parametrize("container", sorted(CODECS))
def test_sniff_names_each_container_ffmpeg_writes(tones: dict[str, bytes], container: str) -> None:
    found = sniff(tones[container])
    assert found is not None and found.name == SNIFFED[container]
    assert found.accepted is (SNIFFED[container] in ACCEPTED)


@needs_ffmpeg
def test_a_flac_behind_an_id3_tag_is_flac_and_an_mp3_behind_one_is_mp3(
    tones: dict[str, bytes],
) -> None:
    # ID3v2.4 header: "ID3", version, flags, then a size in four 7-bit bytes (here 10 bytes).
    tag = b"ID3\x04\x00\x00\x00\x00\x00\x0a" + b"\x00" * 10
    assert sniff(tag + tones["flac"]) == sniff(tones["flac"])
    assert sniff(tones["mp3"]) is not None and tones["mp3"].startswith(b"ID3")
    assert getattr(sniff(tones["mp3"]), "name", None) == "mp3"


@pytest.mark.parametrize(
    "data", [b"hello, world", b"%PDF-1.7\n", b"\x89PNG\r\n\x1a\n", b"", b"\xff"]
)
def test_sniff_knows_no_format_for_what_is_not_audio(data: bytes) -> None:
    assert sniff(data) is None


# -- what passes as it is -------------------------------------------------------------------------


@needs_ffmpeg
@pytest.mark.parametrize("container", PASS_AS_IS)
async def test_a_format_the_endpoint_takes_goes_as_it_is_without_ffmpeg(
    tones: dict[str, bytes], container: str, request: pytest.FixtureRequest
) -> None:
    request.getfixturevalue("no_ffmpeg")  # after the tones are made
    prepared = await prepare_audio(
        tones[container], "voice.bin", "application/octet-stream", duration=2.0, **CAPS
    )
    assert prepared.data == tones[container]
    assert not prepared.converted
    assert prepared.filename == f"audio.{container}"  # OpenAI goes by the extension


@needs_ffmpeg
async def test_a_telegram_video_note_goes_as_an_mp4(tmp_path: Path) -> None:
    video = tone_video(tmp_path / "note.mp4")
    prepared = await prepare_audio(video, "file_7.mp4", None, duration=1.0, **CAPS)
    assert (prepared.data, prepared.filename, prepared.converted) == (video, "audio.mp4", False)


# -- what ffmpeg converts -------------------------------------------------------------------------


@needs_ffmpeg
@pytest.mark.parametrize("container", CONVERTED)
async def test_a_format_the_endpoint_refuses_becomes_ogg_opus_of_the_same_length(
    tones: dict[str, bytes], container: str
) -> None:
    prepared = await prepare_audio(
        tones[container], f"memo.{container}", "audio/x-whatever", duration=2.0, **CAPS
    )
    assert prepared.converted
    assert (prepared.filename, prepared.mime_type) == ("audio.ogg", "audio/ogg")
    assert prepared.data.startswith(b"OggS") and b"OpusHead" in prepared.data[:200]
    assert await opus_seconds(prepared.data) == pytest.approx(2.0, abs=0.1)


@needs_ffmpeg
async def test_an_unknown_length_is_measured_and_the_cap_applied(tones: dict[str, bytes]) -> None:
    ogg = tones["ogg"]
    prepared = await prepare_audio(ogg, "a.ogg", "audio/ogg", duration=None, **CAPS)
    assert prepared.data == ogg
    with pytest.raises(errors.AttachmentTooLargeError) as caught:
        await prepare_audio(
            ogg, "a.ogg", "audio/ogg", duration=None, max_seconds=1.5, max_bytes=10**7
        )
    assert caught.value.user_hint == "That audio is 3 s long; the limit is 1 s."


@needs_ffmpeg
async def test_conversions_at_once_all_finish(tones: dict[str, bytes]) -> None:
    results = await asyncio.gather(
        *(prepare_audio(tones["caf"], "m.caf", None, duration=2.0, **CAPS) for _ in range(4))
    )
    assert {result.data[:4] for result in results} == {b"OggS"}


# -- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "duration", "error", "hint"),
    [
        (
            0,
            3.0,
            errors.EmptyAttachmentError,
            "That voice note is empty, so there is nothing to hear.",
        ),
        (
            21 * 1024**2,
            3.0,
            errors.AttachmentTooLargeError,
            "That audio is 21 MB; the limit is 20 MB.",
        ),
        (
            1000,
            725.0,
            errors.AttachmentTooLargeError,
            "That audio is 12 min 5 s long; the limit is 10 min.",
        ),
    ],
    ids=["empty", "too-large", "too-long"],
)
def test_the_caps_refuse_before_the_download_with_the_figures(
    size: int, duration: float, error: type[errors.AttachmentError], hint: str
) -> None:
    with pytest.raises(error) as caught:
        check_audio_caps(size, duration, **CAPS)
    assert caught.value.user_hint == hint
    assert isinstance(caught.value, errors.ParleyError)


def test_unknown_figures_pass_the_caps_until_the_bytes_arrive() -> None:
    check_audio_caps(None, None, **CAPS)
    check_audio_caps(20 * 1024**2, 600.0, **CAPS)  # the caps themselves are allowed


@pytest.mark.usefixtures("no_ffmpeg")
async def test_empty_and_over_the_cap_are_refused_without_any_tool() -> None:
    with pytest.raises(errors.EmptyAttachmentError):
        await prepare_audio(b"", "voice.oga", "audio/ogg", duration=1.0, **CAPS)
    with pytest.raises(errors.AttachmentTooLargeError):
        await prepare_audio(b"OggS" + b"\0" * 100, "v.oga", "audio/ogg", duration=601.0, **CAPS)
    with pytest.raises(errors.AttachmentTooLargeError):
        await prepare_audio(
            b"OggS" + b"\0" * 100, "v.oga", None, duration=1, max_seconds=9, max_bytes=50
        )


@pytest.mark.usefixtures("no_ffmpeg")
async def test_a_file_that_says_it_is_not_audio_is_refused_without_ffmpeg() -> None:
    with pytest.raises(errors.UnsupportedAttachmentError) as caught:
        await prepare_audio(b"\x89PNG\r\n\x1a\n....", "cat.png", "image/png", duration=None, **CAPS)
    assert caught.value.user_hint == (
        "That file is not audio Parley can read, so it could not be transcribed."
    )


@needs_ffmpeg
async def test_without_ffmpeg_a_conversion_is_a_clear_operator_error(
    tones: dict[str, bytes], request: pytest.FixtureRequest
) -> None:
    request.getfixturevalue("no_ffmpeg")
    with pytest.raises(errors.FFmpegMissingError) as caught:
        await prepare_audio(tones["caf"], "memo.caf", None, duration=2.0, **CAPS)
    assert "apt-get install ffmpeg" in str(caught.value)
    assert "ffmpeg" in caught.value.user_hint
    assert isinstance(caught.value, errors.ConfigurationError)
    # An accepted format of unknown length needs ffprobe to be measured: refused, not sent.
    with pytest.raises(errors.FFmpegMissingError, match="ffprobe"):
        await prepare_audio(tones["ogg"], "v.ogg", "audio/ogg", duration=None, **CAPS)


async def test_bytes_of_no_known_audio_format_never_reach_ffmpeg() -> None:
    with pytest.raises(errors.UnsupportedAttachmentError):
        await prepare_audio(
            b"\x00\x01garbage" * 500, "voice.oga", "audio/ogg", duration=None, **CAPS
        )


@needs_ffmpeg
@pytest.mark.parametrize("duration", [None, 3.0], ids=["measured", "from-the-platform"])
async def test_damaged_audio_is_an_error_naming_what_ffmpeg_said(
    tones: dict[str, bytes], duration: float | None
) -> None:
    damaged = tones["caf"][:64] + b"\x00\x01garbage" * 500  # a CAF header, then noise
    with pytest.raises(errors.AudioConversionError) as caught:
        await prepare_audio(damaged, "memo.caf", None, duration=duration, **CAPS)
    assert "exit code" in str(caught.value)
    assert caught.value.user_hint.startswith("The audio could not be read")


@needs_ffmpeg
async def test_a_playlist_cannot_make_ffmpeg_read_other_files(
    tones: dict[str, bytes], tmp_path: Path
) -> None:
    """Left to guess, ffmpeg reads an HLS playlist's entries: files on the bot's server."""
    secret = tmp_path / "secret.mp3"
    secret.write_bytes(tones["mp3"])
    playlist = f"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\n{secret}\n#EXT-X-ENDLIST\n"
    with pytest.raises(errors.UnsupportedAttachmentError):
        await prepare_audio(playlist.encode(), "voice.m3u8", None, duration=None, **CAPS)
    async with on_disk(playlist.encode(), "voice.m3u8") as path:  # even if it got that far
        with pytest.raises(errors.AudioConversionError):
            await to_ogg_opus(path)


@needs_ffmpeg
async def test_a_video_without_sound_is_an_error(tmp_path: Path) -> None:
    video = silent_video(tmp_path / "silent.mov")
    with pytest.raises(errors.AudioConversionError, match="matches no streams"):
        await prepare_audio(video, "clip.mov", "video/quicktime", duration=1.0, **CAPS)


@needs_ffmpeg
async def test_ffmpeg_over_its_timeout_is_stopped(tmp_path: Path) -> None:
    long_tone = tone(tmp_path / "long.caf", seconds=120)
    started = time.monotonic()
    async with on_disk(long_tone, "long.caf") as path:
        with pytest.raises(errors.AudioConversionError, match=r"longer than 0\.01 s") as caught:
            await to_ogg_opus(path, timeout=0.01)
    assert time.monotonic() - started < 5
    assert (
        caught.value.user_hint == "The audio took too long to convert. Please send a shorter one."
    )


async def test_the_temporary_file_is_removed_also_on_failure() -> None:
    with pytest.raises(RuntimeError):
        async with on_disk(b"abc", "x.ogg") as path:
            assert path.read_bytes() == b"abc" and path.suffix == ".ogg"
            raise RuntimeError
    assert not path.exists()
    async with on_disk(b"abc", "x.$(rm -rf)") as odd:
        assert odd.suffix == ".bin"  # only a plain suffix is kept


@pytest.fixture
def own_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary folder of this test's own, for `tempfile` to put the audio in."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def _files(folder: Path) -> list[Path]:
    return list(folder.iterdir())


async def test_a_cancellation_during_the_write_leaves_no_file(
    own_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The write runs in a thread, which a cancellation cannot stop: its file is removed once
    it is written (found in review: it stayed, holding the user's audio)."""
    created, release = threading.Event(), threading.Event()
    real_mkstemp = tempfile.mkstemp

    def slow_mkstemp(*args: Any, **kwargs: Any) -> tuple[int, str]:
        made = real_mkstemp(*args, **kwargs)
        created.set()
        release.wait(10)  # the write is under way when the task is cancelled
        return made

    monkeypatch.setattr(tempfile, "mkstemp", slow_mkstemp)
    discarded = asyncio.Event()
    real_discard = ffmpeg_module._discard

    def spy(write: asyncio.Future[Path]) -> None:
        real_discard(write)
        discarded.set()

    monkeypatch.setattr(ffmpeg_module, "_discard", spy)

    async def use() -> None:
        async with on_disk(b"voice" * 1000, "note.ogg"):
            raise AssertionError("never reached")

    task = asyncio.create_task(use())
    assert await asyncio.to_thread(created.wait, 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    release.set()
    await asyncio.wait_for(discarded.wait(), 10)
    assert _files(own_tmp) == []


async def test_a_cancellation_while_the_file_is_in_use_removes_it_at_once(own_tmp: Path) -> None:
    in_use = asyncio.Event()

    async def use() -> None:
        async with on_disk(b"voice", "note.ogg"):
            in_use.set()
            await asyncio.Event().wait()  # a tool that never ends

    task = asyncio.create_task(use())
    await asyncio.wait_for(in_use.wait(), 10)
    assert len(_files(own_tmp)) == 1
    task.cancel()
    task.cancel()  # twice: a timeout firing while the first cancellation is handled
    with pytest.raises(asyncio.CancelledError):
        await task
    assert _files(own_tmp) == []


def test_a_failed_write_leaves_no_file(own_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full_disk(*args: Any, **kwargs: Any) -> Any:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ffmpeg_module.os, "fdopen", full_disk)
    with pytest.raises(OSError, match="No space"):
        ffmpeg_module._write_temporary(b"voice", ".ogg")
    assert _files(own_tmp) == []


# -- what is trusted of the platform's figures ----------------------------------------------------


@needs_ffmpeg
async def test_a_stated_length_the_size_cannot_fit_is_measured(tones: dict[str, bytes]) -> None:
    """Two seconds of WAV (176 KB) stated as 0.1 s: a client lying to pass the length cap."""
    wav = tones["wav"]
    assert len(wav) > 0.1 * PLAUSIBLE_BYTES_PER_SECOND
    with pytest.raises(errors.AttachmentTooLargeError) as caught:
        await prepare_audio(
            wav, "v.wav", "audio/wav", duration=0.1, max_seconds=1.5, max_bytes=10**7
        )
    assert caught.value.user_hint == "That audio is 2 s long; the limit is 1 s."


@needs_ffmpeg
async def test_a_file_converted_anyway_is_measured_whatever_its_stated_length(
    tones: dict[str, bytes],
) -> None:
    with pytest.raises(errors.AttachmentTooLargeError):
        await prepare_audio(
            tones["caf"], "m.caf", None, duration=0.5, max_seconds=1.5, max_bytes=10**7
        )


@needs_ffmpeg
async def test_without_ffprobe_an_implausible_length_is_refused_not_believed(
    tones: dict[str, bytes], request: pytest.FixtureRequest
) -> None:
    request.getfixturevalue("no_ffmpeg")
    with pytest.raises(errors.FFmpegMissingError, match="ffprobe"):
        await prepare_audio(tones["wav"], "v.wav", "audio/wav", duration=0.1, **CAPS)
    # A stated length the size fits still goes without any tool.
    prepared = await prepare_audio(tones["wav"], "v.wav", "audio/wav", duration=2.0, **CAPS)
    assert not prepared.converted


async def test_the_byte_cap_applies_whatever_length_is_stated() -> None:
    note = b"OggS" + bytes(5000)
    with pytest.raises(errors.AttachmentTooLargeError, match="VOICE_MAX_BYTES"):
        await prepare_audio(
            note, "v.ogg", "audio/ogg", duration=1.0, max_seconds=600, max_bytes=4096
        )
