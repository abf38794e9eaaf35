"""A message with images through the conversation service: stored with it, sent to the model
with it, and remembered for the next turns (over real HTTP to the fake LLM server, with a real
SQLite store)."""

from __future__ import annotations

import asyncio
import io

import pytest
from PIL import Image

from bots.clock import SystemClock
from bots.relay import relay
from core import AsyncClient
from core.config import CoreSettings
from core.conversation import BLIND_MODEL_NOTE, ConversationService
from core.conversation.context import IMAGE_PLACEHOLDER
from core.images import data_url, prepare_image
from storage import MessageImage, Store
from tests.fakes.llm_server import FakeLLMServer, Script
from tests.test_conversation_fakes import ALICE, BOB, chat, collect
from tests.test_conversation_people import make_service
from tests.test_streaming import RecordingSurface

ROOM = chat("42")
#: A model the presets know sees images; "fake-model", the other tests' default, does not.
VISION = "gpt-4o"


async def photo(colour: str) -> MessageImage:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), colour).save(buffer, "JPEG")
    return await prepare_image(buffer.getvalue())


def last_user_content(server: FakeLLMServer) -> object:
    messages = server.requests[-1].json["messages"]
    return next(m["content"] for m in reversed(messages) if m["role"] == "user")


async def test_images_go_to_the_model_with_their_message_and_are_stored(
    store: Store, server: FakeLLMServer
) -> None:
    service = make_service(store, server, default_model=VISION)
    image = await photo("red")
    await collect(service.reply(ROOM, ALICE, "what colour?", images=[image]))
    assert last_user_content(server) == [
        {"type": "text", "text": "what colour?"},
        {"type": "image_url", "image_url": {"url": data_url(image)}},
    ]
    (stored,) = [m for m in await service.history(ROOM) if m.image_count]
    assert (await store.message_images([stored.id]))[stored.id] == [image]
    await service.aclose()


async def test_an_image_alone_is_a_question(store: Store, server: FakeLLMServer) -> None:
    service = make_service(store, server, default_model=VISION)
    image = await photo("blue")
    await collect(service.reply(ROOM, ALICE, "", images=[image]))
    assert last_user_content(server) == [
        {"type": "image_url", "image_url": {"url": data_url(image)}}
    ]
    with pytest.raises(ValueError, match="empty"):
        service.reply(ROOM, ALICE, "  ")
    await service.aclose()


async def test_older_turns_carry_a_placeholder_instead_of_their_image(
    store: Store, server: FakeLLMServer
) -> None:
    service = make_service(store, server, default_model=VISION, context_image_turns=1)
    image = await photo("green")
    await collect(service.reply(ROOM, ALICE, "look", images=[image]))
    await collect(service.reply(ROOM, ALICE, "and the corner?"))
    messages = server.requests[-1].json["messages"]
    user_turns = [m["content"] for m in messages if m["role"] == "user"]
    # The newest turn is the one being answered: the photo's turn is the older one.
    assert IMAGE_PLACEHOLDER in user_turns[0] and "look" in user_turns[0]
    assert user_turns[-1] == "and the corner?"
    await service.aclose()


async def test_a_blind_model_gets_the_text_and_the_user_a_line(
    store: Store, server: FakeLLMServer
) -> None:
    service = make_service(store, server, default_model="llama3.1:8b")
    reply = service.reply(ROOM, ALICE, "what colour?", images=[await photo("red")])
    assert await collect(reply) == "echo: [image]\nwhat colour?"  # the text only
    assert reply.notice == BLIND_MODEL_NOTE
    # The image is kept: a later switch to a vision model can still see it.
    (stored,) = [m for m in await service.history(ROOM) if m.image_count]
    assert len((await store.message_images([stored.id]))[stored.id]) == 1
    await service.aclose()


async def test_a_blind_model_is_not_asked_about_an_image_alone(
    store: Store, server: FakeLLMServer
) -> None:
    service = make_service(store, server, default_model="llama3.1:8b")
    reply = service.reply(ROOM, ALICE, "", images=[await photo("red")])
    assert await collect(reply) == ""
    assert reply.notice == BLIND_MODEL_NOTE and server.requests == []
    assert [m.image_count for m in await service.history(ROOM)] == [1]  # the photo is stored
    await service.aclose()


