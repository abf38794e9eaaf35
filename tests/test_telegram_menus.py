"""/persona and the /model menu on Telegram, end to end: the real bot against the fake Bot API
(inline keyboards, button presses as callback queries, answerCallbackQuery with its limits),
the conversation service on SQLite and the fake LLM server, which shows what the next request
carried (system prompt, model, temperature)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from bots.telegram.handlers import commands as command_texts
from bots.telegram.handlers import menus
from bots.telegram.keyboards import MAX_CALLBACK_DATA_BYTES
from core import AsyncClient
from core.config import CoreSettings
from core.conversation import ChatRef, ConversationService
from core.errors import PersonasFileError
from tests.fakes.telegram_api import (
    BUTTON_DATA_INVALID,
    QUERY_INVALID,
    ApiError,
    FakeChat,
    FakeTelegramAPI,
    StoredMessage,
)
from tests.test_telegram_bot import ALICE, BOB, CAROL, WAIT, running_bot

PERSONAS = """
[[persona]]
name = "pirate"
description = "Answers like a pirate"
system_prompt = "You are a pirate."
model = "pirate-model"
temperature = 1.3

[[persona]]
name = "terse"
description = "One line answers"
system_prompt = "Answer in one line."
"""


def personas_file(tmp_path: Path, text: str = PERSONAS) -> Path:
    path = tmp_path / "personas.toml"
    path.write_text(text, encoding="utf-8")
    return path


async def keyboard_reply(tg: FakeTelegramAPI, chat: FakeChat, request: dict) -> StoredMessage:
    """The bot's reply to `request` once it carries its keyboard."""
    return await tg.wait_until(
        lambda: next(
            (
                m
                for m in chat.bot_messages()
                if m.reply_to == request["message_id"] and "reply_markup" in m.raw
            ),
            None,
        ),
        WAIT,
    )


async def test_a_pressed_persona_applies_to_the_next_request(tmp_path: Path) -> None:
    async with running_bot(tmp_path, personas_file=personas_file(tmp_path)) as h:
        chat = h.tg.private_chat(ALICE)
        shown = await h.ask(chat, ALICE, "/persona")
        menu = await keyboard_reply(h.tg, chat, shown)
        assert menu.text == "Persona: none (the operator's defaults).\nChoose a persona:"
        assert h.tg.keyboard(chat, menu.message_id) == [
            ("pirate: Answers like a pirate", "persona:pirate"),
            ("terse: One line answers", "persona:terse"),
            ("No persona", "persona:default"),
        ]
        query = await h.tg.press_button(chat, menu.message_id, ALICE, "persona:pirate")
        await h.tg.wait_until(lambda: query.answered, WAIT)
        await h.tg.wait_until(lambda: menu.text == "Persona set to pirate.", WAIT)
        assert "reply_markup" not in menu.raw  # the edit took the buttons away
        question = await h.ask(chat, ALICE, "ahoy?")
        await h.reply_text(chat, question, "echo: ahoy?")
        sent = h.llm.requests[-1].json
        assert sent["messages"][0] == {"role": "system", "content": "You are a pirate."}
        assert (sent["model"], sent["temperature"]) == ("pirate-model", 1.3)
        # The keyboard again ticks the chosen one; a persona without a model or temperature
        # leaves the operator's model and sends no temperature.
        again = await h.ask(chat, ALICE, "/persona")
        menu = await keyboard_reply(h.tg, chat, again)
        assert h.tg.keyboard(chat, menu.message_id)[0][0] == "✓ pirate: Answers like a pirate"
        await h.tg.press_button(chat, menu.message_id, ALICE, "persona:terse")
        await h.tg.wait_until(lambda: menu.text == "Persona set to terse.", WAIT)
        question = await h.ask(chat, ALICE, "short?")
        await h.reply_text(chat, question, "echo: short?")
        sent = h.llm.requests[-1].json
        assert sent["messages"][0]["content"] == "Answer in one line."
        assert sent["model"] == "fake-model" and "temperature" not in sent


