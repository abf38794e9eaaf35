"""The Telegram bot end to end: a real aiogram bot in long polling against the fake Bot API, the
real conversation service on SQLite, and the fake LLM server as the model.

Every wait is on an event with a timeout. Write limits are lowered to keep the suite fast,
except in the test that checks Telegram's real 1 s pace.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from bots.config import Settings
from bots.errors import BotStartupError
from bots.splitting import join_parts, utf16_length
from bots.telegram import TelegramBot, TelegramLimits
from bots.telegram.handlers import chat as chat_texts
from bots.telegram.handlers import commands as command_texts
from bots.telegram.handlers.other import UNREADABLE
from bots.telegram.middlewares import REFUSAL
from bots.write_budget import WriteLimits
from core import AsyncClient, chat_settings, errors
from core.conversation import INTERRUPTED_NOTE, ConversationService, ResetReport, describe_reset
from storage.factory import open_store
from tests.fakes.llm_server import FakeLLMServer, Script
from tests.fakes.telegram_api import (
    ApiError,
    Call,
    FakeChat,
    FakeTelegramAPI,
    FloodLimits,
    StoredMessage,
    user,
)

ALICE = user(1001, "Alice", username="alice")
BOB = user(1002, "Bob")
CAROL = user(1003, "Carol")
OTHER_BOT = user(5005, "Other", username="other_bot", is_bot=True)
#: Fast enough for the suite, distinct so a test can tell which one a chat used.
FAST = TelegramLimits(private=WriteLimits(1, 0.1), group=WriteLimits(20, 6.0, reserve=5))
#: Arrival times at the fake lag the bot's clock by a little network latency.
CLOCK_SLACK = 0.05
WAIT = 10.0


@dataclass
class Harness:
    tg: FakeTelegramAPI
    llm: FakeLLMServer
    service: ConversationService
    settings: Settings

    @property
    def mention(self) -> str:
        return f"@{self.tg.bot['username']}"

    async def ask(self, chat: FakeChat, sender: dict, text: str, **kw: object) -> dict:
        return await self.tg.message(chat, sender, text, **kw)

    async def reply_text(self, chat: FakeChat, request: dict, text: str) -> StoredMessage:
        """Wait until the bot's reply to `request` reads `text` (as Telegram stores it)."""
        expected = text.strip()
        return await self.tg.wait_until(
            lambda: next((m for m in replies(chat, request) if m.text == expected), None), WAIT
        )

    async def any_reply(self, chat: FakeChat, request: dict) -> StoredMessage:
        return (await self.tg.wait_until(lambda: replies(chat, request), WAIT))[0]


def replies(chat: FakeChat, request: dict) -> list[StoredMessage]:
    """The bot's messages that reply to `request` (the first part of each answer)."""
    return [m for m in chat.bot_messages() if m.reply_to == request["message_id"]]


def answer_parts(chat: FakeChat, request: dict) -> list[StoredMessage]:
    """Every message of the answer to `request`: each part replies to the one before."""
    parts: list[StoredMessage] = []
    target = request["message_id"]
    while nxt := next((m for m in chat.bot_messages() if m.reply_to == target), None):
        parts.append(nxt)
        target = nxt.message_id
    return parts


@contextlib.asynccontextmanager
async def running_bot(
    tmp_path: Path,
    *,
    limits: TelegramLimits = FAST,
    flood_limits: FloodLimits | None = None,
    llm_settings: Callable[[FakeLLMServer], dict[str, object]] = lambda llm: {},
    **fields: object,
) -> AsyncIterator[Harness]:
    """The bot at `limits` against a fake Bot API refusing writes over `flood_limits`;
    `llm_settings` gives the settings that need the fake LLM's address. Replies stream by edits
    (STREAM_MODE=edit) unless `stream_mode="draft"` is asked for: most tests here are about
    the edit path, which groups and refused drafts still take (`tests/test_telegram_drafts.py`
    covers drafts)."""
    async with FakeTelegramAPI(flood_limits=flood_limits) as tg, FakeLLMServer() as llm:
        values: dict[str, object] = {
            "default_model": "fake-model",
            "stream_mode": "edit",
            **llm_settings(llm),
            **fields,
        }
        settings = Settings(
            _env_file=None,
            telegram_bot_token=tg.token,
            telegram_api_base=tg.base_url,
            openai_base_url=llm.base_url,
            database_url=f"sqlite:///{tmp_path}/parley.db",
            max_retries=0,
            **values,
        )
        store = await open_store(settings.database_url)
        service = ConversationService(store, AsyncClient(base_url=llm.base_url), settings)
        task = asyncio.create_task(TelegramBot(settings, service, write_limits=limits).run())
        try:
            await tg.wait_calls("getUpdates", ok=None, timeout=WAIT)
            yield Harness(tg, llm, service, settings)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await service.aclose()
            await store.close()


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    async with running_bot(tmp_path) as harness:
        yield harness


