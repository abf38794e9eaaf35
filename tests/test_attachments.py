"""bots.attachments: a message's files read into one question, the same for both bots.

The downloads are in-memory callables here (each platform's real download is tested end to end
in its bot's tests); transcription goes over real HTTP to the fake LLM server."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from PIL import Image

from bots.attachments import (
    TRANSCRIPT_QUOTE_CHARS,
    Attachment,
    Kind,
    classify,
    gather,
    notes_text,
    transcript_quote,
)
from core import errors
from core.config import CoreSettings
from tests.fakes.llm_server import FakeLLMServer, Script

OGG = b"OggS" + b"\x00" * 60  # enough for the sniffer; the fake does not decode audio


def jpeg(colour: str = "red", size: tuple[int, int] = (64, 48)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "JPEG")
    return buffer.getvalue()


class Downloads:
    """Counts the downloads, so a test can see what was never fetched."""

    def __init__(self) -> None:
        self.fetched: list[str] = []

    def of(self, name: str, data: bytes | BaseException) -> Callable[[], Awaitable[bytes]]:
        async def fetch() -> bytes:
            self.fetched.append(name)
            if isinstance(data, BaseException):
                raise data
            return data

        return fetch

    def file(
        self, name: str, data: bytes | BaseException, mime: str | None = None, **more: Any
    ) -> Attachment:
        size = None if isinstance(data, BaseException) else len(data)
        return Attachment(name, mime, more.pop("size", size), self.of(name, data), **more)


@pytest.fixture
def downloads() -> Downloads:
    return Downloads()


@pytest.fixture
async def fake() -> AsyncIterator[FakeLLMServer]:
    async with FakeLLMServer() as server:
        yield server


def settings(transcribe_url: str | None = None, **values: Any) -> CoreSettings:
    return CoreSettings(
        _env_file=None, transcribe_base_url=transcribe_url, transcribe_api_key="k", **values
    )


@pytest.mark.parametrize(
    ("name", "mime", "kind"),
    [
        ("photo.jpg", "image/jpeg", Kind.IMAGE),
        ("scan.heic", None, Kind.IMAGE),  # refused later, with the formats the bot reads
        ("voice-message.ogg", "audio/ogg", Kind.AUDIO),
        ("memo.m4a", None, Kind.AUDIO),
        ("notes.md", None, Kind.TEXT),
        ("main.py", "application/octet-stream", Kind.TEXT),
        ("logo.svg", "image/svg+xml", Kind.TEXT),
        ("report.pdf", "application/pdf", Kind.OTHER),
        ("archive.zip", None, Kind.OTHER),
    ],
)
def test_files_are_sorted_by_type_then_name(name: str, mime: str | None, kind: Kind) -> None:
    assert classify(name, mime) is kind


async def test_text_images_and_files_become_one_question(downloads: Downloads) -> None:
    gathered = await gather(
        "compare these",
        [
            downloads.file("a.jpg", jpeg("red"), "image/jpeg", label="photo"),
            downloads.file("data.csv", b"x,y\n1,2\n", "text/csv"),
            downloads.file("b.png", jpeg("blue"), "image/png", label="photo"),
        ],
        settings(),
    )
    assert gathered.answerable and gathered.notes == [] and gathered.transcript is None
    assert gathered.text.startswith("compare these\n\nFile: data.csv\n```csv\nx,y\n1,2\n```")
    assert [image.media_type for image in gathered.images] == ["image/jpeg", "image/jpeg"]
    colours = [Image.open(io.BytesIO(image.data)).getpixel((0, 0)) for image in gathered.images]
    assert colours[0][0] > 200 and colours[1][2] > 200  # red first, then blue: the order kept


async def test_images_past_the_limit_are_never_downloaded(downloads: Downloads) -> None:
    photos = [downloads.file(f"{n}.jpg", jpeg(), "image/jpeg") for n in range(5)]
    gathered = await gather("", photos, settings(images_per_message=2))
    assert len(gathered.images) == 2 and downloads.fetched == ["0.jpg", "1.jpg"]
    assert gathered.notes == [
        "I looked at the first 2 images only (2 per message); 3 more were left out."
    ]


async def test_an_image_over_the_limit_is_refused_from_its_stated_size(
    downloads: Downloads,
) -> None:
    big = downloads.file("big.jpg", jpeg(), "image/jpeg", size=30 * 1024**2)
    gathered = await gather("what is it?", [big], settings())
    assert downloads.fetched == [] and gathered.images == []
    assert gathered.notes == ["That image is over 20 MB. Please send a smaller one."]
    assert gathered.text == "what is it?" and gathered.answerable


async def test_a_broken_image_is_named_and_the_good_one_still_goes(downloads: Downloads) -> None:
    gathered = await gather(
        "",
        [
            downloads.file("good.jpg", jpeg(), "image/jpeg", label="photo"),
            downloads.file("bad.jpg", jpeg()[:200], "image/jpeg", label="photo"),
        ],
        settings(),
    )
    assert len(gathered.images) == 1 and gathered.answerable
    assert gathered.notes == [f"Photo bad.jpg: {errors.CorruptImageError.user_hint}"]


async def test_nothing_readable_is_recorded_for_the_history(downloads: Downloads) -> None:
    gathered = await gather(
        "",
        [
            downloads.file("x.jpg", b"", "image/jpeg", label="photo"),
            downloads.file("report.pdf", b"%PDF-1.7", "application/pdf"),
        ],
        settings(),
    )
    assert not gathered.answerable
    assert gathered.record == "[file report.pdf: not read] [photo: not read]"
    assert gathered.notes[0].startswith("File report.pdf: I can't read report.pdf: I read photos")


async def test_a_failed_download_says_which_file(downloads: Downloads) -> None:
    gathered = await gather(
        "read this",
        [downloads.file("a.txt", ConnectionResetError("gone"), "text/plain")],
        settings(),
    )
    assert gathered.notes == ["I could not download a.txt. Please send it again."]
    assert gathered.text == "read this"


async def test_the_platforms_own_refusal_is_shown_as_it_is(downloads: Downloads) -> None:
    too_big = errors.AttachmentTooLargeError("getFile: file is too big", "Telegram: too big.")
    gathered = await gather("", [downloads.file("a.txt", too_big, "text/plain")], settings())
    assert gathered.notes == ["Telegram: too big."]


async def test_a_file_that_is_not_utf8_gets_its_line(downloads: Downloads) -> None:
    latin1 = "café".encode("latin-1")
    gathered = await gather("", [downloads.file("menu.txt", latin1, "text/plain")], settings())
    assert gathered.notes == ["menu.txt is not UTF-8 text, so I could not read it."]
    assert not gathered.answerable and gathered.record == "[file menu.txt: not read]"


async def test_a_voice_note_is_transcribed_and_the_transcript_is_the_question(
    downloads: Downloads, fake: FakeLLMServer
) -> None:
    fake.enqueue(Script(pieces=["what time is it"]))
    voice = downloads.file("voice.oga", OGG, "audio/ogg", label="voice note", duration=2.0)
    gathered = await gather("", [voice], settings(f"{fake.base_url}"))
    assert (gathered.transcript, gathered.text) == ("what time is it", "what time is it")
    assert fake.requests[0].path == "/v1/audio/transcriptions"
    assert fake.requests[0].files["file"].data == OGG


async def test_voice_notes_off_means_a_line_and_no_download(downloads: Downloads) -> None:
    voice = downloads.file("voice.oga", OGG, "audio/ogg", label="voice note", duration=2.0)
    gathered = await gather("", [voice], settings(None))
    assert downloads.fetched == [] and not gathered.answerable
    assert gathered.notes == [errors.TranscriptionOffError.user_hint]
    assert gathered.record == "[voice note: not read]"


async def test_a_transcription_server_error_is_one_line(
    downloads: Downloads, fake: FakeLLMServer
) -> None:
    fake.enqueue(Script(status=500))
    voice = downloads.file("voice.oga", OGG, "audio/ogg", label="voice note", duration=2.0)
    gathered = await gather("", [voice], settings(fake.base_url))
    assert len(gathered.notes) == 1 and "transcri" in gathered.notes[0].lower()
    assert not gathered.answerable


async def test_an_empty_voice_note_is_refused_before_download(downloads: Downloads) -> None:
    voice = downloads.file("voice.oga", b"", "audio/ogg", label="voice note", duration=0.0)
    gathered = await gather("", [voice], settings("http://127.0.0.1:9"))
    assert downloads.fetched == [] and "empty" in gathered.notes[0]


def test_a_transcript_is_quoted_whole_when_short_and_cut_when_long() -> None:
    assert transcript_quote("hello\n there") == "🎤 “hello there”"
    long = transcript_quote("word " * 400)
    assert long.endswith("…”") and len(long) <= TRANSCRIPT_QUOTE_CHARS + 4
    assert notes_text(["a", "b"]) == "⚠️ a\n⚠️ b"


async def test_a_download_that_hangs_is_given_up_as_a_failed_one(
    downloads: Downloads, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("bots.attachments.DOWNLOAD_TIMEOUT_SECONDS", 0.05)

    async def never() -> bytes:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    hanging = Attachment("notes.txt", "text/plain", 10, never)
    gathered = await asyncio.wait_for(
        gather("read this", [hanging, downloads.file("a.txt", b"fine")], settings()), 5
    )
    assert "fine" in gathered.text
    assert gathered.notes == [
        "File notes.txt: I could not download notes.txt. Please send it again."
    ]


async def test_an_unforeseen_error_reading_one_file_costs_only_that_file(
    downloads: Downloads, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object) -> str:
        raise RuntimeError("a bug in a decoder")

    monkeypatch.setattr("bots.attachments.read_text_attachment", broken)
    gathered = await gather(
        "look", [downloads.file("a.txt", b"x"), downloads.file("p.jpg", jpeg())], settings()
    )
    assert len(gathered.images) == 1 and gathered.text == "look"
    assert gathered.notes == ["File a.txt: I could not read a.txt. Please send it again."]
    assert gathered.record == "[file a.txt: not read]"
