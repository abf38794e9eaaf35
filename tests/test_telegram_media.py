"""Photos, albums, voice notes, files and /image on Telegram, end to end: the real aiogram bot
against the fake Bot API, the real conversation service on SQLite, and the fake LLM server as
the chat model, the transcription endpoint and the image model.

The chat model is "gpt-4o" (a vision preset), so images go to it; every wait is on an event.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bots.attachments import transcript_quote
from bots.drawing import IMAGE_USAGE
from bots.telegram.handlers.commands import ADMINS_ONLY, IMAGE_NOT_SENT
from core.conversation import ChatRef, Reply
from core.errors import ContentPolicyError, ImageGenerationOffError
from tests.fakes.llm_server import GENERATED_PNG, FakeLLMServer, Script
from tests.fakes.telegram_api import (
    PHOTO_TOO_BIG,
    FakeChat,
    StoredMessage,
    bad_request,
)
from tests.test_telegram_bot import (
    ALICE,
    BOB,
    WAIT,
    Harness,
    replies,
    running_bot,
)

OGG = b"OggS" + b"\x00" * 60  # enough for the sniffer; the fake does not decode audio
IMAGE_MODEL = "fake-image"


def jpeg(colour: str = "red", size: tuple[int, int] = (64, 48)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "JPEG")
    return buffer.getvalue()


@contextlib.asynccontextmanager
async def media_bot(tmp_path: Path, **fields: object) -> AsyncIterator[Harness]:
    """The bot with a vision model, transcription and drawing pointed at the fake LLM."""
    values: dict[str, object] = {"default_model": "gpt-4o", "image_model": IMAGE_MODEL, **fields}

    def llm_settings(llm: FakeLLMServer) -> dict[str, object]:
        return {"transcribe_base_url": llm.base_url}

    async with running_bot(tmp_path, llm_settings=llm_settings, **values) as harness:
        yield harness


async def reply_to(h: Harness, chat: FakeChat, request: dict, start: str) -> StoredMessage:
    """The bot's (first) message replying to `request` whose text starts with `start`."""
    return await h.tg.wait_until(
        lambda: next((m for m in replies(chat, request) if (m.text or "").startswith(start)), None),
        WAIT,
    )


async def stored_texts(h: Harness, chat: FakeChat) -> list[str]:
    history = await h.service.history(ChatRef("telegram", str(chat.id), ""))
    return [m.text for m in history]


async def goes_on(h: Harness, chat: FakeChat, sender: dict, text: str = "still there?") -> None:
    """The chat goes on: a following text message is answered."""
    group = chat.type != "private"
    asked = await h.ask(chat, sender, f"{h.mention} {text}" if group else text)
    await reply_to(h, chat, asked, "echo: ")


def image_urls(request_json: dict) -> list[str]:
    return [
        part["image_url"]["url"]
        for message in request_json["messages"]
        if isinstance(message["content"], list)
        for part in message["content"]
        if part.get("type") == "image_url"
    ]


# -- happy paths --------------------------------------------------------------------------------


async def test_a_captioned_photo_reaches_the_model_and_stays_in_context(
    tmp_path: Path, clean_logs: Callable[[], None]
) -> None:
    async with media_bot(tmp_path) as h:
        h.llm.enqueue(Script(pieces=["A red", " square", "."], delay=0.02))
        chat = h.tg.private_chat(ALICE)
        small, big = jpeg(size=(32, 24)), jpeg(size=(640, 480))
        photo = await h.tg.photo_message(
            chat, ALICE, [(32, 24, small), (640, 480, big)], caption="what is this?"
        )
        await h.reply_text(chat, photo, "A red square.")
        (first,) = h.llm.requests
        assert first.json["messages"][-1]["content"][0] == {"type": "text", "text": "what is this?"}
        (url,) = image_urls(first.json)
        assert url.startswith("data:image/jpeg;base64,")
        assert len(h.tg.downloads) == 1 and h.tg.downloads[0].startswith("photos/")
        assert h.tg.files[photo["photo"][-1]["file_id"]].file_path == h.tg.downloads[0]
        follow = await h.ask(chat, ALICE, "and the corner?")
        await reply_to(h, chat, follow, "echo: ")
        assert image_urls(h.llm.requests[1].json) == [url]  # the image still goes with it
        assert (await stored_texts(h, chat))[:3] == [
            "what is this?",
            "A red square.",
            "and the corner?",
        ]
    clean_logs()