def last_sent_text(tg: FakeTelegramAPI, chat: FakeChat, message: StoredMessage) -> str:
    """The last text the bot sent for `message`, as sent (Telegram stores it trimmed)."""

    def target(call: Call) -> int | None:
        if call.method == "sendMessage":
            return call.result["message_id"]
        return call.params.get("message_id")

    return [
        c.params["text"]
        for c in tg.calls
        if c.method in ("sendMessage", "editMessageText")
        and c.done
        and c.ok
        and c.params.get("chat_id") == chat.id
        and target(c) == message.message_id
    ][-1]


def spacing(message: StoredMessage) -> list[float]:
    """Seconds between successive versions of a message (send, then each edit)."""
    times = [at for _, _, at in message.history]
    return [b - a for a, b in itertools.pairwise(times)]


async def test_private_reply_streams_as_one_message_then_edits(
    h: Harness, clean_logs: Callable[[], None]
) -> None:
    pieces = ["Hello", " there", ",", " this", " is", " a", " streamed", " reply", "."]
    h.llm.enqueue(Script(pieces=pieces, delay=0.06))
    chat = h.tg.private_chat(ALICE)
    request = await h.ask(chat, ALICE, "hi")
    message = await h.reply_text(chat, request, "".join(pieces))
    assert len(answer_parts(chat, request)) == 1
    assert len(h.tg.calls_of("sendMessage")) == 1
    versions = [text for text, _, _ in message.history]
    assert len(versions) >= 2  # streamed: sent early, then edited
    assert all("".join(pieces).startswith(v) for v in versions)
    assert h.tg.calls_of("sendChatAction")  # typing before the first token
    assert h.tg.commands  # the command menu was registered
    clean_logs()


async def test_long_reply_splits_at_4096_with_code_blocks_rendered(
    h: Harness, clean_logs: Callable[[], None]
) -> None:
    code = "\n".join(f"    value_{i} = compute({i}) * 2  # step {i}" for i in range(60))
    prose = " ".join(f"word{i}" for i in range(700))
    text = f"{prose}\n\n```python\n{code}\n```\n\n{prose} the end"
    assert len(text) >= 10_000
    h.llm.enqueue(Script(pieces=re.findall(r"\S+\s*", text)))
    chat = h.tg.private_chat(ALICE)
    request = await h.ask(chat, ALICE, "long please")
    await h.tg.wait_until(
        lambda: (p := answer_parts(chat, request)) and p[-1].text.endswith("the end"), WAIT
    )
    await h.llm.wait_until_no_active_streams()
    parts = answer_parts(chat, request)
    assert len(parts) >= 3
    assert all(utf16_length(p.text) <= 4096 for p in parts)
    # Rendered: the fences became `pre` entities; every character of the reply is shown.
    shown = "".join(p.text for p in parts)
    without_fences = "\n".join(line for line in text.splitlines() if not line.startswith("```"))
    assert "".join(shown.split()) == "".join(without_fences.split())
    for part in parts:
        code_lines = [line.strip() for line in part.text.splitlines() if "compute(" in line]
        pre = "".join(
            part.text[e["offset"] : e["offset"] + e["length"]]
            for e in part.entities
            if e["type"] == "pre"
        )  # offsets are UTF-16 but this text is ASCII
        assert all(line in pre for line in code_lines)
    clean_logs()


