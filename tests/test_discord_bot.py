"""Parley's Discord bot end to end: discord.py against the fake Discord, the fake LLM as model.

Each test starts the real `DiscordBot` (real SQLite store, real core client over HTTP) and
drives it with gateway events, then checks what the fake Discord and the fake model recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bots.config import Settings
from bots.discord import DiscordBot
from bots.discord.chat import EMPTY_MENTION, STICKERS_ONLY
from bots.discord.commands import ADMINS_ONLY
from bots.discord.surface import CHANNEL_LIMITS
from bots.errors import BotStartupError
from bots.splitting import join_parts
from bots.streaming import WARNING_PREFIX
from bots.write_budget import WriteLimits
from core.chat_settings import MODEL_USAGE
from core.client import AsyncClient
from core.conversation import (
    INTERRUPTED_NOTE,
    ChatRef,
    ConversationService,
    ResetReport,
    describe_reset,
)
from core.errors import MissingAuthError
from storage import MessageStatus, Role, open_store
from tests.fakes.discord_api import (
    ADMIN_ROLE_ID,
    ALICE_ID,
    BOB_ID,
    BOT_ID,
    BOT_ROLE_ID,
    GENERAL_ID,
    OTHER_BOT_ID,
    RANDOM_ID,
    READONLY_ID,
    THREAD_ID,
    FakeDiscord,
    Message,
)
from tests.fakes.llm_server import FakeLLMServer, Script

WAIT = 10.0
MESSAGES = r"/channels/\d+/messages"
EDITS = r"/channels/\d+/messages/\d+"
MENTION = f"<@{BOT_ID}>"
#: Discord's channel bucket (5 writes per 5 s) on a clock five times faster, to keep the suite
#: quick; the real limits are exercised in tests/test_group_concurrency.py and bench/.
FAST_CHANNEL = WriteLimits(CHANNEL_LIMITS.limit, CHANNEL_LIMITS.window / 5, CHANNEL_LIMITS.reserve)


@dataclass
class Harness:
    fake: FakeDiscord
    llm: FakeLLMServer
    service: ConversationService
    task: asyncio.Task[None]  # the bot's run()

    async def model_request(self, number: int) -> list[dict[str, Any]]:
        """The messages of the `number`-th (1-based) request the model received."""
        requests = await self.llm.wait_for_requests(number, timeout=WAIT)
        return requests[number - 1].json["messages"]

    async def answer(self, channel: int, final: str) -> list[Message]:
        """Wait until the bot's latest message in `channel` reads `final`; return all of them."""

        def done() -> list[Message] | None:
            sent = self.fake.bot_messages(channel)
            return sent if sent and sent[-1].content == final else None

        return await self.fake.wait_for(done, WAIT)


@contextlib.asynccontextmanager
async def _bot(
    tmp_path: Path,
    fake: FakeDiscord,
    *,
    channel_limits: WriteLimits = FAST_CHANNEL,
    llm_settings: Callable[[FakeLLMServer], dict[str, Any]] = lambda llm: {},
    **overrides: Any,
) -> AsyncIterator[Harness]:
    """`llm_settings`: settings naming the fake model's address (TRANSCRIBE_BASE_URL)."""
    async with FakeLLMServer() as llm:
        settings = Settings(
            _env_file=None,
            discord_bot_token=fake.token,
            discord_api_base=fake.api_base,
            discord_gateway_url=fake.gateway_url,
            database_url=f"sqlite:///{tmp_path / 'parley.db'}",
            **{"default_model": "fake-model", **llm_settings(llm), **overrides},
        )
        store = await open_store(settings.database_url)
        service = ConversationService(store, AsyncClient(base_url=llm.base_url), settings)
        task = asyncio.create_task(
            DiscordBot(settings, service, channel_limits=channel_limits).run()
        )
        try:
            connected = asyncio.create_task(fake.wait_connected())
            await asyncio.wait({task, connected}, return_when=asyncio.FIRST_COMPLETED)
            if task.done():  # start-up failed: show why rather than a timeout
                connected.cancel()
                task.result()
            await connected
            yield Harness(fake, llm, service, task)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, WAIT)
            await service.aclose()
            await store.close()


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as server:
        yield server


@pytest.fixture
async def bot(tmp_path: Path, fake: FakeDiscord) -> AsyncIterator[Harness]:
    async with _bot(tmp_path, fake) as harness:
        yield harness


