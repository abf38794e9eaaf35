"""/model and /system: one rule, the same answers on every surface.

One table of inputs goes through Telegram (the real aiogram bot against the fake Bot API, from
a private chat), Discord (a real slash-command interaction through the fake gateway, from a
member with Manage Server) and `parley chat` (its read loop fed line by line). Each row says
what the chat's setting is afterwards and what the user is told; every surface must agree.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from rich.console import Console

from bots.config import Settings
from bots.console import ConsoleChat
from core import AsyncClient
from core.chat_settings import (
    MODEL_CONTROL_CHARACTERS,
    MODEL_USAGE,
    SYSTEM_PROMPT_CONTROL_CHARACTERS,
    SYSTEM_PROMPT_EMPTY,
    SYSTEM_PROMPT_TOO_LONG,
    asks_current,
    parse_model,
    parse_system_prompt,
)
from core.conversation import ChatRef, ConversationService
from core.errors import InvalidSettingError, ParleyError
from storage import open_store
from tests.fakes.discord_api import ALICE_ID, GENERAL_ID, FakeDiscord
from tests.fakes.telegram_api import user
from tests.test_conversation_fakes import WAIT, ScriptedProvider
from tests.test_discord_bot import _bot as discord_bot
from tests.test_telegram_bot import running_bot as telegram_bot

DEFAULT_MODEL = "fake-model"
DEFAULT_PROMPT = "SYS"
BACK_TO_DEFAULT_MODEL = f"Model back to the default ({DEFAULT_MODEL})."
PROMPT_SET = "System prompt set."
PROMPT_BACK = "System prompt back to the default."
LONGEST_PROMPT = "p" * 4000
#: Discord's message flag for an answer only the user who asked sees.
EPHEMERAL = 1 << 6


@dataclass(frozen=True)
class Row:
    command: str  # "model" or "system"
    argument: str  # what follows the command ("" for none)
    stored: str | None  # the chat's setting afterwards (None: the operator's default)
    answer: str  # what the user is told


#: Played in order on one chat: each row starts from the setting the row before left.
TABLE = [
    Row("model", "", None, f"Model: {DEFAULT_MODEL} (default)"),
    Row("model", "gpt-4o-mini", "gpt-4o-mini", "Model set to gpt-4o-mini."),
    Row("model", "   ", "gpt-4o-mini", "Model: gpt-4o-mini"),
    Row(
        "model",
        "  meta-llama/llama-3.1-8b  ",
        "meta-llama/llama-3.1-8b",
        "Model set to meta-llama/llama-3.1-8b.",
    ),
    Row("model", "two words", "meta-llama/llama-3.1-8b", MODEL_USAGE),
    Row("model", "m" * 101, "meta-llama/llama-3.1-8b", MODEL_USAGE),
    Row("model", "gpt\x1b[2J", "meta-llama/llama-3.1-8b", MODEL_CONTROL_CHARACTERS),
    Row("model", "llama\x9b2J", "meta-llama/llama-3.1-8b", MODEL_CONTROL_CHARACTERS),
    Row("model", "m" * 100, "m" * 100, f"Model set to {'m' * 100}."),
    Row("model", "RESET", None, BACK_TO_DEFAULT_MODEL),
    Row("model", "llama3.1:8b", "llama3.1:8b", "Model set to llama3.1:8b."),
    Row("model", " Default ", None, BACK_TO_DEFAULT_MODEL),
    Row("model", "default", None, BACK_TO_DEFAULT_MODEL),
    Row("system", "", None, f"System prompt (default):\n{DEFAULT_PROMPT}"),
    Row("system", "  Answer in French.  ", "Answer in French.", PROMPT_SET),
    Row("system", "   ", "Answer in French.", "System prompt:\nAnswer in French."),
    Row("system", "Be brief.\tNo lists.", "Be brief.\tNo lists.", PROMPT_SET),
    Row("system", LONGEST_PROMPT, LONGEST_PROMPT, PROMPT_SET),
    Row("system", LONGEST_PROMPT + "p", LONGEST_PROMPT, SYSTEM_PROMPT_TOO_LONG),
    Row("system", "ring \x07 the bell", LONGEST_PROMPT, SYSTEM_PROMPT_CONTROL_CHARACTERS),
    Row("system", "csi \x9b2J", LONGEST_PROMPT, SYSTEM_PROMPT_CONTROL_CHARACTERS),
    Row("system", "del \x7f", LONGEST_PROMPT, SYSTEM_PROMPT_CONTROL_CHARACTERS),
    Row("system", "Reset", None, PROMPT_BACK),
    Row("system", "Speak like a pirate.", "Speak like a pirate.", PROMPT_SET),
    Row("system", "DEFAULT", None, PROMPT_BACK),
]


@dataclass
class Surface:
    """One way in: `send` runs `/command argument` and returns the answer."""

    send: Callable[[str, str], Awaitable[str]]
    service: ConversationService
    chat: ChatRef

    async def stored(self, command: str) -> str | None:
        config = await self.service.chat_config(self.chat)
        return config.model if command == "model" else config.system_prompt


@contextlib.asynccontextmanager
async def telegram(tmp_path: Path) -> AsyncIterator[Surface]:
    alice = user(1001, "Alice")
    async with telegram_bot(tmp_path, system_prompt=DEFAULT_PROMPT) as h:
        chat = h.tg.private_chat(alice)

        async def send(command: str, argument: str) -> str:
            text = f"/{command} {argument}" if argument else f"/{command}"
            request = await h.ask(chat, alice, text)
            return (await h.any_reply(chat, request)).text

        yield Surface(send, h.service, ChatRef("telegram", str(chat.id)))


@contextlib.asynccontextmanager
async def discord(tmp_path: Path) -> AsyncIterator[Surface]:
    options = {"model": "name", "system": "prompt"}
    async with (
        FakeDiscord() as fake,
        discord_bot(tmp_path, fake, system_prompt=DEFAULT_PROMPT) as h,
    ):

        async def send(command: str, argument: str) -> str:
            # Discord leaves an empty option out of the interaction.
            given = {options[command]: argument} if argument else None
            interaction = await fake.push_interaction(command, given, user=ALICE_ID)
            return await fake.wait_answered(interaction)

        yield Surface(send, h.service, ChatRef("discord", str(GENERAL_ID)))


class _Lines:
    """The console's input, one line at a time; `ready` is set while the console waits for one."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()
        self.ready = asyncio.Event()

    async def get(self) -> str | None:
        self.ready.set()
        return await self.queue.get()