async def test_rejected_formatting_falls_back_to_plain_text(
    h: Harness, clean_logs: Callable[[], None]
) -> None:
    code = "\n".join(f"x_{i} = '*{i}*'" for i in range(400))
    text = "**Intro** " + "lorem ipsum " * 300 + f"\n\n```python\n{code}\n```\n\nDone."
    h.llm.enqueue(Script(pieces=re.findall(r"\S+\s*", text)))
    h.tg.inject_parse_failure("sendMessage", 50)
    h.tg.inject_parse_failure("editMessageText", 50)
    chat = h.tg.private_chat(ALICE)
    request = await h.ask(chat, ALICE, "go")
    await h.tg.wait_until(
        lambda: (p := answer_parts(chat, request)) and p[-1].text.endswith("Done."), WAIT
    )
    messages = answer_parts(chat, request)
    assert len(messages) >= 2
    assert all(not m.entities for m in messages)
    assert messages[0].text.startswith("**Intro**")  # the Markdown as the model wrote it
    assert join_parts([last_sent_text(h.tg, chat, m) for m in messages]) == text
    assert any(c.error and "can't parse entities" in c.error for c in h.tg.calls)
    clean_logs()


async def test_final_markdown_rendered_as_entities(
    h: Harness, clean_logs: Callable[[], None]
) -> None:
    text = "Use **bold** and `<b>tags</b>` & <i>html</i> 1 < 2"
    h.llm.enqueue(Script(pieces=[text]))
    chat = h.tg.private_chat(ALICE)
    request = await h.ask(chat, ALICE, "format")
    message = await h.reply_text(chat, request, "Use bold and <b>tags</b> & <i>html</i> 1 < 2")
    assert {e["type"] for e in message.entities} == {"bold", "code"}
    clean_logs()


async def test_group_answers_only_when_addressed(
    h: Harness, clean_logs: Callable[[], None]
) -> None:
    group = h.tg.supergroup()
    silent = [
        await h.ask(group, ALICE, "just chatting"),
        await h.ask(group, BOB, "hey @alice_friend look"),
        await h.ask(group, BOB, "/ask@other_bot what"),
        await h.ask(group, BOB, f"fwd {h.mention}", forward_from=CAROL),
        await h.tg.message(group, BOB, photo=True),
        await h.ask(group, OTHER_BOT, f"{h.mention} bots talk"),
        await h.ask(group, None, f"{h.mention} from a channel", sender_chat=h.tg.channel()),
    ]
    await h.tg.channel_post(h.tg.channel(), f"{h.mention} a post")  # not even delivered
    mention = await h.ask(group, ALICE, f"{h.mention} what is up?")
    first = await h.reply_text(group, mention, "echo: [Alice] what is up?")
    by_reply = await h.ask(group, BOB, "and then?", reply_to=first.message_id)
    await h.reply_text(group, by_reply, "echo: [Bob] and then?")
    named = await h.ask(group, CAROL, f"/ask{h.mention} named")
    await h.reply_text(group, named, "echo: [Carol] named")
    ask = await h.ask(group, CAROL, "/ask  spaced   question ")
    await h.reply_text(group, ask, "echo: [Carol] spaced   question")
    only_mention = await h.ask(group, BOB, h.mention)
    await h.reply_text(group, only_mention, chat_texts.EMPTY_MENTION)
    empty_ask = await h.ask(group, BOB, "/ask")
    await h.reply_text(group, empty_ask, chat_texts.ASK_USAGE)
    for request in silent:
        assert replies(group, request) == []
    assert len(h.llm.requests) == 4
    clean_logs()


async def test_history_is_carried_and_reset(h: Harness, clean_logs: Callable[[], None]) -> None:
    chat = h.tg.private_chat(ALICE)
    first = await h.ask(chat, ALICE, "my name is Alice")
    await h.reply_text(chat, first, "echo: my name is Alice")
    second = await h.ask(chat, ALICE, "what is my name?")
    await h.reply_text(chat, second, "echo: what is my name?")
    sent = h.llm.requests[-1].json["messages"]
    assert [(m["role"], m["content"]) for m in sent[1:]] == [
        ("user", "my name is Alice"),
        ("assistant", "echo: my name is Alice"),
        ("user", "what is my name?"),
    ]
    assert sent[0]["role"] == "system"
    reset = await h.ask(chat, ALICE, "/reset")
    await h.reply_text(chat, reset, describe_reset(ResetReport()))
    third = await h.ask(chat, ALICE, "fresh start")
    await h.reply_text(chat, third, "echo: fresh start")
    assert [m["content"] for m in h.llm.requests[-1].json["messages"][1:]] == ["fresh start"]
    clean_logs()