def _allowed_mentions_sent(fake: FakeDiscord) -> list[dict]:
    return [c.body["allowed_mentions"] for c in fake.calls if c.body and "content" in c.body]


async def test_mention_is_answered_with_one_message_then_edits(bot: Harness) -> None:
    pieces = ["The ", "answer ", "is ", "forty", "-two", "."]
    bot.llm.enqueue(Script(pieces=pieces, delay=0.35))
    question = await bot.fake.push_message(f"{MENTION} what is it?", author=ALICE_ID)

    (answer,) = await bot.answer(GENERAL_ID, "".join(pieces))

    assert await bot.model_request(1) == [
        {"role": "system", "content": Settings(_env_file=None).system_prompt},
        {"role": "user", "content": "[Alice] what is it?"},
    ]
    typing, *_ = bot.fake.calls_to("POST", rf"/channels/{GENERAL_ID}/typing")
    (post,) = bot.fake.calls_to("POST", MESSAGES)
    edits = bot.fake.calls_to("PATCH", EDITS)
    assert typing.at <= post.at and edits
    assert post.body["content"] != answer.content  # streamed: the first text was partial
    assert answer.reference_id == question.id
    # Ordinary edits keep the channel's pace (arrival times jitter a little around it); the
    # final text may use the writes the budget keeps in reserve, but the channel's bucket holds.
    times = [post.at] + [edit.at for edit in edits]
    paced = times[:-1]
    assert all(b - a >= FAST_CHANNEL.pace - 0.05 for a, b in itertools.pairwise(paced))
    window = FAST_CHANNEL.window - 0.05
    assert all(sum(t <= at < t + window for at in times) <= FAST_CHANNEL.limit for t in times)


async def test_long_reply_is_split_into_parts_that_join_back(bot: Harness) -> None:
    code = "```python\n" + "".join(f"value_{i} = {i} * 2\n" for i in range(120)) + "```\n"
    prose = "".join(f"Paragraph {i} says something useful. " * 6 + "\n\n" for i in range(12))
    text = prose[:1500] + "\n\n" + code + "\n" + prose
    assert len(text) > 5000
    bot.llm.enqueue(Script(pieces=re.findall(r".{1,80}", text, re.DOTALL)))

    await bot.fake.push_message(f"{MENTION} long please")
    await bot.fake.wait_for(
        lambda: join_parts([m.content for m in bot.fake.bot_messages()]) == text
    )

    parts = bot.fake.bot_messages(GENERAL_ID)
    assert len(parts) >= 3
    assert all(len(part.content) <= 2000 for part in parts)
    assert all(part.content.count("```") % 2 == 0 for part in parts)  # fences closed...
    assert any(part.content.startswith("```python\n") for part in parts[1:])  # ...and reopened
    assert [p.reference_id for p in parts[1:]] == [p.id for p in parts[:-1]]


async def test_dm_is_answered_without_group_names(bot: Harness) -> None:
    await bot.fake.push_dm("hello in private")
    dm = bot.fake.dm_channel_id(BOB_ID)
    await bot.answer(dm, "echo: hello in private")
    assert (await bot.model_request(1))[-1] == {"role": "user", "content": "hello in private"}

    reset = await bot.fake.push_interaction("reset", channel=dm)
    assert "new conversation" in await bot.fake.wait_answered(reset)
    await bot.fake.push_dm("fresh start")
    await bot.answer(dm, "echo: fresh start")
    assert [m["content"] for m in (await bot.model_request(2))[1:]] == ["fresh start"]


async def test_reply_to_the_bot_is_answered_and_other_messages_are_not(bot: Harness) -> None:
    await bot.fake.push_message(f"{MENTION} first")
    (first,) = await bot.answer(GENERAL_ID, "echo: [Bob] first")

    await bot.fake.push_message("no mention here")
    await bot.fake.push_message(f"{MENTION} from a bot", author=OTHER_BOT_ID)
    await bot.fake.push_message(f"@everyone hello <@{ALICE_ID}>")
    await bot.fake.push_message("answering you", reply_to=first.id, ping_reply=False)
    await bot.answer(GENERAL_ID, "echo: [Bob] answering you")
    await bot.fake.push_message(f"<@&{BOT_ROLE_ID}> by role")  # the bot's own managed role
    await bot.answer(GENERAL_ID, "echo: [Bob] by role")

    assert len(bot.llm.requests) == 3  # the three messages before the reply were ignored
    assert (await bot.model_request(2))[-1]["content"] == "[Bob] answering you"