async def test_a_text_sent_while_a_photo_downloads_comes_after_it(
    tmp_path: Path, clean_logs: Callable[[], None]
) -> None:
    async with media_bot(tmp_path) as h:
        chat = h.tg.private_chat(ALICE)
        release = h.tg.hold("getFile")
        queued = asyncio.Event()
        ask = h.service.reply

        def reply(*args: Any, **kwargs: Any) -> Reply:
            try:
                return ask(*args, **kwargs)
            finally:
                queued.set()

        h.service.reply = reply  # type: ignore[method-assign]
        photo = await h.tg.photo_message(chat, ALICE, [(64, 48, jpeg())], caption="what is this?")
        follow = await h.ask(chat, ALICE, "and the corner?")
        await asyncio.wait_for(queued.wait(), WAIT)  # the question is in the service's hands
        release.set()
        await reply_to(h, chat, photo, "echo: ")
        await reply_to(h, chat, follow, "echo: ")
        texts = [t for t in await stored_texts(h, chat) if not t.startswith("echo")]
        assert texts == ["what is this?", "and the corner?"]
        (corner,) = [r for r in h.llm.requests if "and the corner?" in str(r.json["messages"][-1])]
        assert len(image_urls(corner.json)) == 1  # asked knowing the photo
    clean_logs()


async def test_an_album_is_one_question_with_its_images(
    tmp_path: Path, clean_logs: Callable[[], None]
) -> None:
    async with media_bot(tmp_path) as h:
        chat = h.tg.private_chat(ALICE)
        colours = ("red", "green", "blue")
        album = await h.tg.album(
            chat, ALICE, [[(64, 48, jpeg(c))] for c in colours], caption="compare these"
        )
        await reply_to(h, chat, album[0], "echo: compare these")
        await h.llm.wait_for_requests(1)
        (request,) = h.llm.requests
        assert len(image_urls(request.json)) == 3
        assert all(replies(chat, item) == [] for item in album[1:])
        await goes_on(h, chat, ALICE)
        assert len(h.llm.requests) == 2
    clean_logs()


async def test_a_voice_note_is_quoted_then_answered_and_stored_as_its_transcript(
    tmp_path: Path, clean_logs: Callable[[], None]
) -> None:
    async with media_bot(tmp_path) as h:
        h.llm.enqueue(Script(pieces=["what time is it in Tokyo?"]))  # the transcript
        chat = h.tg.private_chat(ALICE)
        voice = await h.tg.voice_message(chat, ALICE, OGG, duration=3)
        quote = transcript_quote("what time is it in Tokyo?")
        await h.reply_text(chat, voice, quote)
        await reply_to(h, chat, voice, "echo: what time is it in Tokyo?")
        transcription, completion = h.llm.requests
        assert transcription.path == "/v1/audio/transcriptions"
        assert transcription.files["file"].data == OGG
        assert completion.json["messages"][-1]["content"] == "what time is it in Tokyo?"
        quoted, answered = replies(chat, voice)
        assert quoted.text == quote and answered.message_id > quoted.message_id
        assert (await stored_texts(h, chat))[0] == "what time is it in Tokyo?"
    clean_logs()


async def test_a_source_file_reaches_the_model_under_its_name(
    tmp_path: Path, clean_logs: Callable[[], None]
) -> None:
    async with media_bot(tmp_path) as h:
        chat = h.tg.private_chat(ALICE)
        source = b"def add(a, b):\n    return a + b\n"
        sent = await h.tg.document_message(
            chat, ALICE, source, file_name="calc.py", caption="review this"
        )
        await reply_to(h, chat, sent, "echo: review this")
        prompt = h.llm.requests[0].json["messages"][-1]["content"]
        assert prompt.startswith("review this")
        assert "calc.py" in prompt and "return a + b" in prompt
    clean_logs()


async def test_group_media_only_when_addressed(
    tmp_path: Path, clean_logs: Callable[[], None]
) -> None:
    async with media_bot(tmp_path) as h:
        group = h.tg.supergroup()
        ignored = await h.tg.photo_message(group, BOB, [(64, 48, jpeg())], caption="our holiday")
        ignored_voice = await h.tg.voice_message(group, BOB, OGG, duration=2)
        mentioned = await h.tg.photo_message(
            group, BOB, [(64, 48, jpeg("blue"))], caption=f"{h.mention} what colour?"
        )
        await reply_to(h, group, mentioned, "echo: [Bob] what colour?")
        asked = await h.ask(group, ALICE, "/ask and this one?", reply_to=ignored["message_id"])
        await reply_to(h, group, asked, "echo: [Alice] and this one?")
        assert replies(group, ignored) == [] and replies(group, ignored_voice) == []
        assert [len(image_urls(r.json)) for r in h.llm.requests] == [1, 2]
        assert len(h.tg.downloads) == 2  # the ignored voice note was never fetched
    clean_logs()


