"""The fake Bot API behaves like the real one for a bare aiogram `Bot` (no Parley code here)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.enums import ChatMemberStatus
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramConflictError,
    TelegramRetryAfter,
    TelegramUnauthorizedError,
)
from aiogram.types import BotCommand, BufferedInputFile, MessageEntity, ReplyParameters

from tests.fakes.llm_server import GENERATED_PNG
from tests.fakes.telegram_api import (
    BOT_ID,
    CAPTION_TOO_LONG,
    EDIT_NOT_FOUND,
    FILE_TOO_BIG,
    INVALID_FILE_ID,
    MAX_CAPTION_LENGTH,
    MAX_DOWNLOAD_SIZE,
    MAX_PHOTO_UPLOAD,
    NOT_MODIFIED,
    PHOTO_NOT_IMAGE,
    PHOTO_TOO_BIG,
    TEXT_EMPTY,
    TEXT_TOO_LONG,
    FakeTelegramAPI,
    FloodLimits,
    parse_html,
    parse_markdown_v2,
    user,
)

ALICE = user(1001, "Alice", username="alice")
BOB = user(1002, "Bob")


@pytest.fixture
async def tg() -> AsyncIterator[FakeTelegramAPI]:
    async with FakeTelegramAPI() as server:
        yield server


@pytest.fixture
async def bot(tg: FakeTelegramAPI) -> AsyncIterator[Bot]:
    session = AiohttpSession(api=TelegramAPIServer.from_base(tg.base_url))
    bot = Bot(tg.token, session=session)
    yield bot
    await bot.session.close()


async def test_get_me_and_wrong_token(tg: FakeTelegramAPI, bot: Bot) -> None:
    me = await bot.get_me()
    assert (me.id, me.is_bot, me.username) == (BOT_ID, True, tg.bot["username"])
    stranger = Bot("1:wrong", session=AiohttpSession(api=TelegramAPIServer.from_base(tg.base_url)))
    with pytest.raises(TelegramUnauthorizedError):
        await stranger.get_me()
    await stranger.session.close()


async def test_long_poll_returns_as_soon_as_an_update_arrives(
    tg: FakeTelegramAPI, bot: Bot
) -> None:
    chat = tg.private_chat(ALICE)
    poll = asyncio.create_task(bot.get_updates(timeout=30, request_timeout=40))
    await tg.wait_calls("getUpdates", ok=None)
    assert not poll.done()
    await tg.message(chat, ALICE, "hello")
    updates = await asyncio.wait_for(poll, 5)
    assert [u.message.text for u in updates] == ["hello"]
    # Unconfirmed updates come back; an offset past them confirms them.
    again = await bot.get_updates(timeout=0)
    assert [u.update_id for u in again] == [updates[0].update_id]
    assert await bot.get_updates(offset=updates[0].update_id + 1, timeout=0) == []


async def test_second_poller_terminates_the_first(tg: FakeTelegramAPI, bot: Bot) -> None:
    first = asyncio.create_task(bot.get_updates(timeout=30, request_timeout=40))
    await tg.wait_calls("getUpdates", ok=None)
    await bot.get_updates(timeout=0)
    with pytest.raises(TelegramConflictError):
        await asyncio.wait_for(first, 5)


async def test_message_update_shapes(tg: FakeTelegramAPI, bot: Bot) -> None:
    group = tg.supergroup(forum=True)
    topic = tg.open_topic(group, ALICE, "Ideas")
    sent = await bot.send_message(group.id, "bot says", message_thread_id=topic)
    await tg.message(group, ALICE, f"@{tg.bot['username']} hi /ask@x", thread_id=topic)
    await tg.message(group, BOB, "re", reply_to=sent.message_id, thread_id=topic)
    await tg.message(group, BOB, "fwd", forward_from=ALICE)
    await tg.message(group, None, "anon", sender_chat=group)
    await tg.message(group, BOB, photo=True)
    await tg.message(group, BOB, sticker=True)
    await tg.channel_post(tg.channel(), "news")
    updates = await bot.get_updates(timeout=0)
    mention, reply, forward, anon, photo, sticker, post = (
        u.message or u.channel_post for u in updates
    )
    assert mention.is_topic_message and mention.message_thread_id == topic
    assert mention.reply_to_message.forum_topic_created is not None  # Telegram's topic quirk
    assert [e.type for e in mention.entities] == ["mention", "bot_command"]
    assert reply.reply_to_message.from_user.id == BOT_ID
    assert forward.forward_origin.sender_user.id == ALICE["id"]
    assert anon.sender_chat.id == group.id
    assert photo.photo and photo.text is None
    assert sticker.sticker.emoji == "👍"
    assert post.chat.type == "channel"


async def test_edited_message_update(tg: FakeTelegramAPI, bot: Bot) -> None:
    chat = tg.private_chat(ALICE)
    original = await tg.message(chat, ALICE, "first")
    await tg.edited_message(chat, original["message_id"], "second")
    updates = await bot.get_updates(timeout=0)
    assert updates[-1].edited_message.text == "second"


async def test_send_edit_and_history(tg: FakeTelegramAPI, bot: Bot) -> None:
    chat = tg.private_chat(ALICE)
    request = await tg.message(chat, ALICE, "q")
    sent = await bot.send_message(
        chat.id, "123", reply_parameters=ReplyParameters(message_id=request["message_id"])
    )
    assert sent.text == "123"  # form value "123" stays a string
    assert sent.reply_to_message.message_id == request["message_id"]
    await bot.edit_message_text("1234", chat_id=chat.id, message_id=sent.message_id)
    stored = chat.messages[sent.message_id]
    assert [h[0] for h in stored.history] == ["123", "1234"]
    with pytest.raises(TelegramBadRequest) as info:
        await bot.edit_message_text("1234", chat_id=chat.id, message_id=sent.message_id)
    assert info.value.message == NOT_MODIFIED
    # The same text with different entities is a real change.
    await bot.edit_message_text(
        "1234",
        chat_id=chat.id,
        message_id=sent.message_id,
        entities=[MessageEntity(type="bold", offset=0, length=2)],
    )
    with pytest.raises(TelegramBadRequest) as info:
        await bot.edit_message_text("x", chat_id=chat.id, message_id=999)
    assert info.value.message == EDIT_NOT_FOUND
    assert await bot.delete_message(chat.id, sent.message_id)
    with pytest.raises(TelegramBadRequest, match="message to edit not found"):
        await bot.edit_message_text("y", chat_id=chat.id, message_id=sent.message_id)


async def test_text_limits_in_utf16(tg: FakeTelegramAPI, bot: Bot) -> None:
    chat = tg.private_chat(ALICE)
    for text in ("", "  \n "):
        with pytest.raises(TelegramBadRequest) as info:
            await bot.send_message(chat.id, text)
        assert info.value.message == TEXT_EMPTY
    assert (await bot.send_message(chat.id, "😀" * 2048)).text == "😀" * 2048
    with pytest.raises(TelegramBadRequest) as info:
        await bot.send_message(chat.id, "😀" * 2049)  # 2049 characters, 4098 UTF-16 units
    assert info.value.message == TEXT_TOO_LONG
    assert (await bot.send_message(chat.id, "  padded\n")).text == "padded"


async def test_parse_modes_and_entities(tg: FakeTelegramAPI, bot: Bot) -> None:
    chat = tg.private_chat(ALICE)
    sent = await bot.send_message(
        chat.id, "<b>bold</b> &lt;3 <a href='http://x'>l</a>", parse_mode="HTML"
    )
    assert sent.text == "bold <3 l"
    assert [(e.type, e.offset, e.length) for e in sent.entities] == [
        ("bold", 0, 4),
        ("text_link", 8, 1),
    ]
    with pytest.raises(TelegramBadRequest, match="can't parse entities: Unsupported start tag"):
        await bot.send_message(chat.id, "<div>x</div>", parse_mode="HTML")
    with pytest.raises(TelegramBadRequest, match="can't parse entities"):
        await bot.send_message(chat.id, "<b>open", parse_mode="HTML")
    sent = await bot.send_message(chat.id, "*b* _i_ `c` 1\\.5", parse_mode="MarkdownV2")
    assert sent.text == "b i c 1.5"
    with pytest.raises(TelegramBadRequest, match=r"Character '\.' is reserved"):
        await bot.send_message(chat.id, "1.5", parse_mode="MarkdownV2")
    with pytest.raises(TelegramBadRequest, match="can't parse entities"):
        await bot.send_message(
            chat.id, "abc", entities=[MessageEntity(type="bold", offset=2, length=5)]
        )
    tg.inject_parse_failure("sendMessage")
    with pytest.raises(TelegramBadRequest, match="can't parse entities"):
        await bot.send_message(
            chat.id, "ok", entities=[MessageEntity(type="bold", offset=0, length=2)]
        )
    assert (
        await bot.send_message(
            chat.id, "ok", entities=[MessageEntity(type="bold", offset=0, length=2)]
        )
    ).entities


def test_parsers_directly() -> None:
    assert parse_html('<pre><code class="language-py">x = 1</code></pre>') == (
        "x = 1",
        [{"type": "pre", "offset": 0, "length": 5, "language": "py"}],
    )
    assert parse_html("a & b &amp; 😀<i>i</i>")[1] == [
        {"type": "italic", "offset": 10, "length": 1}
    ]
    text, entities = parse_markdown_v2(
        "```python\nprint(1)\n```\n>quote\n__u__ ||s|| [t](http://x)"
    )
    assert text == "print(1)\n\nquote\nu s t"
    assert {e["type"] for e in entities} == {
        "pre",
        "blockquote",
        "underline",
        "spoiler",
        "text_link",
    }


async def test_flood_control(tg: FakeTelegramAPI, bot: Bot) -> None:
    chat = tg.private_chat(ALICE)
    sent = await bot.send_message(chat.id, "a")
    tg.inject_429("editMessageText", count=2, retry_after=3)
    for _ in range(2):
        with pytest.raises(TelegramRetryAfter) as info:
            await bot.edit_message_text("b", chat_id=chat.id, message_id=sent.message_id)
        assert info.value.retry_after == 3
    await bot.edit_message_text("b", chat_id=chat.id, message_id=sent.message_id)
    tg.edit_interval = 60
    with pytest.raises(TelegramRetryAfter) as info:
        await bot.edit_message_text("c", chat_id=chat.id, message_id=sent.message_id)
    assert 1 <= info.value.retry_after <= 60
    assert [c.ok for c in tg.calls_of("editMessageText", ok=None)] == [False, False, True, False]


async def test_group_flood_limit_counts_sends_and_edits_together() -> None:
    async with FakeTelegramAPI(flood_limits=FloodLimits()) as tg:
        flooded = Bot(
            tg.token, session=AiohttpSession(api=TelegramAPIServer.from_base(tg.base_url))
        )
        group = tg.supergroup()
        sent = await flooded.send_message(group.id, "0")
        for n in range(1, 20):
            await flooded.edit_message_text(str(n), chat_id=group.id, message_id=sent.message_id)
        assert await flooded.send_chat_action(group.id, "typing")  # not a message: not counted
        with pytest.raises(TelegramRetryAfter) as info:
            await flooded.send_message(group.id, "21st")
        first, refused = tg.writes(group.id)[0], group.refusals[0]
        assert first + 60 - refused <= info.value.retry_after <= 60
        answered = tg.calls_of("sendMessage", ok=False)[-1].error
        assert answered == f"Too Many Requests: retry after {info.value.retry_after}"
        with pytest.raises(TelegramRetryAfter):
            await flooded.edit_message_text("late", chat_id=group.id, message_id=sent.message_id)
        assert group.messages[sent.message_id].text == "19"  # refused writes change nothing
        assert len(tg.writes(group.id)) == 20
        assert tg.flood_refusals(group.id) == 2
        assert tg.max_writes_in_window(group.id, 60) == 20
        other = tg.group(-1002)  # the budget is per chat
        assert (await flooded.send_message(other.id, "elsewhere")).text == "elsewhere"
        await flooded.session.close()


async def test_private_flood_limit_and_refusals_not_counted() -> None:
    limits = FloodLimits(private_window=0.3)
    async with FakeTelegramAPI(flood_limits=limits) as tg:
        bot = Bot(tg.token, session=AiohttpSession(api=TelegramAPIServer.from_base(tg.base_url)))
        chat = tg.private_chat(ALICE)
        sent = await bot.send_message(chat.id, "a")
        with pytest.raises(TelegramRetryAfter) as info:
            await bot.edit_message_text("b", chat_id=chat.id, message_id=sent.message_id)
        assert info.value.retry_after == 1  # whole seconds, at least one
        assert (len(tg.writes(chat.id)), tg.flood_refusals(chat.id)) == (1, 1)
        # The window counts from the last accepted write, not from the refused one.
        await asyncio.sleep(limits.private_window - (time.monotonic() - tg.writes(chat.id)[0]))
        await bot.edit_message_text("b", chat_id=chat.id, message_id=sent.message_id)
        writes = tg.writes(chat.id)
        assert len(writes) == 2 and writes[1] - writes[0] >= limits.private_window
        assert tg.max_writes_in_window(chat.id, limits.private_window) == 1
        await bot.session.close()


async def test_without_flood_limits_every_write_passes_and_is_recorded(
    tg: FakeTelegramAPI, bot: Bot
) -> None:
    group = tg.group()
    for n in range(25):
        await bot.send_message(group.id, f"m{n}")
    assert len(tg.writes(group.id)) == 25
    assert tg.flood_refusals(group.id) == 0
    assert tg.max_writes_in_window(group.id, 60) == 25
    assert tg.writes(-999) == [] and tg.max_writes_in_window(-999, 60) == 0


def test_max_writes_in_window_is_a_sliding_window() -> None:
    tg = FakeTelegramAPI()
    group = tg.group()
    group.writes = [0.0, 0.5, 59.9, 60.5, 119.9]
    assert tg.max_writes_in_window(group.id, 60) == 3  # 0.5, 59.9, 60.5
    group.writes = [0.0, 60.0]
    assert tg.max_writes_in_window(group.id, 60) == 1  # exactly a window apart


async def test_members_commands_and_actions(tg: FakeTelegramAPI, bot: Bot) -> None:
    group = tg.group()
    tg.set_admins(group, [ALICE["id"]], creator=3000)
    await tg.message(group, BOB, "hi")
    assert (
        await bot.get_chat_member(group.id, ALICE["id"])
    ).status == ChatMemberStatus.ADMINISTRATOR
    assert (await bot.get_chat_member(group.id, BOB["id"])).status == ChatMemberStatus.MEMBER
    assert (await bot.get_chat_member(group.id, 3000)).status == ChatMemberStatus.CREATOR
    assert (await bot.get_chat_member(group.id, 4000)).status == ChatMemberStatus.LEFT
    assert len(await bot.get_chat_administrators(group.id)) == 2
    assert await bot.set_my_commands([BotCommand(command="ask", description="Ask")])
    assert tg.commands == [{"command": "ask", "description": "Ask"}]
    with pytest.raises(TelegramBadRequest):
        await bot.set_my_commands([BotCommand(command="Bad-Name", description="x")])
    assert await bot.send_chat_action(group.id, "typing")
    with pytest.raises(TelegramBadRequest, match="chat not found"):
        await bot.send_chat_action(-5, "typing")


async def test_json_bodies_and_unknown_methods(tg: FakeTelegramAPI) -> None:
    chat = tg.private_chat(ALICE)
    async with aiohttp.ClientSession() as http:
        url = f"{tg.base_url}/bot{tg.token}/sendMessage"
        async with http.post(url, json={"chat_id": chat.id, "text": "json"}) as resp:
            assert (await resp.json())["result"]["text"] == "json"
        async with http.post(f"{tg.base_url}/bot{tg.token}/noSuchMethod") as resp:
            assert resp.status == 404


# -- media the user sends, fetched as aiogram fetches it ------------------------------------------

#: Distinct bytes per size, so a download of the wrong size cannot pass for the right one.
SMALL, MEDIUM, LARGE = b"\xff\xd8small", b"\xff\xd8medium" * 100, bytes(range(256)) * 4096


async def _next_messages(bot: Bot, count: int) -> list:
    updates = await bot.get_updates(timeout=0)
    assert len(updates) == count
    return [u.message for u in updates]


async def test_photo_largest_size_downloads_byte_exact(tg: FakeTelegramAPI, bot: Bot) -> None:
    chat = tg.private_chat(ALICE)
    await tg.photo_message(
        chat,
        ALICE,
        [(90, 60, SMALL), (320, 213, MEDIUM), (1280, 853, LARGE)],
        caption="/ask what is this?",
    )
    (message,) = await _next_messages(bot, 1)
    assert [(p.width, p.height, p.file_size) for p in message.photo] == [
        (90, 60, len(SMALL)),
        (320, 213, len(MEDIUM)),
        (1280, 853, len(LARGE)),
    ]
    assert len({p.file_id for p in message.photo}) == 3  # each size is a file of its own
    assert message.text is None and message.caption == "/ask what is this?"
    assert [e.type for e in message.caption_entities] == ["bot_command"]
    assert tg.downloads == []

    downloaded = await bot.download(message.photo[-1])
    assert downloaded is not None and downloaded.read() == LARGE
    file = await bot.get_file(message.photo[0].file_id)
    assert file.file_size == len(SMALL) and file.file_path is not None
    assert file.file_path.startswith("photos/") and file.file_path.endswith(".jpg")
    small = await bot.download_file(file.file_path)
    assert small is not None and small.read() == SMALL
    assert len(tg.downloads) == 2 and tg.downloads[-1] == file.file_path


async def test_get_file_over_20_mb_is_refused(tg: FakeTelegramAPI, bot: Bot) -> None:
    chat = tg.private_chat(ALICE)
    big = b"\0" * (MAX_DOWNLOAD_SIZE + 1)
    at_limit = b"\1" * MAX_DOWNLOAD_SIZE
    await tg.document_message(chat, ALICE, big, file_name="huge.png")
    await tg.document_message(chat, ALICE, at_limit, file_name="limit.png")
    refused, accepted = await _next_messages(bot, 2)
    assert refused.document.file_size == MAX_DOWNLOAD_SIZE + 1  # the message still says its size
    with pytest.raises(TelegramBadRequest) as info:
        await bot.get_file(refused.document.file_id)
    assert info.value.message == FILE_TOO_BIG
    assert (await bot.get_file(accepted.document.file_id)).file_size == MAX_DOWNLOAD_SIZE
    with pytest.raises(TelegramBadRequest) as info:
        await bot.get_file("no-such-file")
    assert info.value.message == INVALID_FILE_ID


async def test_album_messages_share_a_media_group(tg: FakeTelegramAPI, bot: Bot) -> None:
    group = tg.group()
    await tg.message(group, BOB, "before")
    sent = await tg.album(
        group, BOB, [[(90, 90, SMALL)], [(90, 90, MEDIUM)], [(90, 90, LARGE)]], caption="trip"
    )
    await tg.photo_message(group, BOB, [(90, 90, SMALL)], caption="alone")
    _, *album, alone = await _next_messages(bot, 5)
    assert [m.message_id for m in album] == [m["message_id"] for m in sent]
    group_ids = {m.media_group_id for m in album}
    assert len(group_ids) == 1 and None not in group_ids
    assert alone.media_group_id is None
    assert [m.caption for m in album] == ["trip", None, None]
    assert [(await bot.download(m.photo[-1])).read() for m in album] == [SMALL, MEDIUM, LARGE]
    again = await tg.album(group, BOB, [[(9, 9, SMALL)], [(9, 9, SMALL)]])
    assert again[0]["media_group_id"] not in group_ids  # every album has its own id


async def test_voice_note_downloads(tg: FakeTelegramAPI, bot: Bot) -> None:
    chat = tg.private_chat(ALICE)
    opus = b"OggS\0\2" + bytes(range(200))
    await tg.voice_message(chat, ALICE, opus, duration=3)
    (message,) = await _next_messages(bot, 1)
    voice = message.voice
    assert (voice.duration, voice.mime_type, voice.file_size) == (3, "audio/ogg", len(opus))
    file = await bot.get_file(voice.file_id)
    assert file.file_path == "voice/file_0.oga"
    assert (await bot.get_file(voice.file_id)).file_path == file.file_path  # chosen once
    assert (await bot.download(voice)).read() == opus


async def test_documents_audio_and_video_notes(tg: FakeTelegramAPI, bot: Bot) -> None:
    chat = tg.private_chat(ALICE)
    notes = "# Notes\nhéllo ✓\n".encode()
    await tg.document_message(chat, ALICE, notes, file_name="notes.md", caption="summarise")
    await tg.document_message(chat, ALICE, b"{}", file_name="data.json")
    await tg.document_message(chat, ALICE, b"\x89PNG", file_name="Cat.PNG")
    await tg.audio_message(chat, ALICE, b"ID3", duration=61, title="Song", performer="Band")
    await tg.video_note_message(chat, ALICE, b"mp4", duration=7)
    text, data, image, audio, round_video = await _next_messages(bot, 5)
    assert (text.document.file_name, text.document.mime_type) == ("notes.md", "text/markdown")
    assert text.caption == "summarise" and text.caption_entities is None
    assert data.document.mime_type == "application/json"
    assert image.document.mime_type == "image/png"
    assert (await bot.download(text.document)).read() == notes
    image_file = await bot.get_file(image.document.file_id)
    assert image_file.file_path is not None and image_file.file_path.endswith(".png")
    assert audio.audio.duration == 61 and audio.audio.mime_type == "audio/mpeg"
    assert (audio.audio.title, audio.audio.performer) == ("Song", "Band")
    assert (await bot.download(audio.audio)).read() == b"ID3"
    assert (round_video.video_note.duration, round_video.video_note.length) == (7, 384)
    assert (await bot.download(round_video.video_note)).read() == b"mp4"


async def test_file_downloads_need_a_path_from_get_file_and_the_token(
    tg: FakeTelegramAPI, bot: Bot
) -> None:
    chat = tg.private_chat(ALICE)
    sent = await tg.voice_message(chat, ALICE, b"voice", duration=1)
    base = f"{tg.base_url}/file/bot{tg.token}"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/voice/file_0.oga") as response:
            assert response.status == 404  # no getFile yet: no path
        path = (await bot.get_file(sent["voice"]["file_id"])).file_path
        async with http.get(f"{base}/{path}") as response:
            assert response.status == 200 and await response.read() == b"voice"
        async with http.get(f"{tg.base_url}/file/bot1:wrong/{path}") as response:
            assert response.status == 401
    with pytest.raises(aiohttp.ClientResponseError) as info:
        await bot.download_file("voice/no_such_file.oga")
    assert info.value.status == 404
    assert tg.downloads == [path]


async def test_send_photo_keeps_the_upload_and_checks_its_limits(
    tg: FakeTelegramAPI, bot: Bot
) -> None:
    chat = tg.private_chat(ALICE)
    asked = await tg.message(chat, ALICE, "/image a red dot")
    caption = "é" * MAX_CAPTION_LENGTH
    sent = await bot.send_photo(
        chat.id,
        BufferedInputFile(GENERATED_PNG, "image.png"),
        caption=caption,
        reply_parameters=ReplyParameters(message_id=asked["message_id"]),
    )
    assert sent.caption == caption and sent.photo[-1].width == 1
    (stored,) = chat.bot_messages()
    assert stored.reply_to == asked["message_id"] and stored.text is None
    assert tg.photo_bytes(stored) == GENERATED_PNG
    assert (await bot.download(sent.photo[-1])).read() == GENERATED_PNG  # a file like any other
    refusals = {
        CAPTION_TOO_LONG: (GENERATED_PNG, caption + "x"),
        PHOTO_TOO_BIG: (GENERATED_PNG + b"\0" * MAX_PHOTO_UPLOAD, None),
        PHOTO_NOT_IMAGE: (b"not an image", None),
    }
    for error, (data, text) in refusals.items():
        with pytest.raises(TelegramBadRequest) as info:
            await bot.send_photo(chat.id, BufferedInputFile(data, "x.png"), caption=text)
        assert info.value.message == error
    assert len(chat.bot_messages()) == 1