async def test_history_is_per_channel_and_thread_and_reset_starts_over(bot: Harness) -> None:
    await bot.fake.push_message(f"{MENTION} my name is Bob")
    await bot.answer(GENERAL_ID, "echo: [Bob] my name is Bob")
    await bot.fake.push_message(f"{MENTION} in random", channel=RANDOM_ID)
    await bot.answer(RANDOM_ID, "echo: [Bob] in random")
    await bot.fake.push_message(f"{MENTION} in the thread", channel=THREAD_ID)
    await bot.answer(THREAD_ID, "echo: [Bob] in the thread")
    await bot.fake.push_message(f"{MENTION} who am I?")
    await bot.answer(GENERAL_ID, "echo: [Bob] who am I?")

    assert [m["content"] for m in (await bot.model_request(2))[1:]] == ["[Bob] in random"]
    assert [m["content"] for m in (await bot.model_request(3))[1:]] == ["[Bob] in the thread"]
    assert [m["content"] for m in (await bot.model_request(4))[1:]] == [
        "[Bob] my name is Bob",
        "echo: [Bob] my name is Bob",
        "[Bob] who am I?",
    ]
    thread_history = await bot.service.history(ChatRef("discord", str(GENERAL_ID), str(THREAD_ID)))
    assert [m.text for m in thread_history] == ["in the thread", "echo: [Bob] in the thread"]

    reset = await bot.fake.push_interaction("reset")
    assert "new conversation" in await bot.fake.wait_answered(reset)
    await bot.fake.push_message(f"{MENTION} again")
    await bot.answer(GENERAL_ID, "echo: [Bob] again")
    assert [m["content"] for m in (await bot.model_request(5))[1:]] == ["[Bob] again"]


async def test_rate_limited_edits_are_waited_out(bot: Harness) -> None:
    pieces = [f"word{i} " for i in range(8)]
    bot.fake.rate_limit("PATCH", EDITS, retry_after=0.6, times=2)
    bot.llm.enqueue(Script(pieces=pieces, delay=0.3))

    await bot.fake.push_message(f"{MENTION} go")
    await bot.answer(GENERAL_ID, "".join(pieces))

    edits = bot.fake.calls_to("PATCH", EDITS)
    assert [c.status for c in edits[:3]] == [429, 429, 200]
    assert edits[1].at - edits[0].at >= 0.6


async def test_model_output_pings_nobody(bot: Harness) -> None:
    loud = f"@everyone @here <@{ALICE_ID}> <@&{ADMIN_ROLE_ID}> look!"
    bot.llm.enqueue(Script(pieces=[loud[:20], loud[20:]], delay=1.2))

    await bot.fake.push_message(f"{MENTION} ping everyone", author=ALICE_ID)
    (answer,) = await bot.answer(GENERAL_ID, loud)

    assert not answer.pings
    payloads = _allowed_mentions_sent(bot.fake)
    assert len(payloads) >= 2  # the send and at least one edit
    for allowed in payloads:
        assert allowed["parse"] == [] and not allowed.get("replied_user")
        assert not allowed.get("users") and not allowed.get("roles")


async def test_provider_failure_is_shown_as_a_short_error(bot: Harness) -> None:
    bot.llm.enqueue(Script(status=401, error_message="bad key sk-secret"))
    await bot.fake.push_message(f"{MENTION} hello")

    def failed() -> Message | None:
        sent = bot.fake.bot_messages(GENERAL_ID)
        return sent[-1] if sent and WARNING_PREFIX in sent[-1].content else None

    message = await bot.fake.wait_for(failed)
    assert message.content == WARNING_PREFIX + MissingAuthError.user_hint


