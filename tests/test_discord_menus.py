"""/persona and the /model choices on Discord, end to end: discord.py against the fake Discord
(autocomplete requests answered with choices, within Discord's limits), the conversation
service on SQLite and the fake LLM server, which shows what the next request carried."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bots.discord.commands import ADMINS_ONLY
from tests.fakes.discord_api import ALICE_ID, BOB_ID, GENERAL_ID, MAX_CHOICES, FakeDiscord
from tests.test_discord_bot import MENTION, WAIT, _bot

PERSONAS = """
[[persona]]
name = "pirate"
description = "Answers like a pirate"
system_prompt = "You are a pirate."
model = "pirate-model"
temperature = 0.7

[[persona]]
name = "terse"
description = "One line answers"
system_prompt = "Answer in one line."
"""


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as server:
        yield server


def personas_file(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "personas.toml"
    path.write_text(PERSONAS + extra, encoding="utf-8")
    return path


async def test_persona_choices_then_applied_to_the_next_request(
    tmp_path: Path, fake: FakeDiscord
) -> None:
    async with _bot(tmp_path, fake, personas_file=personas_file(tmp_path)) as bot:
        typing = await fake.push_interaction("persona", {"name": ""}, focused="name")
        assert await fake.wait_choices(typing) == [
            {"name": "pirate: Answers like a pirate", "value": "pirate"},
            {"name": "terse: One line answers", "value": "terse"},
        ]
        narrowed = await fake.push_interaction("persona", {"name": "LINE"}, focused="name")
        assert [c["value"] for c in await fake.wait_choices(narrowed)] == ["terse"]
        refused = await fake.push_interaction("persona", {"name": "pirate"}, user=BOB_ID)
        assert await fake.wait_answered(refused) == ADMINS_ONLY
        chosen = await fake.push_interaction("persona", {"name": "pirate"}, user=ALICE_ID)
        assert await fake.wait_answered(chosen) == "Persona set to pirate."
        assert chosen.callback is not None and not chosen.callback["data"].get("flags", 0) & 64
        shown = await fake.push_interaction("persona", user=BOB_ID)
        assert (await fake.wait_answered(shown)).startswith(
            "Persona: pirate, Answers like a pirate."
        )
        await fake.push_message(f"{MENTION} ahoy")
        await bot.answer(GENERAL_ID, "echo: [Bob] ahoy")
        sent = (await bot.llm.wait_for_requests(1, timeout=WAIT))[0].json
        assert sent["messages"][0] == {"role": "system", "content": "You are a pirate."}
        assert (sent["model"], sent["temperature"]) == ("pirate-model", 0.7)
        unknown = await fake.push_interaction("persona", {"name": "ghost"}, user=ALICE_ID)
        assert "no persona named 'ghost'" in await fake.wait_answered(unknown)


async def test_model_autocomplete_offers_the_configured_models(
    tmp_path: Path, fake: FakeDiscord
) -> None:
    many = "".join(
        f'\n[[persona]]\nname = "p{i}"\ndescription = "d"\nsystem_prompt = "s"\n'
        f'model = "model-{i:02d}"\n'
        for i in range(40)
    )
    async with _bot(tmp_path, fake, personas_file=personas_file(tmp_path, many)):
        typing = await fake.push_interaction("model", {"name": ""}, focused="name")
        choices = await fake.wait_choices(typing)
        assert len(choices) == MAX_CHOICES  # 42 models configured: Discord's cap is kept
        assert choices[:2] == [
            {"name": "fake-model", "value": "fake-model"},
            {"name": "pirate-model", "value": "pirate-model"},
        ]
        narrowed = await fake.push_interaction("model", {"name": "PIRATE"}, focused="name")
        assert await fake.wait_choices(narrowed) == [
            {"name": "pirate-model", "value": "pirate-model"}
        ]
        persona_typing = await fake.push_interaction("persona", {"name": "p"}, focused="name")
        assert len(await fake.wait_choices(persona_typing)) == MAX_CHOICES
        set_model = await fake.push_interaction("model", {"name": "model-07"}, user=ALICE_ID)
        assert await fake.wait_answered(set_model) == "Model set to model-07."
