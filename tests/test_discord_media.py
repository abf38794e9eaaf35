"""Images, voice messages, files and /image on Discord, end to end (issue 11).

The real `DiscordBot` against the fake Discord (attachments served from its signed CDN, file
uploads taken as discord.py sends them) and the fake LLM (image parts recorded,
`/audio/transcriptions` and `/images/generations` answered), with a real SQLite store.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bots.attachments import transcript_quote
from bots.discord.commands import ADMINS_ONLY, IMAGE_TOO_LARGE
from bots.drawing import IMAGE_USAGE
from core.conversation import ChatRef
from core.errors import ContentPolicyError, CorruptImageError, ImageGenerationOffError
from storage import Role, StoredMessage
from tests.audio_support import needs_ffmpeg, tone
from tests.fakes.discord_api import (
    ALICE_ID,
    BOB_ID,
    GENERAL_ID,
    MAX_UPLOAD_BYTES,
    Attachment,
    FakeDiscord,
)
from tests.fakes.llm_server import GENERATED_PNG, FakeLLMServer, Script
from tests.test_discord_bot import MENTION, WAIT, Harness, _bot

GENERAL = ChatRef("discord", str(GENERAL_ID))
#: A model the presets know can see images, so they are sent to it.
VISION_MODEL = "gpt-4o"
IMAGE_MODEL = "fake-image-model"


def _media(llm: FakeLLMServer) -> dict[str, Any]:
    return {"transcribe_base_url": llm.base_url, "image_model": IMAGE_MODEL}


@contextlib.asynccontextmanager
async def _media_bot(tmp_path: Path, fake: FakeDiscord, **overrides: Any) -> AsyncIterator[Harness]:
    settings = {"default_model": VISION_MODEL, "llm_settings": _media, **overrides}
    async with _bot(tmp_path, fake, **settings) as harness:
        yield harness


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as server:
        yield server


@pytest.fixture
async def bot(tmp_path: Path, fake: FakeDiscord) -> AsyncIterator[Harness]:
    async with _media_bot(tmp_path, fake) as harness:
        yield harness


def jpeg(width: int = 64, height: int = 48, *, noise: bool = False) -> bytes:
    """A real JPEG; with `noise`, one that compresses badly (a large file)."""
    image = Image.new("RGB", (width, height), (200, 40, 40))
    if noise:
        rng = random.Random(7)
        image = Image.frombytes("RGB", (width, height), rng.randbytes(width * height * 3))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=95)
    return out.getvalue()


def photo(name: str = "cat.jpg", data: bytes | None = None) -> Attachment:
    return Attachment(name, data if data is not None else jpeg(), width=64, height=48)


def chat_requests(llm: FakeLLMServer) -> list[list[dict[str, Any]]]:
    """The messages of each chat-completion request, in order (transcriptions left out)."""
    return [r.json["messages"] for r in llm.requests if r.path.endswith("/chat/completions")]


def image_urls(messages: list[dict[str, Any]]) -> list[str]:
    return [
        part["image_url"]["url"]
        for message in messages
        if isinstance(message["content"], list)
        for part in message["content"]
        if part["type"] == "image_url"
    ]


def text_of(message: dict[str, Any]) -> str:
    content = message["content"]
    if isinstance(content, str):
        return content
    return "".join(part["text"] for part in content if part["type"] == "text")


async def said(bot: Harness, text: str, channel: int = GENERAL_ID) -> None:
    """Wait until one of the bot's messages in `channel` reads `text`."""
    await bot.fake.wait_for(
        lambda: any(m.content == text for m in bot.fake.bot_messages(channel)), WAIT
    )


def user_texts(history: list[StoredMessage]) -> list[str]:
    return [m.text for m in history if m.role is Role.USER]


# ---------------------------------------------------------------- happy paths


async def test_a_mention_with_an_image_sends_it_to_the_model_and_the_next_turn_too(
    bot: Harness,
) -> None:
    bot.llm.enqueue(Script(pieces=["A ", "red ", "square."]))
    await bot.fake.push_message(f"{MENTION} what is this?", attachments=[photo()])
    await bot.answer(GENERAL_ID, "A red square.")

    (first,) = chat_requests(bot.llm)
    (url,) = image_urls(first)
    assert url.startswith("data:image/jpeg;base64,")
    assert text_of(first[-1]).endswith("what is this?")
    history = await bot.service.history(GENERAL)
    assert history[0].image_count == 1 and history[0].text.endswith("what is this?")

    bot.llm.enqueue(Script(pieces=["Top left."]))
    await bot.fake.push_message(f"{MENTION} and what is in the corner?")
    await bot.answer(GENERAL_ID, "Top left.")
    second = chat_requests(bot.llm)[1]
    assert image_urls(second) == [url]  # the context carries the earlier turn's image