async def test_message_deleted_while_streaming_stops_and_keeps_the_text(bot: Harness) -> None:
    bot.llm.enqueue(Script(pieces=["kept part. ", *[f"more{i} " for i in range(20)]], delay=0.5))
    await bot.fake.push_message(f"{MENTION} talk")
    (streaming,) = await bot.fake.wait_for(lambda: bot.fake.bot_messages(GENERAL_ID))
    await bot.fake.delete_message(streaming.id)

    gone = await bot.fake.wait_for(lambda: [c for c in bot.fake.calls if c.status == 404])
    await bot.llm.wait_until_no_active_streams(timeout=WAIT)
    await bot.fake.push_message(f"{MENTION} next")  # queued behind the interrupted reply
    await bot.answer(GENERAL_ID, "echo: [Bob] next")

    assert len(gone) == 1 and len(bot.fake.calls_to("POST", MESSAGES)) == 2
    history = await bot.service.history(ChatRef("discord", str(GENERAL_ID)))
    interrupted = history[1]
    assert interrupted.role is Role.ASSISTANT and interrupted.status is MessageStatus.INTERRUPTED
    assert interrupted.text.startswith("kept part. ") and "more19" not in interrupted.text


async def test_stop_command_ends_the_reply_in_flight(bot: Harness) -> None:
    bot.llm.enqueue(Script(pieces=["partial ", *[f"w{i} " for i in range(30)]], delay=0.4))
    await bot.fake.push_message(f"{MENTION} talk a lot")
    await bot.fake.wait_for(lambda: bot.fake.bot_messages(GENERAL_ID))

    stop = await bot.fake.push_interaction("stop")
    assert await bot.fake.wait_answered(stop) == "Stopped."
    history = await bot.service.history(ChatRef("discord", str(GENERAL_ID)))
    assert history[-1].status is MessageStatus.INTERRUPTED
    assert "w29" not in history[-1].text


async def test_cancelling_the_bot_stops_replies_and_disconnects(
    tmp_path: Path, fake: FakeDiscord
) -> None:
    async with _bot(tmp_path, fake, shutdown_grace_seconds=0) as bot:
        bot.llm.enqueue(Script(pieces=["so far ", *[f"w{i} " for i in range(30)]], delay=0.4))
        await bot.fake.push_message(f"{MENTION} talk a lot")
        await bot.fake.wait_for(lambda: bot.fake.bot_messages(GENERAL_ID))

        bot.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(bot.task, WAIT)

        assert bot.task.cancelled()
        await bot.fake.wait_for(lambda: not bot.fake.connected)
        reply = (await bot.service.history(ChatRef("discord", str(GENERAL_ID))))[-1]
        assert reply.status is MessageStatus.INTERRUPTED and reply.text.startswith("so far ")
        shown = bot.fake.bot_messages(GENERAL_ID)[-1].content
        assert "w29" not in shown and shown.endswith(f"\n\n{INTERRUPTED_NOTE}")


async def test_model_and_system_need_manage_server_or_admin_ids(bot: Harness) -> None:
    shown = await bot.fake.push_interaction("model", user=BOB_ID)
    assert await bot.fake.wait_answered(shown) == "Model: fake-model (default)"
    refused = await bot.fake.push_interaction("model", {"name": "fake-model-mini"}, user=BOB_ID)
    assert await bot.fake.wait_answered(refused) == ADMINS_ONLY
    assert refused.callback is not None and refused.callback["data"]["flags"] & 64  # ephemeral

    allowed = await bot.fake.push_interaction("model", {"name": "fake-model-mini"}, user=ALICE_ID)
    assert "fake-model-mini" in await bot.fake.wait_answered(allowed)
    system = await bot.fake.push_interaction("system", {"prompt": "Be brief."}, user=ALICE_ID)
    assert await bot.fake.wait_answered(system) == "System prompt set."

    await bot.fake.push_message(f"{MENTION} hi")
    await bot.answer(GENERAL_ID, "echo: [Bob] hi")
    request = (await bot.llm.wait_for_requests(1, timeout=WAIT))[0].json
    assert request["model"] == "fake-model-mini"
    assert request["messages"][0] == {"role": "system", "content": "Be brief."}


async def test_admin_ids_may_change_settings_without_manage_server(
    tmp_path: Path, fake: FakeDiscord
) -> None:
    async with _bot(tmp_path, fake, admin_ids=[BOB_ID]):
        changed = await fake.push_interaction("model", {"name": "other"}, user=BOB_ID)
        assert await fake.wait_answered(changed) == "Model set to other."
        back = await fake.push_interaction("model", {"name": "Default"}, user=BOB_ID)
        assert await fake.wait_answered(back) == "Model back to the default (fake-model)."
        refused = await fake.push_interaction("model", {"name": "two words"}, user=BOB_ID)
        assert await fake.wait_answered(refused) == MODEL_USAGE
        blank = await fake.push_interaction("model", {"name": " "}, user=BOB_ID)
        assert await fake.wait_answered(blank) == "Model: fake-model (default)"