async def test_the_chats_own_settings_win_over_the_persona(tmp_path: Path) -> None:
    async with running_bot(tmp_path, personas_file=personas_file(tmp_path)) as h:
        chat = h.tg.private_chat(ALICE)
        own = await h.ask(chat, ALICE, "/model my-model")
        await h.reply_text(chat, own, "Model set to my-model.")
        chosen = await h.ask(chat, ALICE, "/persona PIRATE")
        await h.reply_text(
            chat,
            chosen,
            "Persona set to pirate.\nThis chat's own model (my-model) still applies; "
            "/model default uses the persona's (pirate-model).",
        )
        question = await h.ask(chat, ALICE, "who?")
        await h.reply_text(chat, question, "echo: who?")
        sent = h.llm.requests[-1].json
        assert (sent["model"], sent["messages"][0]["content"]) == ("my-model", "You are a pirate.")
        unknown = await h.ask(chat, ALICE, "/persona ghost")
        await h.reply_text(
            chat, unknown, "There is no persona named 'ghost'. Choose one of: pirate, terse."
        )
        cleared = await h.ask(chat, ALICE, "/persona default")
        await h.reply_text(chat, cleared, "Persona cleared: the operator's defaults apply.")
        question = await h.ask(chat, ALICE, "now?")
        await h.reply_text(chat, question, "echo: now?")
        assert h.llm.requests[-1].json["messages"][0]["content"] == h.settings.system_prompt


async def test_in_a_group_only_admins_choose(
    tmp_path: Path, clean_logs: Callable[[], None]
) -> None:
    async with running_bot(
        tmp_path, personas_file=personas_file(tmp_path), admin_ids=[CAROL["id"]]
    ) as h:
        group = h.tg.supergroup()
        h.tg.set_admins(group, [ALICE["id"]])
        shown = await h.ask(group, BOB, "/persona")  # anyone may look
        menu = await keyboard_reply(h.tg, group, shown)
        refused = await h.tg.press_button(group, menu.message_id, BOB, "persona:pirate")
        await h.tg.wait_until(lambda: refused.answered, WAIT)
        assert (refused.text, refused.show_alert) == (command_texts.ADMINS_ONLY, True)
        assert menu.text.startswith("Persona: none") and "reply_markup" in menu.raw
        typed = await h.ask(group, BOB, "/persona pirate")
        await h.reply_text(group, typed, command_texts.ADMINS_ONLY)
        assert (await h.service.chat_config(_chat(group))).persona is None
        # A group admin's press, and the operator's (ADMIN_IDS), are taken.
        await h.tg.press_button(group, menu.message_id, ALICE, "persona:pirate")
        await h.tg.wait_until(lambda: menu.text == "Persona set to pirate.", WAIT)
        model_menu = await h.ask(group, BOB, "/model")
        menu = await keyboard_reply(h.tg, group, model_menu)
        assert menu.text == "Model: fake-model (default)"
        buttons = h.tg.keyboard(group, menu.message_id)
        assert ("fake-model", "model:fake-model") in buttons
        assert ("pirate-model", "model:pirate-model") in buttons  # a persona's model
        assert buttons[-1] == ("Default", "model:default")
        refused = await h.tg.press_button(group, menu.message_id, BOB, "model:pirate-model")
        await h.tg.wait_until(lambda: refused.answered, WAIT)
        assert refused.text == command_texts.ADMINS_ONLY
        await h.tg.press_button(group, menu.message_id, CAROL, "model:pirate-model")
        await h.tg.wait_until(lambda: menu.text == "Model set to pirate-model.", WAIT)
        assert (await h.service.chat_config(_chat(group))).model == "pirate-model"
    clean_logs()


def _chat(chat: FakeChat) -> ChatRef:
    return ChatRef("telegram", str(chat.id), "")