async def test_forum_topics_keep_separate_histories(
    h: Harness, clean_logs: Callable[[], None]
) -> None:
    forum = h.tg.supergroup(forum=True)
    ideas = h.tg.open_topic(forum, ALICE, "Ideas")
    bugs = h.tg.open_topic(forum, ALICE, "Bugs")
    a = await h.ask(forum, ALICE, f"{h.mention} idea one", thread_id=ideas)
    await h.reply_text(forum, a, "echo: [Alice] idea one")
    # A plain message in a topic "replies" to the topic's first message: not to the bot.
    await h.ask(forum, ALICE, "chatter in the topic", thread_id=ideas)
    b = await h.ask(forum, BOB, f"{h.mention} bug one", thread_id=bugs)
    reply = await h.reply_text(forum, b, "echo: [Bob] bug one")
    assert reply.thread_id == bugs
    assert [m["content"] for m in h.llm.requests[-1].json["messages"][1:]] == ["[Bob] bug one"]
    assert len(h.llm.requests) == 2
    clean_logs()


async def test_real_private_pace_is_one_second(
    tmp_path: Path, clean_logs: Callable[[], None]
) -> None:
    async with running_bot(tmp_path, limits=TelegramLimits()) as h:
        pieces = [f"w{i} " for i in range(24)]
        h.llm.enqueue(Script(pieces=pieces, delay=0.1))
        chat = h.tg.private_chat(ALICE)
        request = await h.ask(chat, ALICE, "pace")
        message = await h.reply_text(chat, request, "".join(pieces))
        gaps = spacing(message)
        assert len(gaps) >= 2
        assert min(gaps) >= 1.0 - CLOCK_SLACK
    clean_logs()


async def test_group_pace_is_slower_than_private(
    h: Harness, clean_logs: Callable[[], None]
) -> None:
    pieces = [f"w{i} " for i in range(20)]
    h.llm.enqueue(Script(pieces=pieces, delay=0.05), Script(pieces=pieces, delay=0.05))
    chat = h.tg.private_chat(ALICE)
    group = h.tg.group()
    private = await h.ask(chat, ALICE, "p")
    in_group = await h.ask(group, ALICE, "/ask g")
    private_message = await h.reply_text(chat, private, "".join(pieces))
    group_message = await h.reply_text(group, in_group, "".join(pieces))
    assert min(spacing(private_message)) >= FAST.private.window - CLOCK_SLACK
    assert len(spacing(group_message)) >= 2
    # Ordinary edits keep the group's pace; the final text may come sooner (it may use the
    # writes the group's budget keeps in reserve).
    assert min(spacing(group_message)[:-1]) >= FAST.group.pace - CLOCK_SLACK
    clean_logs()


async def test_flood_control_is_waited_out(h: Harness, clean_logs: Callable[[], None]) -> None:
    pieces = [f"p{i} " for i in range(30)]
    h.llm.enqueue(Script(pieces=pieces, delay=0.05))
    h.tg.inject_429("sendMessage", count=1, retry_after=1)
    h.tg.inject_429("editMessageText", count=2, retry_after=1)
    chat = h.tg.private_chat(ALICE)
    request = await h.ask(chat, ALICE, "storm")
    await h.reply_text(chat, request, "".join(pieces))
    calls = [c for c in h.tg.calls if c.method in ("sendMessage", "editMessageText")]
    for limited, after in itertools.pairwise(calls):
        if limited.error and limited.error.startswith("Too Many Requests"):
            assert after.at - limited.at >= 1.0 - CLOCK_SLACK  # retry_after honoured
    assert len(h.tg.calls_of("sendMessage")) == 1
    assert len(h.tg.calls_of("editMessageText", ok=False)) == 2
    clean_logs()


async def test_server_flood_control_per_chat(h: Harness, clean_logs: Callable[[], None]) -> None:
    h.tg.edit_interval = 0.5  # stricter than the bot's FAST pace: the server says 429
    pieces = [f"q{i} " for i in range(30)]
    h.llm.enqueue(Script(pieces=pieces, delay=0.04))
    chat = h.tg.private_chat(ALICE)
    request = await h.ask(chat, ALICE, "flood")
    await h.reply_text(chat, request, "".join(pieces))
    assert h.tg.calls_of("editMessageText", ok=False)
    clean_logs()


