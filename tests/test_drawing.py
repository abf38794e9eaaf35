"""bots.drawing: `/image` for both bots, over real HTTP to the fake image endpoint, with the
per-chat switch on a real store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bots.drawing import (
    CAPTION_MAX_CHARS,
    Switch,
    draw,
    parse_image_args,
    switch_image_generation,
)
from bots.splitting import utf16_length
from core import errors
from core.config import CoreSettings
from core.conversation import ConversationService
from core.usage import UsageKind, utc_now
from storage import DRAWING_TOKENS, Store, UsageKey
from tests.fakes.llm_server import GENERATED_PNG, FakeLLMServer
from tests.test_conversation_fakes import ALICE, chat
from tests.test_conversation_people import make_service
from tests.test_core_image_generation import REFUSAL

ROOM = chat("7")


@pytest.fixture
async def service(store: Store, server: FakeLLMServer) -> AsyncIterator[ConversationService]:
    service = make_service(store, server)
    yield service
    await service.aclose()


def settings(**values: Any) -> CoreSettings:
    return CoreSettings(_env_file=None, **{"image_model": "image-model", **values})


@pytest.mark.parametrize(
    ("args", "parsed"),
    [
        (None, None),
        ("   ", None),
        ("off", Switch.OFF),
        (" ON ", Switch.ON),
        ("a cat in the snow", "a cat in the snow"),
        ("off the coast of Maine", "off the coast of Maine"),
    ],
)
def test_the_argument_is_a_switch_only_when_it_is_the_exact_word(
    args: str | None, parsed: object
) -> None:
    assert parse_image_args(args) == parsed


async def test_a_drawing_is_the_servers_image_with_the_prompt_as_caption(
    service: ConversationService, server: FakeLLMServer
) -> None:
    drawing = await draw(service, settings(image_size="512x512"), ROOM, "a red  fox", ALICE)
    assert (drawing.data, drawing.media_type) == (GENERATED_PNG, "image/png")
    assert (drawing.file_name, drawing.caption) == ("image.png", "a red fox")
    request = server.requests[-1]
    assert request.path == "/v1/images/generations"
    assert request.json["model"] == "image-model" and request.json["size"] == "512x512"
    assert "response_format" not in request.json  # the client's to honour, as in g4f


async def test_a_long_prompt_is_cut_for_the_caption_not_for_the_model(
    service: ConversationService, server: FakeLLMServer
) -> None:
    prompt = "a very detailed scene " * 100
    drawing = await draw(service, settings(), ROOM, prompt, ALICE)
    assert len(drawing.caption) == CAPTION_MAX_CHARS and drawing.caption.endswith("…")
    assert server.requests[-1].json["prompt"] == prompt


async def test_a_caption_of_emoji_fits_telegram_which_counts_utf16_units(
    service: ConversationService, server: FakeLLMServer
) -> None:
    drawing = await draw(service, settings(), ROOM, "🐱" * 700, ALICE)
    assert utf16_length(drawing.caption) <= CAPTION_MAX_CHARS
    assert drawing.caption == "🐱" * 511 + "…"


async def test_without_an_image_model_drawing_is_off(
    service: ConversationService, server: FakeLLMServer
) -> None:
    with pytest.raises(errors.ImageGenerationOffError) as caught:
        await draw(service, settings(image_model=None), ROOM, "a cat", ALICE)
    assert errors.describe(caught.value) == "Drawing images is not set up on this bot."
    assert server.requests == []


async def test_admins_turn_it_off_and_on_per_chat(
    service: ConversationService, server: FakeLLMServer
) -> None:
    line = await switch_image_generation(service, ROOM, Switch.OFF)
    assert "off in this chat" in line
    with pytest.raises(errors.ImageGenerationOffError) as caught:
        await draw(service, settings(), ROOM, "a cat", ALICE)
    assert "turned off in this chat" in errors.describe(caught.value)
    await draw(service, settings(), chat("8"), "a cat", ALICE)  # another chat is not affected
    assert "is on" in await switch_image_generation(service, ROOM, Switch.ON)
    assert (await draw(service, settings(), ROOM, "a cat", ALICE)).data == GENERATED_PNG


async def test_a_refused_prompt_says_so(
    service: ConversationService, server: FakeLLMServer
) -> None:
    server.image_scripts.append(REFUSAL)
    with pytest.raises(errors.ContentPolicyError) as caught:
        await draw(service, settings(), ROOM, "something forbidden", ALICE)
    assert "refused this prompt" in errors.describe(caught.value)


async def test_a_drawing_is_charged_to_its_asker(
    service: ConversationService, server: FakeLLMServer
) -> None:
    await draw(service, settings(), ROOM, "a cat", ALICE)
    (row,) = await service.store.usage_report(None, "user")
    assert (row.key, row.calls) == (f"{ROOM.platform}:{ALICE.id}", 1)
    (model,) = await service.store.usage_report(None, "model")
    assert model.label == "image-model"


async def test_a_spent_budget_stops_a_drawing_before_the_model_is_asked(
    store: Store, server: FakeLLMServer
) -> None:
    service = make_service(store, server, user_daily_tokens=100)
    try:
        await service.record_usage(
            ROOM, ALICE, UsageKind.CHAT, "fake-model", None, prompt_tokens=150
        )
        with pytest.raises(errors.OverBudgetError) as caught:
            await draw(service, settings(), ROOM, "a cat", ALICE)
        assert "daily 100 tokens" in errors.describe(caught.value)
        assert not [r for r in server.requests if r.path.endswith("/images/generations")]
        day = UsageKey.user(ROOM.platform, ALICE.id, "day")
        assert (await service.store.usage_totals([day], utc_now()))[day].tokens == 150
    finally:
        await service.aclose()


async def test_drawings_count_against_a_token_budget_and_racing_ones_take_turns(
    store: Store, server: FakeLLMServer
) -> None:
    """Found in review: a drawing recorded 0 tokens, so GUEST_DAILY_TOKENS (the bound an open
    bot is told to set) never stopped /image; and racing /image requests were only checked, not
    admitted, so all passed before any was charged. A drawing now counts DRAWING_TOKENS."""
    service = make_service(store, server, user_daily_tokens=DRAWING_TOKENS + 1)
    try:
        results = await asyncio.gather(
            *(draw(service, settings(), ROOM, f"cat {n}", ALICE) for n in range(4)),
            return_exceptions=True,
        )
        refused = [r for r in results if isinstance(r, errors.OverBudgetError)]
        drawn = [r for r in results if not isinstance(r, BaseException)]
        assert (len(drawn), len(refused)) == (2, 2)  # the second crossed the limit
        day = UsageKey.user(ROOM.platform, ALICE.id, "day")
        totals = await service.store.usage_totals([day], utc_now())
        assert totals[day].tokens == 2 * DRAWING_TOKENS
    finally:
        await service.aclose()