async def test_a_mention_replying_to_an_image_uses_that_image(bot: Harness) -> None:
    shared = await bot.fake.push_message("look at my cat", author=ALICE_ID, attachments=[photo()])
    bot.llm.enqueue(Script(pieces=["A cat."]))
    await bot.fake.push_message(f"{MENTION} what breed?", reply_to=shared.id)
    await bot.answer(GENERAL_ID, "A cat.")
    (request,) = chat_requests(bot.llm)
    assert len(image_urls(request)) == 1
    cdn = bot.fake.calls_to("GET", r"/attachments/.+")
    assert [c.status for c in cdn] == [200]  # downloaded once, for the mention only


async def test_an_unaddressed_image_is_neither_downloaded_nor_answered(bot: Harness) -> None:
    await bot.fake.push_message("holiday", attachments=[photo()])
    await bot.fake.push_voice_message(b"OggS" + bytes(200), duration_secs=1.0)
    bot.llm.enqueue(Script(pieces=["ok"]))
    await bot.fake.push_message(f"{MENTION} hi")
    await bot.answer(GENERAL_ID, "ok")
    assert not bot.fake.calls_to("GET", r"/attachments/.+")
    assert len(bot.llm.requests) == 1


@needs_ffmpeg
async def test_a_voice_message_is_quoted_then_answered_and_its_transcript_stored(
    bot: Harness, tmp_path: Path
) -> None:
    recording = tone(tmp_path / "voice.ogg", seconds=1.0)
    bot.llm.enqueue(Script(pieces=["Hello."]))
    answer = await _answered(bot, f"{MENTION} hi")
    # A voice message counts as addressed in a server only as a reply to the bot.
    bot.llm.enqueue(Script(pieces=["what time is it"]), Script(pieces=["Noon."]))
    voice = await bot.fake.push_voice_message(recording, duration_secs=1.0, reply_to=answer)
    await said(bot, "Noon.")
    quote, noon = bot.fake.bot_messages(GENERAL_ID)[-2:]
    assert quote.content == transcript_quote("what time is it")
    assert quote.reference_id == voice.id and noon.reference_id == voice.id
    (upload,) = [r.files["file"] for r in bot.llm.requests if r.files]
    assert upload.data == recording  # OGG/Opus goes as it came
    assert text_of(chat_requests(bot.llm)[-1][-1]).endswith("what time is it")
    assert user_texts(await bot.service.history(GENERAL))[-1] == "what time is it"


async def _answered(bot: Harness, text: str) -> int:
    """Push `text` and wait for the bot's first message in reply; its id."""
    question = await bot.fake.push_message(text)

    def reply() -> int | None:
        found = [m.id for m in bot.fake.bot_messages() if m.reference_id == question.id]
        return found[0] if found else None

    return await bot.fake.wait_for(reply, WAIT)


async def test_a_voice_message_in_a_dm_is_transcribed(bot: Harness) -> None:
    bot.llm.enqueue(Script(pieces=["remind me"]), Script(pieces=["Sure."]))
    await bot.fake.push_voice_message(b"OggS" + bytes(400), duration_secs=2.0, channel=_dm(bot))
    await said(bot, "Sure.", _dm(bot))
    assert bot.fake.bot_messages(_dm(bot))[0].content == transcript_quote("remind me")


def _dm(bot: Harness) -> int:
    return bot.fake.dm_channel_id(BOB_ID)


async def test_a_text_file_reaches_the_model_under_its_name(bot: Harness) -> None:
    source = Attachment(
        "fib.py", b"def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n"
    )
    bot.llm.enqueue(Script(pieces=["It recurses."]))
    await bot.fake.push_message(f"{MENTION} explain", attachments=[source])
    await bot.answer(GENERAL_ID, "It recurses.")
    (request,) = chat_requests(bot.llm)
    prompt = text_of(request[-1])
    assert "explain" in prompt and "File: fib.py\n```python\ndef fib(n):" in prompt
    assert user_texts(await bot.service.history(GENERAL))[-1].endswith("```")