async def test_provider_errors_are_shown_with_partial_text(
    h: Harness, clean_logs: Callable[[], None]
) -> None:
    # The core retries a 500 twice (Retry-After: 0 keeps that quick) before giving up.
    server_error = Script(status=500, headers={"Retry-After": "0"})
    h.llm.enqueue(server_error, server_error, server_error)
    h.llm.enqueue(Script(pieces=["partial ", "answer ", "more"], cut_after=2))
    chat = h.tg.private_chat(ALICE)
    failed = await h.ask(chat, ALICE, "fail")
    hint = errors.ResponseStatusError.user_hint
    message = await h.tg.wait_until(
        lambda: next((m for m in replies(chat, failed) if hint in (m.text or "")), None), WAIT
    )
    assert message.text.startswith("⚠️")
    cut = await h.ask(chat, ALICE, "cut")
    message = await h.tg.wait_until(
        lambda: next((m for m in replies(chat, cut) if "⚠️" in (m.text or "")), None), WAIT
    )
    assert message.text.startswith("partial answer")
    clean_logs()


async def test_stop_mid_stream(h: Harness, clean_logs: Callable[[], None]) -> None:
    h.llm.enqueue(Script(pieces=["first ", "words ", *["never "] * 5], stall_after=2))
    chat = h.tg.private_chat(ALICE)
    request = await h.ask(chat, ALICE, "talk")
    await h.reply_text(chat, request, "first words")
    stop = await h.ask(chat, ALICE, "/stop")
    await h.reply_text(chat, stop, "Stopped.")
    await h.llm.wait_until_no_active_streams()
    assert replies(chat, request)[0].text == "first words"
    again = await h.ask(chat, ALICE, "/stop")
    await h.reply_text(chat, again, "Nothing to stop.")
    next_one = await h.ask(chat, ALICE, "still there?")
    await h.reply_text(chat, next_one, "echo: still there?")
    clean_logs()


async def test_two_users_in_one_group_at_once(h: Harness, clean_logs: Callable[[], None]) -> None:
    alice_script = Script(pieces=["Alice's ", "answer"], hold_after=1)
    h.llm.enqueue(alice_script)
    group = h.tg.group()
    a = await h.ask(group, ALICE, f"{h.mention} question from Alice")
    await h.reply_text(group, a, "Alice's")
    # Bob is answered while Alice's reply is held mid-stream, and his context leaves it out.
    b = await h.ask(group, BOB, f"{h.mention} question from Bob")
    await h.reply_text(group, b, "echo: [Bob] question from Bob")
    alice_script.release.set()
    await h.reply_text(group, a, "Alice's answer")
    contents = [m["content"] for m in h.llm.requests[1].json["messages"][1:]]
    assert contents == ["[Alice] question from Alice", "[Bob] question from Bob"]
    clean_logs()


async def test_access_list(tmp_path: Path, clean_logs: Callable[[], None]) -> None:
    allowed_group = -2001
    async with running_bot(tmp_path, telegram_allowed_ids=[ALICE["id"], allowed_group]) as h:
        alice, bob = h.tg.private_chat(ALICE), h.tg.private_chat(BOB)
        ok = await h.ask(alice, ALICE, "hello")
        await h.reply_text(alice, ok, "echo: hello")
        refused = await h.ask(bob, BOB, "hello")
        await h.reply_text(bob, refused, REFUSAL.format(user_id=BOB["id"], chat_id=BOB["id"]))
        photo = await h.tg.message(bob, BOB, photo=True)
        await h.any_reply(bob, photo)
        group = h.tg.group(allowed_group)
        in_group = await h.ask(group, BOB, "/ask hi")
        await h.reply_text(group, in_group, "echo: [Bob] hi")
        stranger_group = h.tg.group(-3001)
        chatter = await h.ask(stranger_group, BOB, "not for the bot")
        addressed = await h.ask(stranger_group, BOB, "/ask hi")
        await h.reply_text(
            stranger_group, addressed, REFUSAL.format(user_id=BOB["id"], chat_id=-3001)
        )
        assert replies(stranger_group, chatter) == []
        assert len(h.llm.requests) == 2
    clean_logs()