@contextlib.asynccontextmanager
async def console(tmp_path: Path) -> AsyncIterator[Surface]:
    settings = Settings(
        _env_file=None,
        default_model=DEFAULT_MODEL,
        system_prompt=DEFAULT_PROMPT,
        database_url=f"sqlite:///{tmp_path}/chat.db",
    )
    store = await open_store(settings.database_url)
    service = ConversationService(store, AsyncClient(provider=ScriptedProvider()), settings)
    output = io.StringIO()
    screen = Console(file=output, width=10_000, color_system=None, force_terminal=False)
    session = ConsoleChat(service, settings, screen)
    lines = _Lines()
    running = asyncio.create_task(session.run(lines, store.location))  # type: ignore[arg-type]

    async def send(command: str, argument: str) -> str:
        await asyncio.wait_for(lines.ready.wait(), WAIT)
        lines.ready.clear()
        start = output.tell()
        lines.queue.put_nowait(f"/{command} {argument}")
        await asyncio.wait_for(lines.ready.wait(), WAIT)  # answered: the prompt is back
        printed = output.getvalue()[start:]
        return printed.removesuffix("you> ").removesuffix("\n")

    try:
        yield Surface(send, service, session.chat)
    finally:
        lines.queue.put_nowait(None)
        await asyncio.wait_for(running, WAIT)
        await service.aclose()
        await store.close()


SURFACES = {"telegram": telegram, "discord": discord, "console": console}


@pytest.mark.parametrize("surface", SURFACES)
async def test_every_surface_follows_the_one_rule(surface: str, tmp_path: Path) -> None:
    expected = [(row.command, row.argument, row.stored, row.answer) for row in TABLE]
    seen = []
    async with SURFACES[surface](tmp_path) as way_in:
        for row in TABLE:
            answer = await way_in.send(row.command, row.argument)
            seen.append((row.command, row.argument, await way_in.stored(row.command), answer))
    assert seen == expected


async def test_discord_shows_a_change_to_the_channel_and_the_rest_to_the_asker(
    tmp_path: Path,
) -> None:
    """A change concerns everyone in the chat; the value shown or a refusal only the asker."""
    uses = [  # (command, its option, whether only the asker sees the answer)
        ("model", None, True),
        ("model", {"name": "two words"}, True),
        ("model", {"name": "gpt-4o-mini"}, False),
        ("system", None, True),
        ("system", {"prompt": "ring \x07"}, True),
        ("system", {"prompt": "default"}, False),
    ]
    seen = []
    async with (
        FakeDiscord() as fake,
        discord_bot(tmp_path, fake, system_prompt=DEFAULT_PROMPT),
    ):
        for command, options, _ in uses:
            interaction = await fake.push_interaction(command, options, user=ALICE_ID)
            await fake.wait_answered(interaction)
            assert interaction.callback is not None
            flags = interaction.callback["data"].get("flags", 0)
            seen.append((command, options, bool(flags & EPHEMERAL)))
    assert seen == uses


# The rule itself, for what a surface cannot carry or a program may call.


def test_a_system_prompt_keeps_its_line_breaks_but_not_other_controls() -> None:
    assert parse_system_prompt("\n  Line one\n\tLine two\n ") == "Line one\n\tLine two"
    for control in ("\r", "\x00", "\x0b", "\x1b", "\x85"):
        with pytest.raises(InvalidSettingError) as refused:
            parse_system_prompt(f"one{control}two")
        assert str(refused.value) == SYSTEM_PROMPT_CONTROL_CHARACTERS


def test_a_model_name_has_no_control_character_at_all() -> None:
    for control in ("\t", "\n", "\x00", "\x7f", "\x9f"):
        with pytest.raises(InvalidSettingError, match="control characters"):
            parse_model(f"gpt{control}4o")
    assert parse_model("claude@2024") == "claude@2024"


def test_blank_asks_for_the_current_value_and_is_no_value_to_store() -> None:
    assert asks_current(None) and asks_current("") and asks_current(" \n\t ")
    assert not asks_current(" x ")
    with pytest.raises(InvalidSettingError) as refused:
        parse_system_prompt(" \n ")
    assert str(refused.value) == SYSTEM_PROMPT_EMPTY
    with pytest.raises(InvalidSettingError, match="one word"):
        parse_model("  ")


def test_the_refusal_is_a_parley_error_whose_message_is_the_answer() -> None:
    with pytest.raises(ParleyError) as refused:
        parse_model("two words")
    assert str(refused.value) == MODEL_USAGE