async def test_image_command_sends_the_drawn_file_with_the_prompt(bot: Harness) -> None:
    interaction = await bot.fake.push_interaction("image", {"prompt": "a  red fox"}, user=BOB_ID)
    assert await bot.fake.wait_answered(interaction) == "a red fox"
    assert interaction.callback is not None and interaction.callback["type"] == 5  # deferred
    (followup,) = interaction.followups
    (upload,) = bot.fake.messages[followup].files
    assert (upload.filename, upload.data) == ("image.png", GENERATED_PNG)
    (drawn,) = [r for r in bot.llm.requests if r.path.endswith("/images/generations")]
    assert (drawn.json["prompt"], drawn.json["model"]) == ("a  red fox", IMAGE_MODEL)
    assert not chat_requests(bot.llm)  # a drawing is not a chat turn


async def test_image_off_by_a_manager_then_image_is_refused_and_members_cannot_switch(
    bot: Harness,
) -> None:
    refused = await bot.fake.push_interaction("image", {"prompt": "off"}, user=BOB_ID)
    assert await bot.fake.wait_answered(refused) == ADMINS_ONLY
    switched = await bot.fake.push_interaction("image", {"prompt": "OFF"}, user=ALICE_ID)
    assert "off in this chat" in await bot.fake.wait_answered(switched)
    off = await bot.fake.push_interaction("image", {"prompt": "a fox"}, user=BOB_ID)
    assert (await bot.fake.wait_answered(off)).startswith(
        "Drawing images is turned off in this chat."
    )
    assert not bot.fake.messages[off.followups[0]].files
    on = await bot.fake.push_interaction("image", {"prompt": "on"}, user=ALICE_ID)
    assert "on in this chat" in await bot.fake.wait_answered(on)
    again = await bot.fake.push_interaction("image", {"prompt": "a fox"}, user=BOB_ID)
    assert await bot.fake.wait_answered(again) == "a fox"
    assert len([r for r in bot.llm.requests if r.path.endswith("/images/generations")]) == 1
    blank = await bot.fake.push_interaction("image", {"prompt": "  "}, user=BOB_ID)
    assert await bot.fake.wait_answered(blank) == IMAGE_USAGE


async def test_image_without_an_image_model_says_so(tmp_path: Path, fake: FakeDiscord) -> None:
    async with _media_bot(tmp_path, fake, llm_settings=lambda llm: {}) as bot:
        interaction = await fake.push_interaction("image", {"prompt": "a fox"})
        assert await fake.wait_answered(interaction) == ImageGenerationOffError.user_hint
        assert not bot.llm.requests


async def test_a_refused_prompt_gets_the_content_policy_line(bot: Harness) -> None:
    bot.llm.image_scripts.append(
        Script(status=400, error_code="content_policy_violation", error_message="refused")
    )
    refused = await bot.fake.push_interaction("image", {"prompt": "something bad"})
    assert await bot.fake.wait_answered(refused) == ContentPolicyError.user_hint
    assert not bot.fake.messages[refused.followups[0]].files
    fine = await bot.fake.push_interaction("image", {"prompt": "a fox"})
    assert await bot.fake.wait_answered(fine) == "a fox"