async def test_the_relay_shows_the_notice_above_the_answer(
    store: Store, server: FakeLLMServer
) -> None:
    service = make_service(store, server, default_model="llama3.1:8b")
    surface = RecordingSurface(SystemClock(), min_edit_interval=0.0)
    await relay(
        service,
        surface,
        ROOM,
        ALICE,
        "hi",
        group=False,
        platform_message_id="1",
        images=[await photo("red")],
    )
    assert surface.final_texts() == [f"{BLIND_MODEL_NOTE}\n\necho: [image]\nhi"]
    alone = RecordingSurface(SystemClock(), min_edit_interval=0.0)
    await relay(
        service,
        alone,
        ROOM,
        ALICE,
        "",
        group=False,
        platform_message_id="2",
        images=[await photo("blue")],
    )
    assert alone.final_texts() == [BLIND_MODEL_NOTE]
    await service.aclose()


async def test_a_message_with_nothing_readable_is_remembered_in_arrival_order(
    store: Store, server: FakeLLMServer
) -> None:
    service = make_service(store, server, default_model=VISION)
    remembered = service.remember(ROOM, ALICE, "[voice note: not read]", platform_message_id="7")
    await collect(service.reply(ROOM, ALICE, "after it"))
    await remembered
    texts = [m.text for m in await service.history(ROOM)]
    assert texts == ["[voice note: not read]", "after it", "echo: after it"]
    await service.aclose()


async def test_an_arrival_taken_before_its_content_keeps_its_place(
    store: Store, server: FakeLLMServer
) -> None:
    service = make_service(store, server, default_model=VISION)
    arrival = service.arrive(ROOM)  # a photo whose file is still downloading
    later = service.reply(ROOM, ALICE, "and the corner?")
    first = service.reply(
        ROOM, ALICE, "what is this?", images=[await photo("red")], arrival=arrival
    )
    await collect(first)
    await collect(later)
    texts = [m.text for m in await service.history(ROOM)]
    assert [t for t in texts if not t.startswith("echo")] == ["what is this?", "and the corner?"]
    corner = next(r for r in server.requests if "and the corner?" in str(r.json["messages"][-1]))
    assert "image_url" in str(corner.json["messages"])  # asked knowing the photo
    with pytest.raises(ValueError):
        service.reply(ROOM, ALICE, "again", arrival=arrival)  # a place is filled once
    await service.aclose()


async def test_an_abandoned_arrival_holds_nobody_up(store: Store, server: FakeLLMServer) -> None:
    service = make_service(store, server, default_model=VISION)
    arrival = service.arrive(ROOM)
    remembered = service.remember(ROOM, ALICE, "after it")
    arrival.abandon()  # its files could not be read, or the bot is stopping
    await asyncio.wait_for(remembered, 5)
    assert [m.text for m in await service.history(ROOM)] == ["after it"]
    arrival.abandon()  # once is enough; again does nothing
    await service.aclose()


async def test_a_slow_arrival_lets_the_others_pass_then_goes_at_the_end(
    store: Store, server: FakeLLMServer
) -> None:
    """A voice note whose transcription hangs holds the chat's later messages for
    `arrival_hold` seconds at most; it is then stored after them, when it is read."""
    client = AsyncClient(base_url=server.base_url, api_key="test-key")
    settings = CoreSettings(_env_file=None, default_model=VISION)
    service = ConversationService(store, client, settings, arrival_hold=0.05)
    arrival = service.arrive(ROOM)  # its transcription has not come back
    await asyncio.wait_for(service.remember(ROOM, BOB, "meanwhile"), 5)  # held, then let by
    await collect(service.reply(ROOM, ALICE, "the transcript", arrival=arrival))
    texts = [m.text for m in await service.history(ROOM)]
    assert texts == ["meanwhile", "the transcript", "echo: the transcript"]
    await service.aclose()


async def test_the_notice_stays_above_a_failed_answer(store: Store, server: FakeLLMServer) -> None:
    server.enqueue(Script(status=404))  # no such model: not retried
    service = make_service(store, server, default_model="llama3.1:8b")
    surface = RecordingSurface(SystemClock(), min_edit_interval=0.0)
    await relay(
        service,
        surface,
        ROOM,
        ALICE,
        "hi",
        group=False,
        platform_message_id="1",
        images=[await photo("red")],
    )
    (shown,) = surface.final_texts()
    assert shown.startswith(f"{BLIND_MODEL_NOTE}\n\n") and "⚠" in shown
    await service.aclose()