async def test_a_stale_or_foreign_button_is_answered_and_changes_nothing(tmp_path: Path) -> None:
    async with running_bot(tmp_path, personas_file=personas_file(tmp_path)) as h:
        chat = h.tg.private_chat(ALICE)
        shown = await h.ask(chat, ALICE, "/persona")
        menu = await keyboard_reply(h.tg, chat, shown)
        # Data no keyboard of ours sends (an older version's, say) is answered, not applied.
        menu.raw["reply_markup"]["inline_keyboard"].append(
            [{"text": "old", "callback_data": "colour:red"}]
        )
        query = await h.tg.press_button(chat, menu.message_id, ALICE, "colour:red")
        await h.tg.wait_until(lambda: query.answered, WAIT)
        assert query.text == menus.STALE
        # A persona removed since the keyboard was sent: the press says so.
        menu.raw["reply_markup"]["inline_keyboard"].append(
            [{"text": "gone", "callback_data": "persona:gone"}]
        )
        await h.tg.press_button(chat, menu.message_id, ALICE, "persona:gone")
        await h.tg.wait_until(lambda: menu.text.startswith("There is no persona named"), WAIT)
        assert (await h.service.chat_config(_chat(chat))).persona is None


async def test_no_personas_file_means_no_keyboard(tmp_path: Path) -> None:
    async with running_bot(tmp_path) as h:
        chat = h.tg.private_chat(ALICE)
        shown = await h.ask(chat, ALICE, "/persona")
        await h.reply_text(
            chat,
            shown,
            "Persona: none (the operator's defaults).\n"
            "No personas are set up here (the operator's PERSONAS_FILE).",
        )
        assert "reply_markup" not in next(iter(chat.bot_messages())).raw


def test_a_bad_personas_file_stops_the_service_from_starting(tmp_path: Path) -> None:
    path = personas_file(tmp_path, PERSONAS + "\n[[persona]]\nname = 'pirate'\n")
    settings = CoreSettings(_env_file=None, personas_file=path)  # type: ignore[call-arg]
    with pytest.raises(PersonasFileError, match="persona #3 \\('pirate'\\)"):
        ConversationService(object(), AsyncClient(), settings)  # type: ignore[arg-type]


async def test_the_fake_holds_the_bot_api_limits_of_keyboards_and_answers() -> None:
    async with FakeTelegramAPI() as tg:
        chat = tg.private_chat(ALICE)
        too_long = "x" * (MAX_CALLBACK_DATA_BYTES + 1)
        keyboard = {"inline_keyboard": [[{"text": "b", "callback_data": too_long}]]}
        with pytest.raises(ApiError, match=BUTTON_DATA_INVALID):
            await tg._api_sendmessage({"chat_id": chat.id, "text": "t", "reply_markup": keyboard})
        keyboard["inline_keyboard"][0][0]["callback_data"] = "é" * 32  # 64 bytes: fits
        sent = await tg._api_sendmessage(
            {"chat_id": chat.id, "text": "t", "reply_markup": keyboard}
        )
        query = await tg.press_button(chat, sent["message_id"], ALICE, "é" * 32)
        with pytest.raises(ApiError, match="MESSAGE_TOO_LONG"):
            await tg._api_answercallbackquery({"callback_query_id": query.id, "text": "y" * 201})
        assert await tg._api_answercallbackquery({"callback_query_id": query.id}) is True
        with pytest.raises(ApiError, match=QUERY_INVALID):  # answered once only
            await tg._api_answercallbackquery({"callback_query_id": query.id})
        assert tg.updates[-1]["callback_query"]["data"] == "é" * 32


async def test_a_press_from_someone_not_let_in_is_refused(tmp_path: Path) -> None:
    async with running_bot(
        tmp_path, personas_file=personas_file(tmp_path), telegram_allowed_ids=[ALICE["id"]]
    ) as h:
        group = h.tg.supergroup()
        h.tg.set_admins(group, [ALICE["id"], BOB["id"]])
        shown = await h.ask(group, ALICE, "/persona")
        menu = await keyboard_reply(h.tg, group, shown)
        refused = await h.tg.press_button(group, menu.message_id, BOB, "persona:terse")
        await h.tg.wait_until(lambda: refused.answered, WAIT)
        assert (refused.text, refused.show_alert) == (menus.NOT_ALLOWED, True)
        assert (await h.service.chat_config(_chat(group))).persona is None
        await h.tg.press_button(group, menu.message_id, ALICE, "persona:terse")
        await h.tg.wait_until(lambda: menu.text == "Persona set to terse.", WAIT)