async def test_a_drawing_over_discords_upload_limit_gets_a_line(bot: Harness) -> None:
    huge = GENERATED_PNG + bytes(MAX_UPLOAD_BYTES)  # a PNG by its signature, over 10 MiB
    body = {"created": 0, "data": [{"b64_json": base64.b64encode(huge).decode()}]}
    bot.llm.image_scripts.append(
        Script(raw_sse=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    )
    interaction = await bot.fake.push_interaction("image", {"prompt": "a huge fox"})
    assert await bot.fake.wait_answered(interaction) == IMAGE_TOO_LARGE
    (upload,) = [c for c in bot.fake.calls if (c.content_type or "").startswith("multipart/")]
    assert upload.status == 413
    later = await bot.fake.push_interaction("image", {"prompt": "a fox"})
    assert await bot.fake.wait_answered(later) == "a fox"


@needs_ffmpeg
async def test_a_mention_replying_to_a_voice_message_transcribes_it(
    bot: Harness, tmp_path: Path
) -> None:
    recording = tone(tmp_path / "voice.ogg", seconds=1.0)
    voice = await bot.fake.push_voice_message(recording, duration_secs=1.0, author=ALICE_ID)
    bot.llm.enqueue(Script(pieces=["see you at noon"]), Script(pieces=["She says noon."]))
    await bot.fake.push_message(f"{MENTION} what did she say?", reply_to=voice.id)
    await said(bot, "She says noon.")
    prompt = text_of(chat_requests(bot.llm)[-1][-1])
    assert prompt.endswith("what did she say?\n\nsee you at noon")


# ---------------------------------------------------------------- bad input


@dataclass
class BadInput:
    """One kind of bad attachment: how it is sent, the line expected (a part of it), and what
    the history keeps of the message."""

    send: Callable[[Harness], Awaitable[object]]
    line: str
    record: str
    settings: Callable[[FakeLLMServer], dict[str, Any]] = _media
    overrides: dict[str, Any] = field(default_factory=dict)
    before: Callable[[Harness], None] = lambda bot: None


def _mention_with(*attachments: Attachment) -> Callable[[Harness], Awaitable[object]]:
    return lambda bot: bot.fake.push_message(MENTION, attachments=list(attachments))


async def _voice(bot: Harness, data: bytes) -> None:
    """A voice message replying to the bot's answer (so it is addressed)."""
    answer = await _answered(bot, f"{MENTION} hello")
    await bot.fake.push_voice_message(data, duration_secs=1.0, reply_to=answer)


async def _expired(bot: Harness) -> None:
    """A mention replying to an image whose CDN link expired meanwhile."""
    old = await bot.fake.push_message("old photo", author=ALICE_ID, attachments=[photo()])
    bot.fake.expire_attachment_urls()
    await bot.fake.push_message(MENTION, reply_to=old.id)


BAD_INPUTS = {
    "corrupt image": BadInput(
        _mention_with(photo("broken.jpg", b"\xff\xd8\xff\xe0" + bytes(300))),
        CorruptImageError.user_hint,
        "[image: not read]",
    ),
    "image over the limit": BadInput(
        _mention_with(photo("big.jpg", jpeg(1000, 1000, noise=True))),
        "That image is over 1 MB",
        "[image: not read]",
        overrides={"image_max_bytes": 1024 * 1024},
    ),
    "empty voice message": BadInput(
        lambda bot: _voice(bot, b""), "That voice note is empty", "[voice message: not read]"
    ),
    "audio in an unknown format": BadInput(
        _mention_with(Attachment("clip.xyz", b"\x01\x02" * 300, content_type="audio/x-unknown")),
        "not audio Parley can read",
        "[audio: not read]",
    ),
    "transcription down": BadInput(
        lambda bot: _voice(bot, b"OggS" + bytes(300)),
        "could not be reached",
        "[voice message: not read]",
        settings=lambda llm: {"transcribe_base_url": "http://127.0.0.1:9/v1"},
    ),
    "transcription 500": BadInput(
        lambda bot: _voice(bot, b"OggS" + bytes(300)),
        "had an error",
        "[voice message: not read]",
        before=lambda bot: bot.llm.enqueue(Script(pieces=["hi"]), Script(status=500)),
    ),
    "text file not UTF-8": BadInput(
        _mention_with(Attachment("notes.txt", "café crème".encode("latin-1"))),
        "notes.txt is not UTF-8 text",
        "[file notes.txt: not read]",
    ),
    "unsupported file": BadInput(
        _mention_with(Attachment("paper.pdf", b"%PDF-1.7\n" + bytes(100))),
        "I can't read paper.pdf",
        "[file paper.pdf: not read]",
    ),
    "CDN answers 404": BadInput(
        _mention_with(photo()),
        "I could not download cat.jpg",
        "[image: not read]",
        before=lambda bot: bot.fake.fail("GET", r"/attachments/.+", status=404),
    ),
    "CDN link expired": BadInput(_expired, "I could not download cat.jpg", "[image: not read]"),
}


@pytest.mark.parametrize("case", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
async def test_bad_input_gets_one_line_is_stored_and_the_channel_goes_on(
    tmp_path: Path, fake: FakeDiscord, case: BadInput
) -> None:
    async with _media_bot(tmp_path, fake, llm_settings=case.settings, **case.overrides) as bot:
        case.before(bot)
        await case.send(bot)

        def warned() -> list[str] | None:
            lines = [m.content for m in bot.fake.bot_messages(GENERAL_ID) if "⚠️" in m.content]
            return lines or None

        (line,) = await bot.fake.wait_for(warned, WAIT)
        assert case.line in line and "\n" not in line
        bot.llm.enqueue(Script(pieces=["still here"]))
        await bot.fake.push_message(f"{MENTION} are you there?")
        await said(bot, "still here")
        # Stored in the order of arrival: the refused message, then the next one.
        texts = user_texts(await bot.service.history(GENERAL))
        assert texts[-2:] == [case.record, "are you there?"]
        assert not bot.task.done()  # nothing crashed
        assert len(warned() or []) == 1