async def test_image_draws_and_sends_a_photo(
    tmp_path: Path, clean_logs: Callable[[], None]
) -> None:
    async with media_bot(tmp_path) as h:
        chat = h.tg.private_chat(ALICE)
        asked = await h.ask(chat, ALICE, "/image a lighthouse at dusk")
        photo = await h.tg.wait_until(
            lambda: next((m for m in replies(chat, asked) if "photo" in m.raw), None), WAIT
        )
        assert h.tg.photo_bytes(photo) == GENERATED_PNG
        assert photo.raw["caption"] == "a lighthouse at dusk"
        actions = [c.params["action"] for c in h.tg.calls_of("sendChatAction")]
        assert actions == ["upload_photo"]
        (drawn,) = [r for r in h.llm.requests if r.path == "/v1/images/generations"]
        assert drawn.json["model"] == IMAGE_MODEL
        usage = await h.ask(chat, ALICE, "/image")
        await h.reply_text(chat, usage, IMAGE_USAGE)
        assert await stored_texts(h, chat) == []  # a drawing is not part of the conversation
        assert any(c["command"] == "image" for c in h.tg.commands)
    clean_logs()


async def test_image_of_a_long_emoji_prompt_is_sent_with_a_caption_telegram_takes(
    tmp_path: Path, clean_logs: Callable[[], None]
) -> None:
    async with media_bot(tmp_path) as h:
        chat = h.tg.private_chat(ALICE)
        asked = await h.ask(chat, ALICE, "/image " + "🐱" * 700)
        photo = await h.tg.wait_until(
            lambda: next((m for m in replies(chat, asked) if "photo" in m.raw), None), WAIT
        )
        assert photo.raw["caption"].endswith("…")
    clean_logs()


async def test_a_drawing_telegram_refuses_to_take_is_one_line(
    tmp_path: Path, clean_logs: Callable[[], None]
) -> None:
    async with media_bot(tmp_path) as h:
        chat = h.tg.private_chat(ALICE)
        h.tg.inject_error("sendPhoto", bad_request(PHOTO_TOO_BIG))
        asked = await h.ask(chat, ALICE, "/image a lighthouse")
        await h.reply_text(chat, asked, IMAGE_NOT_SENT)
        await goes_on(h, chat, ALICE)
    clean_logs()


async def test_image_switch_is_for_admins(tmp_path: Path, clean_logs: Callable[[], None]) -> None:
    async with media_bot(tmp_path) as h:
        group = h.tg.supergroup()
        h.tg.set_admins(group, [ALICE["id"]])
        refused = await h.ask(group, BOB, "/image off")
        await h.reply_text(group, refused, ADMINS_ONLY)
        off = await h.ask(group, ALICE, "/image off")
        await reply_to(h, group, off, "Drawing images is off")
        asked = await h.ask(group, BOB, "/image a cat")
        await reply_to(h, group, asked, "Drawing images is turned off in this chat.")
        on = await h.ask(group, ALICE, "/image on")
        await reply_to(h, group, on, "Drawing images is on")
        again = await h.ask(group, BOB, "/image a cat")
        await h.tg.wait_until(lambda: any("photo" in m.raw for m in replies(group, again)), WAIT)
        assert len([r for r in h.llm.requests if r.path == "/v1/images/generations"]) == 1
    clean_logs()


async def test_image_without_image_model_says_it_is_off(
    tmp_path: Path, clean_logs: Callable[[], None]
) -> None:
    async with media_bot(tmp_path, image_model=None) as h:
        chat = h.tg.private_chat(ALICE)
        asked = await h.ask(chat, ALICE, "/image a cat")
        await h.reply_text(chat, asked, ImageGenerationOffError.user_hint)
        assert h.llm.requests == []
    clean_logs()


# -- bad input: one clear line, the message stored, the chat goes on ----------------------------

BIG = 21 * 1024 * 1024  # over Telegram's 20 MB download limit for bots
Send = Callable[[Harness, FakeChat], Awaitable[dict]]


def _photo(data: bytes) -> Send:
    return lambda h, chat: h.tg.photo_message(chat, ALICE, [(640, 480, data)])


def _document(data: bytes, name: str) -> Send:
    return lambda h, chat: h.tg.document_message(chat, ALICE, data, file_name=name)


def _voice(data: bytes) -> Send:
    return lambda h, chat: h.tg.voice_message(chat, ALICE, data, duration=2)


