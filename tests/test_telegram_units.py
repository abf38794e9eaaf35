"""The Telegram adapter's parts on their own: rendering, request retries, mention stripping,
photo sizes and album collection."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator

import pytest
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import TelegramNetworkError, TelegramRetryAfter
from aiogram.types import MessageEntity, PhotoSize

from bots.telegram import requests
from bots.telegram.albums import AlbumCollector
from bots.telegram.filters import _without
from bots.telegram.media import best_photo
from bots.telegram.render import MAX_LENGTH, escape_html, render_markdown
from bots.telegram.requests import RetryRequests
from tests.fakes.telegram_api import ApiError, FakeTelegramAPI, check_entities, user

ALICE = user(1001, "Alice")


def shown(text: str, entity: MessageEntity) -> str:
    return entity.extract_from(text)


def test_render_keeps_literal_html_and_specials() -> None:
    rendered = render_markdown("**Bold** <b>raw</b> & <script>x()</script> 1 < 2 `<i>`")
    assert rendered is not None
    text, entities = rendered
    assert text == "Bold <b>raw</b> & <script>x()</script> 1 < 2 <i>"
    assert [(e.type, shown(text, e)) for e in entities] == [("bold", "Bold"), ("code", "<i>")]


def test_render_html_block_and_code_are_untouched() -> None:
    source = "<div>\n<p>para</p>\n</div>\n\n```html\n<div>&amp;</div>\n```"
    assert escape_html("`<b>` and\n\n```\n<b>\n```") == "`<b>` and\n\n```\n<b>\n```"
    rendered = render_markdown(source)
    assert rendered is not None
    text, entities = rendered
    assert text == "<div>\n<p>para</p>\n</div>\n\n<div>&amp;</div>"
    assert entities[-1].type == "pre" and entities[-1].language == "html"


def test_render_offsets_count_utf16() -> None:
    rendered = render_markdown("👨‍👩‍👧 مرحبا **שלום** 🇺🇦 *ok*")
    assert rendered is not None
    text, entities = rendered
    assert [shown(text, e) for e in entities] == ["שלום", "ok"]
    # And Telegram (the fake's validator) accepts them.
    check_entities(text, [e.model_dump(exclude_none=True) for e in entities])


def test_render_declines_when_text_would_be_lost_or_too_long() -> None:
    assert render_markdown("AT&amp;T costs &nbsp;&nbsp; 5 &euro;") is None  # entities decoded
    assert render_markdown("- [x] a\n- [x] b\n- [x] c\n- [x] d") is None  # boxes eat the x's
    assert render_markdown("---\n" * 1400) is None  # rules grow past the limit
    assert render_markdown("   \n") is None
    assert render_markdown("plain words") == ("plain words", [])
    assert render_markdown("y" * MAX_LENGTH) is not None


def test_without_strips_mentions_by_utf16_offsets() -> None:
    text = "👍 @parley_bot hi @parley_bot"
    mentions = [
        MessageEntity(type="mention", offset=3, length=11),
        MessageEntity(type="mention", offset=18, length=11),
    ]
    assert _without(text, mentions) == "👍  hi "


@pytest.fixture
async def tg() -> AsyncIterator[FakeTelegramAPI]:
    async with FakeTelegramAPI() as server:
        yield server


def make_bot(base: str, token: str) -> Bot:
    session = AiohttpSession(api=TelegramAPIServer.from_base(base))
    session.middleware(RetryRequests())
    return Bot(token, session=session)


async def test_requests_wait_out_flood_control(tg: FakeTelegramAPI) -> None:
    bot = make_bot(tg.base_url, tg.token)
    chat = tg.private_chat(ALICE)
    tg.inject_429("sendMessage", count=1, retry_after=1)
    sent = await bot.send_message(chat.id, "after the wait")
    attempts = tg.calls_of("sendMessage", ok=None)
    assert [c.ok for c in attempts] == [False, True]
    assert attempts[1].at - attempts[0].at >= 0.98
    # Edits are the streaming engine's to wait out: the 429 comes back at once.
    tg.inject_429("editMessageText", count=1, retry_after=7)
    with pytest.raises(TelegramRetryAfter):
        await bot.edit_message_text("x", chat_id=chat.id, message_id=sent.message_id)
    await bot.session.close()


async def test_requests_retry_server_errors(
    tg: FakeTelegramAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(requests, "NETWORK_BACKOFF", 0.01)
    bot = make_bot(tg.base_url, tg.token)
    chat = tg.private_chat(ALICE)
    tg.inject_error("sendMessage", ApiError(502, "Bad Gateway"), count=2)
    assert (await bot.send_message(chat.id, "third time")).text == "third time"
    tg.inject_error("sendMessage", ApiError(502, "Bad Gateway"), count=requests.NETWORK_ATTEMPTS)
    with pytest.raises(Exception, match="Bad Gateway"):
        await bot.send_message(chat.id, "gives up")
    await bot.session.close()


async def test_requests_retry_network_errors(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(requests, "NETWORK_BACKOFF", 0.01)
    caplog.set_level(logging.WARNING, logger=requests.__name__)
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    bot = make_bot(f"http://127.0.0.1:{port}", "1:x")
    with pytest.raises(TelegramNetworkError):
        await bot.send_message(1, "nobody home")
    retries = [r for r in caplog.records if r.name == requests.__name__]
    assert len(retries) == requests.NETWORK_ATTEMPTS - 1
    await bot.session.close()


def _size(side: int, file_size: int | None) -> PhotoSize:
    return PhotoSize(
        file_id=f"p{side}", file_unique_id=f"u{side}", width=side, height=side, file_size=file_size
    )


def test_the_largest_photo_size_within_the_limit_is_taken() -> None:
    sizes = [_size(90, 2_000), _size(1280, 90_000), _size(320, 20_000), _size(2560, 400_000)]
    assert best_photo(sizes, 100_000).width == 1280  # the order Telegram lists them in is moot
    assert best_photo(sizes, 10**9).width == 2560
    assert best_photo(sizes, 1_000).width == 90  # none fits: the smallest, refused by its size
    assert best_photo([_size(90, 2_000), _size(800, None)], 1_000).width == 800  # size unstated


async def test_an_album_is_handed_whole_to_its_first_item_only() -> None:
    albums: AlbumCollector[int] = AlbumCollector(idle=0.05)
    first = asyncio.create_task(albums.collect("album", 1))
    await asyncio.sleep(0)  # the first item's handler opens the album
    assert [await albums.collect("album", n) for n in (2, 3)] == [None, None]
    assert await albums.collect("another album", 9) == [9]
    assert await first == [1, 2, 3]
    assert await albums.collect("album", 4) == [4]  # a closed album's id starts a new one