async def test_allowed_ids_limit_who_is_answered(tmp_path: Path, fake: FakeDiscord) -> None:
    async with _bot(tmp_path, fake, discord_allowed_ids=[ALICE_ID, RANDOM_ID]) as bot:
        await fake.push_message(f"{MENTION} bob in general")  # neither Bob nor #general listed
        await fake.push_message(f"{MENTION} bob in random", channel=RANDOM_ID)
        await bot.answer(RANDOM_ID, "echo: [Bob] bob in random")
        await fake.push_message(f"{MENTION} alice in general", author=ALICE_ID)
        await bot.answer(GENERAL_ID, "echo: [Alice] alice in general")
        assert len(bot.llm.requests) == 2

        denied = await fake.push_interaction("reset", user=BOB_ID)
        assert "not allowed" in await fake.wait_answered(denied)


async def test_messages_with_nothing_to_read_get_a_short_answer(bot: Harness) -> None:
    await bot.fake.push_dm("", sticker_items=[{"id": "7", "name": "wave", "format_type": 1}])
    await bot.answer(bot.fake.dm_channel_id(BOB_ID), STICKERS_ONLY)
    await bot.fake.push_message(
        MENTION, sticker_items=[{"id": "7", "name": "wave", "format_type": 1}]
    )
    await bot.answer(GENERAL_ID, STICKERS_ONLY)
    await bot.fake.push_message(f"  {MENTION}  ")
    await bot.answer(GENERAL_ID, EMPTY_MENTION)
    assert not bot.llm.requests


async def test_long_messages_and_mentions_of_others_reach_the_model_readably(bot: Harness) -> None:
    long_text = "x" * 4000
    await bot.fake.push_message(f"{MENTION} {long_text}")
    await bot.fake.wait_for(lambda: len(bot.llm.requests) == 1)
    await bot.fake.push_message(
        f"{MENTION} ask <@{ALICE_ID}> and <@&{ADMIN_ROLE_ID}> in <#{RANDOM_ID}>"
    )
    # Bob's second question waits for his first answer, showing the queued line meanwhile, so
    # its message may be older than the first answer's last part: look for it, not the newest.
    final = "echo: [Bob] ask @Alice and @admin in #random"
    await bot.fake.wait_for(
        lambda: any(m.content == final for m in bot.fake.bot_messages(GENERAL_ID)), WAIT
    )

    assert (await bot.model_request(1))[-1]["content"] == f"[Bob] {long_text}"