BAD_INPUT = {
    "corrupt image": (
        {},
        _photo(b"\xff\xd8\xff\xe0" + b"\x00" * 300),
        "That image is damaged",
        "[photo: not read]",
    ),
    "image over the limit": (
        {"image_max_bytes": 1000},
        _photo(jpeg(size=(640, 480))),
        "That image is over",
        "[photo: not read]",
    ),
    "empty voice note": ({}, _voice(b""), "That voice note is empty", "[voice note: not read]"),
    "unsupported audio format": (
        {},
        lambda h, chat: h.tg.audio_message(
            chat, ALICE, b"no audio here " * 20, duration=5, file_name="song.mp3"
        ),
        "not audio Parley can read",
        "[audio: not read]",
    ),
    "transcription down": (
        {"transcribe_base_url": "http://127.0.0.1:9/v1"},
        _voice(OGG),
        "could not be reached",
        "[voice note: not read]",
    ),
    "not UTF-8": (
        {},
        _document("café au lait".encode("latin-1"), "notes.txt"),
        "not UTF-8 text",
        "[file notes.txt: not read]",
    ),
    "pdf": (
        {},
        _document(b"%PDF-1.7", "report.pdf"),
        "I can't read report.pdf",
        "[file report.pdf: not read]",
    ),
    "over 20 MB": (
        {"image_max_bytes": 25 * 1024 * 1024},
        _document(b"\x89PNG" + b"\x00" * BIG, "poster.png"),
        "more than Telegram lets a bot download",
        "[file poster.png: not read]",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUT), ids=list(BAD_INPUT))
async def test_bad_input_gets_one_line_and_the_chat_goes_on(
    case: str, tmp_path: Path, clean_logs: Callable[[], None]
) -> None:
    fields, send, line, record = BAD_INPUT[case]
    async with media_bot(tmp_path, **fields) as h:
        chat = h.tg.private_chat(ALICE)
        sent = await send(h, chat)
        note = await reply_to(h, chat, sent, "⚠️ ")
        assert line in (note.text or "") and "\n" not in (note.text or "")
        await goes_on(h, chat, ALICE)
        stored = await stored_texts(h, chat)
        assert stored[0].startswith(record) and stored[1:] == ["still there?", "echo: still there?"]
        assert len(replies(chat, sent)) == 1
        assert [r.path for r in h.llm.requests][-1] == "/v1/chat/completions"
        assert len([r for r in h.llm.requests if r.path == "/v1/chat/completions"]) == 1
    clean_logs()


async def test_a_transcription_server_error_is_one_line(
    tmp_path: Path, clean_logs: Callable[[], None]
) -> None:
    async with media_bot(tmp_path) as h:
        h.llm.enqueue(Script(status=500, error_message="whisper fell over"))
        chat = h.tg.private_chat(ALICE)
        voice = await h.tg.voice_message(chat, ALICE, OGG, duration=2)
        note = await reply_to(h, chat, voice, "⚠️ ")
        assert note.text == "⚠️ The voice transcription service had an error. Please try again."
        await goes_on(h, chat, ALICE)
        assert (await stored_texts(h, chat))[0] == "[voice note: not read]"
    clean_logs()


async def test_a_refused_image_prompt_is_one_line(
    tmp_path: Path, clean_logs: Callable[[], None]
) -> None:
    async with media_bot(tmp_path) as h:
        h.llm.image_scripts.append(
            Script(status=400, error_code="content_policy_violation", error_message="refused")
        )
        chat = h.tg.private_chat(ALICE)
        asked = await h.ask(chat, ALICE, "/image something forbidden")
        await h.reply_text(chat, asked, ContentPolicyError.user_hint)
        await goes_on(h, chat, ALICE)
        assert not any("photo" in m.raw for m in chat.bot_messages())
    clean_logs()


async def test_ask_replying_to_a_voice_note_in_a_group_quotes_it_there(
    tmp_path: Path, clean_logs: Callable[[], None]
) -> None:
    async with media_bot(tmp_path) as h:
        group = h.tg.supergroup()
        voice = await h.tg.voice_message(group, BOB, OGG, duration=4)
        h.llm.enqueue(Script(pieces=["meet at noon"]))
        asked = await h.ask(group, ALICE, "/ask summarise", reply_to=voice["message_id"])
        await h.reply_text(group, voice, transcript_quote("meet at noon"))
        await reply_to(h, group, asked, "echo: [Alice] summarise")
        completion = h.llm.requests[-1].json["messages"][-1]["content"]
        assert completion == "[Alice] summarise\n\nmeet at noon"
    clean_logs()


async def test_video_notes_and_images_sent_as_files_are_read(
    tmp_path: Path, clean_logs: Callable[[], None]
) -> None:
    async with media_bot(tmp_path) as h:
        chat = h.tg.private_chat(ALICE)
        h.llm.enqueue(Script(pieces=["hello from a circle"]))
        round_video = await h.tg.video_note_message(chat, ALICE, b"\0\0\0\x18ftypmp42", duration=3)
        await reply_to(h, chat, round_video, "echo: hello from a circle")
        as_file = await h.tg.document_message(
            chat, ALICE, jpeg("green"), file_name="scan.jpg", caption="read it"
        )
        await reply_to(h, chat, as_file, "echo: read it")
        upload = h.llm.requests[0].files["file"]
        assert upload.filename == "audio.mp4"
        assert len(image_urls(h.llm.requests[-1].json)) == 1
    clean_logs()