async def test_model_and_system_are_for_group_admins(
    tmp_path: Path, clean_logs: Callable[[], None]
) -> None:
    async with running_bot(tmp_path, admin_ids=[CAROL["id"]]) as h:
        group = h.tg.supergroup()
        h.tg.set_admins(group, [ALICE["id"]])
        show = await h.ask(group, BOB, "/model")
        await h.reply_text(group, show, "Model: fake-model (default)")
        denied = await h.ask(group, BOB, "/model gpt-x")
        await h.reply_text(group, denied, command_texts.ADMINS_ONLY)
        bad = await h.ask(group, ALICE, "/model two words")
        await h.reply_text(group, bad, chat_settings.MODEL_USAGE)
        granted = await h.ask(group, ALICE, "/model fake-model-mini")
        await h.reply_text(group, granted, "Model set to fake-model-mini.")
        question = await h.ask(group, BOB, "/ask which model?")
        await h.reply_text(group, question, "echo: [Bob] which model?")
        assert h.llm.requests[-1].json["model"] == "fake-model-mini"
        denied = await h.ask(group, BOB, "/system be rude")
        await h.reply_text(group, denied, command_texts.ADMINS_ONLY)
        operator = await h.ask(group, CAROL, "/system Answer in French.")
        await h.reply_text(group, operator, "System prompt set.")
        shown = await h.ask(group, BOB, "/system")
        await h.reply_text(group, shown, "System prompt:\nAnswer in French.")
        question = await h.ask(group, BOB, "/ask bonjour?")
        await h.reply_text(group, question, "echo: [Bob] bonjour?")
        assert h.llm.requests[-1].json["messages"][0]["content"] == "Answer in French."
        back = await h.ask(group, ALICE, "/model default")
        await h.reply_text(group, back, "Model back to the default (fake-model).")
        anonymous = await h.tg.message(group, None, "/model fake-model", sender_chat=group)
        await h.reply_text(group, anonymous, "Model set to fake-model.")
        # In a private chat the user configures their own chat.
        mine = h.tg.private_chat(BOB)
        private = await h.ask(mine, BOB, "/model fake-model-mini")
        await h.reply_text(mine, private, "Model set to fake-model-mini.")
    clean_logs()


async def test_bad_input(h: Harness, clean_logs: Callable[[], None]) -> None:
    chat = h.tg.private_chat(ALICE)
    huge = "x" * 10_000
    specials = "<b>not html</b> *not md* _x_ [a](b) `c` && \\ </i>"
    rtl_emoji = "مرحبا שלום 👨‍👩‍👧 🇺🇦 é"
    for text in (huge, specials, rtl_emoji):
        h.llm.enqueue(Script(pieces=["ok"]))
        request = await h.ask(chat, ALICE, text)
        await h.reply_text(chat, request, "ok")
        assert h.llm.requests[-1].json["messages"][-1]["content"] == text
    expected = {
        "": chat_texts.EMPTY_TEXT,  # Telegram never sends these; if it did, no model call
        "   ": chat_texts.EMPTY_TEXT,
        "/nonsense": command_texts.UNKNOWN,
        "/model a b c": chat_settings.MODEL_USAGE,
        "/model": "Model: fake-model (default)",
        "/start": command_texts.START,
        "/help": command_texts.HELP,
        "/ask": chat_texts.ASK_USAGE,
        "/system " + "p" * 5000: chat_settings.SYSTEM_PROMPT_TOO_LONG,
    }
    for text, answer in expected.items():
        request = await h.ask(chat, ALICE, text)
        await h.reply_text(chat, request, answer)
    sticker = await h.tg.message(chat, ALICE, sticker=True)
    await h.reply_text(chat, sticker, UNREADABLE)
    forwarded = await h.ask(chat, ALICE, "forwarded words", forward_from=BOB)
    await h.reply_text(chat, forwarded, "echo: forwarded words")
    edited = await h.ask(chat, ALICE, "before edit")
    await h.reply_text(chat, edited, "echo: before edit")
    await h.tg.edited_message(chat, edited["message_id"], "after edit")
    after = await h.ask(chat, ALICE, "next")
    await h.reply_text(chat, after, "echo: next")
    assert len(replies(chat, edited)) == 1
    assert "edited_message" not in h.tg.allowed_updates
    clean_logs()


async def test_deleted_reply_stops_streaming(h: Harness, clean_logs: Callable[[], None]) -> None:
    # 10 s of stream: ending within the 5 s wait below means the bot gave up on it.
    h.llm.enqueue(Script(pieces=[f"t{i} " for i in range(200)], delay=0.05))
    chat = h.tg.private_chat(ALICE)
    request = await h.ask(chat, ALICE, "delete me")
    first = await h.any_reply(chat, request)
    await h.tg.delete_message(chat, first.message_id)
    await h.llm.wait_until_no_active_streams()
    follow = await h.ask(chat, ALICE, "after delete")
    await h.reply_text(chat, follow, "echo: after delete")
    assert h.tg.calls_of("editMessageText", ok=False)[-1].error.endswith("not found")
    clean_logs()