class _Warnings(logging.Handler):
    """Collects the Discord adapter's warnings; `wait_for` wakes on each new one."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []
        self._changed = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
        self._changed.set()

    async def wait_for(self, predicate: Callable[[list[str]], bool]) -> None:
        async with asyncio.timeout(WAIT):
            while not predicate(self.messages):
                self._changed.clear()
                await self._changed.wait()


async def test_channels_the_bot_cannot_write_in_are_logged_once(bot: Harness) -> None:
    warnings = _Warnings()
    logger = logging.getLogger("bots.discord")
    logger.addHandler(warnings)
    bot.fake.closed_dms.add(ALICE_ID)
    dm = bot.fake.dm_channel_id(ALICE_ID)
    try:
        for _ in range(2):
            await bot.fake.push_message(f"{MENTION} hello?", channel=READONLY_ID)
            await bot.fake.push_dm("are you there?", author=ALICE_ID)
        await warnings.wait_for(lambda seen: any(str(dm) in m for m in seen))
        await bot.fake.wait_for(
            lambda: len(bot.fake.calls_to("POST", rf"/channels/{dm}/messages")) == 2
        )
        await bot.fake.push_message(f"{MENTION} still alive?")
        await bot.answer(GENERAL_ID, "echo: [Bob] still alive?")
    finally:
        logger.removeHandler(warnings)

    assert not bot.fake.calls_to("POST", rf"/channels/{READONLY_ID}/messages")
    assert all(c.status == 403 for c in bot.fake.calls_to("POST", rf"/channels/{dm}/messages"))
    refusals = [m for m in warnings.messages if "cannot answer" in m]
    assert len(refusals) == 2
    assert str(READONLY_ID) in refusals[0] and "Cannot send messages to this user" in refusals[1]


async def _start_up_failure(fake: FakeDiscord, token: str) -> str:
    """Run a bot that Discord refuses; return the message it stops with."""
    settings = Settings(
        _env_file=None,
        discord_bot_token=token,
        discord_api_base=fake.api_base,
        discord_gateway_url=fake.gateway_url,
    )
    service = ConversationService(None, None, settings)  # type: ignore[arg-type]  # never reached
    with pytest.raises(BotStartupError) as failure:
        await asyncio.wait_for(DiscordBot(settings, service).run(), WAIT)
    return str(failure.value)


async def test_missing_message_content_intent_stops_start_up() -> None:
    async with FakeDiscord(enabled_intents=()) as fake:
        message = await _start_up_failure(fake, fake.token)
    assert "Developer Portal" in message and "Bot -> Privileged Gateway Intents" in message
    assert "Message Content Intent" in message
    assert fake.gateway_closes == [4014]


async def test_a_rejected_token_stops_start_up(fake: FakeDiscord) -> None:
    message = await _start_up_failure(fake, "not-the-token")
    assert "DISCORD_BOT_TOKEN" in message and "not-the-token" not in message


def held(*pieces: str) -> Script:
    """A reply that shows its first piece, then waits for `release`."""
    return Script(pieces=list(pieces), hold_after=1)


async def test_stop_and_reset_in_a_channel_act_on_the_callers_replies(
    bot: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    resetting = asyncio.Event()
    reset_replies = bot.service.reset

    async def reset_seen(*args: Any) -> Any:
        resetting.set()  # the reset takes stock of the replies in flight before it yields
        return await reset_replies(*args)

    monkeypatch.setattr(bot.service, "reset", reset_seen)

    def showing(text: str) -> Callable[[], bool]:
        return lambda: any(m.content.startswith(text) for m in bot.fake.bot_messages(GENERAL_ID))

    alice_script = held("Alice's ", "answer")
    bot.llm.enqueue(alice_script, held("Bob's ", "answer"))
    await bot.fake.push_message(f"{MENTION} a1", author=ALICE_ID)
    await bot.fake.wait_for(showing("Alice's"), WAIT)
    await bot.fake.push_message(f"{MENTION} b1")
    await bot.fake.wait_for(showing("Bob's"), WAIT)

    stop = await bot.fake.push_interaction("stop")  # Bob, a member: his own reply
    assert await bot.fake.wait_answered(stop) == "Stopped."
    await bot.llm.wait_for_active_streams(1, WAIT)  # Bob's closed, Alice's goes on
    again = await bot.fake.push_interaction("stop")
    assert await bot.fake.wait_answered(again) == "You have no reply being written."
    assert again.callback is not None and again.callback["data"]["flags"] & 64  # ephemeral

    reset = await bot.fake.push_interaction("reset")  # Bob's: waits for Alice's reply
    await asyncio.wait_for(resetting.wait(), WAIT)
    # Acknowledged while it waits: Discord forgets a command not answered within 3 s.
    await bot.fake.wait_for(lambda: reset.callback, WAIT)
    assert reset.callback is not None and reset.callback["type"] == 5  # "thinking…"
    alice_script.release.set()
    await bot.fake.wait_for(showing("Alice's answer"), WAIT)
    assert await bot.fake.wait_answered(reset) == describe_reset(ResetReport(waited_for=("Alice",)))

    bot.llm.enqueue(held("Alice again ", "answer"), held("Bob again ", "answer"))
    await bot.fake.push_message(f"{MENTION} a2", author=ALICE_ID)
    await bot.fake.wait_for(showing("Alice again"), WAIT)
    await bot.fake.push_message(f"{MENTION} b2")
    await bot.fake.wait_for(showing("Bob again"), WAIT)
    stop = await bot.fake.push_interaction("stop", user=ALICE_ID)  # Manage Server: everyone's
    assert await bot.fake.wait_answered(stop) == "Stopped 2 replies."
    await bot.llm.wait_until_no_active_streams(WAIT)