async def test_blocked_bot_stops_the_reply(h: Harness, clean_logs: Callable[[], None]) -> None:
    h.llm.enqueue(Script(pieces=["b0 ", "b1 ", "b2 "], stall_after=2))
    h.tg.inject_error("sendMessage", ApiError(403, "Forbidden: bot was blocked by the user"))
    chat = h.tg.private_chat(ALICE)
    await h.ask(chat, ALICE, "then blocks the bot")
    await h.tg.wait_calls("sendMessage", ok=False)
    await h.llm.wait_for_requests(1)
    await h.llm.wait_until_no_active_streams()  # the reply was abandoned mid-stream
    assert not chat.bot_messages()
    assert len(h.tg.calls_of("sendMessage", ok=None)) == 1  # no retry, no further sends
    clean_logs()


async def test_shutdown_is_clean(tmp_path: Path, clean_logs: Callable[[], None]) -> None:
    async with running_bot(tmp_path, shutdown_grace_seconds=0) as h:
        h.llm.enqueue(Script(pieces=["partial "], stall_after=1))
        chat = h.tg.private_chat(ALICE)
        request = await h.ask(chat, ALICE, "long")
        await h.reply_text(chat, request, "partial")
    # The bot stopped mid-reply: the stream was abandoned and the message kept its text, with
    # the note that says why it ends there.
    assert h.llm.active_streams == 0
    assert replies(chat, request)[0].text == f"partial\n\n{INTERRUPTED_NOTE}"
    clean_logs()


async def test_group_stickers_addressed_to_the_bot_get_the_unreadable_line(
    h: Harness, clean_logs: Callable[[], None]
) -> None:
    # Photos, voice notes and files are read (tests/test_telegram_media.py); a sticker is not.
    group = h.tg.supergroup()
    first = await h.ask(group, ALICE, f"{h.mention} hello")
    answer = await h.reply_text(group, first, "echo: [Alice] hello")
    sticker_reply = await h.tg.message(group, BOB, sticker=True, reply_to=answer.message_id)
    await h.reply_text(group, sticker_reply, UNREADABLE)
    unaddressed = await h.tg.message(group, BOB, sticker=True)
    unaddressed_photo = await h.tg.message(group, BOB, photo=True, caption="our holiday")
    after = await h.ask(group, BOB, f"{h.mention} still there?")
    await h.reply_text(group, after, "echo: [Bob] still there?")
    assert replies(group, unaddressed) == [] and replies(group, unaddressed_photo) == []
    assert len(h.llm.requests) == 2
    assert h.tg.calls_of("getFile", ok=None) == []  # unaddressed media are never fetched
    clean_logs()


async def test_model_output_cannot_hide_a_mention_in_a_link(
    h: Harness, clean_logs: Callable[[], None]
) -> None:
    text = f"Sure, [click here](tg://user?id={CAROL['id']}) and **[me](TG://user?id=1002)**."
    h.llm.enqueue(Script(pieces=[text]))
    group = h.tg.supergroup()
    request = await h.ask(group, ALICE, f"{h.mention} ping Carol for me")
    message = await h.reply_text(group, request, "Sure, click here and me.")
    assert {e["type"] for e in message.entities} == {"bold"}  # rendered, but links dropped
    clean_logs()


async def test_model_output_mentions_notify_nobody(
    h: Harness, clean_logs: Callable[[], None]
) -> None:
    h.llm.enqueue(Script(pieces=["Ask @carol_smith", " (or mail bob@example.com)."]))
    group = h.tg.supergroup()
    request = await h.ask(group, ALICE, f"{h.mention} who knows?")
    shown = "Ask @\u2060carol_smith (or mail bob@example.com)."
    message = await h.reply_text(group, request, shown)
    assert not [e for e in message.entities if e["type"] in ("mention", "text_mention")]
    clean_logs()


async def test_a_group_upgraded_to_a_supergroup_stops_the_reply(
    h: Harness, clean_logs: Callable[[], None]
) -> None:
    h.llm.enqueue(Script(pieces=["m0 ", "m1 ", "m2 "], stall_after=2))
    upgraded = ApiError(
        400,
        "Bad Request: group chat was upgraded to a supergroup chat",
        {"migrate_to_chat_id": -1009999},
    )
    h.tg.inject_error("sendMessage", upgraded, count=20)
    group = h.tg.group()
    await h.ask(group, ALICE, f"{h.mention} still here?")
    await h.tg.wait_calls("sendMessage", ok=False)
    await h.llm.wait_until_no_active_streams()  # given up, not retried for the whole stream
    assert len(h.tg.calls_of("sendMessage", ok=None)) == 1
    clean_logs()


@pytest.mark.parametrize(
    "refusal",
    [
        "Bad Request: not enough rights to send text messages to the chat",
        "Bad Request: TOPIC_CLOSED",
    ],
)
async def test_a_chat_the_bot_may_not_write_in_stops_the_reply(
    h: Harness, clean_logs: Callable[[], None], refusal: str
) -> None:
    h.llm.enqueue(Script(pieces=["m0 ", "m1 ", "m2 "], stall_after=2))
    h.tg.inject_error("sendMessage", ApiError(400, refusal), count=20)
    group = h.tg.supergroup()
    await h.ask(group, ALICE, f"{h.mention} are you muted?")
    await h.tg.wait_calls("sendMessage", ok=False)
    await h.llm.wait_for_requests(1)
    await h.llm.wait_until_no_active_streams()  # given up, not retried for the whole stream
    assert len(h.tg.calls_of("sendMessage", ok=None)) == 1
    clean_logs()


async def test_a_rejected_token_stops_start_up_with_what_to_do(tmp_path: Path) -> None:
    async with FakeTelegramAPI() as tg:
        settings = Settings(
            _env_file=None,
            telegram_bot_token="123:not-the-real-token",
            telegram_api_base=tg.base_url,
            database_url=f"sqlite:///{tmp_path}/parley.db",
        )
        store = await open_store(settings.database_url)
        service = ConversationService(store, AsyncClient(), settings)
        try:
            with pytest.raises(BotStartupError, match="BotFather") as caught:
                await asyncio.wait_for(TelegramBot(settings, service).run(), WAIT)
            assert "not-the-real-token" not in str(caught.value)
        finally:
            await service.aclose()
            await store.close()


def held(*pieces: str) -> Script:
    """A reply that shows its first piece, then waits for `release`."""
    return Script(pieces=list(pieces), hold_after=1)


async def test_stop_and_reset_in_a_group_act_on_the_callers_replies(
    tmp_path: Path, clean_logs: Callable[[], None]
) -> None:
    async with running_bot(tmp_path) as h:
        group = h.tg.supergroup()
        h.tg.set_admins(group, [CAROL["id"]])
        alice_script = held("Alice's ", "answer")
        h.llm.enqueue(alice_script, held("Bob's ", "answer"), held("Bob again ", "answer"))
        alice = await h.ask(group, ALICE, f"{h.mention} a1")
        await h.reply_text(group, alice, "Alice's")
        bob = await h.ask(group, BOB, f"{h.mention} b1")
        await h.reply_text(group, bob, "Bob's")

        stop = await h.ask(group, BOB, "/stop")  # a member's /stop: their own reply
        await h.reply_text(group, stop, "Stopped.")
        again = await h.ask(group, BOB, "/stop")
        await h.reply_text(group, again, "You have no reply being written.")
        await h.llm.wait_for_active_streams(1, WAIT)  # Bob's closed; Alice's goes on

        bob_again = await h.ask(group, BOB, f"{h.mention} b2")
        await h.reply_text(group, bob_again, "Bob again")
        reset = await h.ask(group, BOB, "/reset")  # stops Bob's, waits for Alice's
        await h.llm.wait_for_active_streams(1, WAIT)
        alice_script.release.set()
        await h.reply_text(group, alice, "Alice's answer")
        report = ResetReport(stopped=("Bob",), waited_for=("Alice",))
        await h.reply_text(group, reset, describe_reset(report))

        h.llm.enqueue(held("Alice's second ", "answer"), held("Bob's second ", "answer"))
        alice = await h.ask(group, ALICE, f"{h.mention} a2")
        await h.reply_text(group, alice, "Alice's second")
        bob = await h.ask(group, BOB, f"{h.mention} b3")
        await h.reply_text(group, bob, "Bob's second")
        stop = await h.ask(group, CAROL, "/stop")  # an admin's: everyone's
        await h.reply_text(group, stop, "Stopped 2 replies.")
        await h.llm.wait_until_no_active_streams(WAIT)
    clean_logs()
