"""What the replica tests and `bench.replicas` share: `parley run` replicas behind the fake's
round-robin webhooks, the load (chats of people writing several messages quickly) and the
checks that every message was answered exactly once, in order, per chat."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import AsyncIterator

from tests.fakes.llm_server import ECHO_PREFIX, FakeLLMServer
from tests.fakes.telegram_api import FakeChat, FakeTelegramAPI, user
from tests.run_support import Child, free_port, parley_run

PATH = "/telegram/webhook"
SECRET = "replicas_secret"
#: The first user id of the load's people (each writes in a private chat of their own).
FIRST_USER = 50_000
#: Seconds a replica may take to come up.
START_WAIT = 45.0


def replica_env(
    tg: FakeTelegramAPI, llm: FakeLLMServer, database: str, port: int, lease: float | None
) -> dict[str, str]:
    """A replica against the fakes: Telegram by webhook on `port`, the shared `database`;
    `lease`: a short `PARLEY_LEASE_SECONDS` (None: the default)."""
    env = {
        "STREAM_MODE": "edit",
        "TELEGRAM_BOT_TOKEN": tg.token,
        "TELEGRAM_API_BASE": tg.base_url,
        "OPENAI_BASE_URL": llm.base_url,
        "DEFAULT_MODEL": "fake-model",
        "DATABASE_URL": database,
        "TELEGRAM_WEBHOOK_URL": f"http://127.0.0.1:{port}{PATH}",
        "TELEGRAM_WEBHOOK_SECRET": SECRET,
        "WEBHOOK_LISTEN": f"127.0.0.1:{port}",
    }
    if lease is not None:
        env["PARLEY_LEASE_SECONDS"] = str(lease)
    return env


@contextlib.asynccontextmanager
async def replicas(
    count: int,
    tg: FakeTelegramAPI,
    llm: FakeLLMServer,
    database: str,
    *,
    lease: float | None = None,
) -> AsyncIterator[list[Child]]:
    """`count` replicas up, the fake delivering to them in turn, a tenth of updates twice."""
    ports = [free_port() for _ in range(count)]
    async with contextlib.AsyncExitStack() as stack:
        children = [
            await stack.enter_async_context(parley_run(replica_env(tg, llm, database, port, lease)))
            for port in ports
        ]
        await tg.wait_calls("setWebhook", count, timeout=START_WAIT)
        for child in children:
            await child.wait_line("Telegram: taking webhook updates")
        tg.webhooks.deliver_to = [f"http://127.0.0.1:{port}{PATH}" for port in ports]
        tg.webhooks.duplicate_fraction = 0.1
        yield children


def question(chat: int, n: int) -> str:
    return f"chat {chat} message {n}"


async def send_load(tg: FakeTelegramAPI, chats: int, messages: int) -> list[FakeChat]:
    """`chats` people each writing `messages` messages in their private chat, all queued at
    once (the fake delivers each chat's updates one at a time, in order)."""
    opened = []
    for c in range(chats):
        person = user(FIRST_USER + c, f"P{c}")
        chat = tg.private_chat(person)
        opened.append(chat)
        for n in range(messages):
            await tg.message(chat, person, question(c, n))
    return opened


def answers(chat: FakeChat) -> dict[int, list[str | None]]:
    """The bot's messages in the chat by the user message each replies to. A queued reply
    shows a placeholder at once, so the bot's messages are created out of order: the order of
    answering is read from the model's requests (`assert_once_in_order`)."""
    found: dict[int, list[str | None]] = {}
    for message in chat.bot_messages():
        if message.reply_to is not None:
            found.setdefault(message.reply_to, []).append(message.text)
    return found


def _final(texts: list[str | None]) -> bool:
    return len(texts) == 1 and (texts[0] or "").startswith(ECHO_PREFIX)


def all_answered(chats: list[FakeChat], messages: int) -> bool:
    """Every user message has its answer, whole (the fake model's echo)."""
    for chat in chats:
        got = answers(chat)
        mine = [m for m in chat.messages.values() if m.text and m.text.startswith("chat ")]
        if len(mine) < messages or not all(_final(got.get(m.message_id, [])) for m in mine):
            return False
        if not all(got[m.message_id] == [f"{ECHO_PREFIX}{m.text}"] for m in mine):
            return False
    return True


def assert_once_in_order(llm: FakeLLMServer, chats: list[FakeChat], messages: int) -> None:
    """The model was asked each question once, each chat's in the order they were written,
    and the last question of each chat came with the chat's whole history in that order:
    stored in arrival order, answered one after the other."""
    asked = [question_of(request.json) for request in llm.requests]
    counts = Counter(asked)
    for c in range(len(chats)):
        order = [question(c, n) for n in range(messages)]
        assert [counts[q] for q in order] == [1] * messages, (c, [counts[q] for q in order])
        assert [q for q in asked if q in order] == order, c
        last = next(r.json for r in llm.requests if question_of(r.json) == order[-1])
        history = [m["content"] for m in last["messages"] if m["role"] != "system"]
        expected: list[str] = []
        for q in order[:-1]:
            expected += [q, f"{ECHO_PREFIX}{q}"]
        assert history == [*expected, order[-1]], c


def question_of(body: object) -> str | None:
    """The question a model request asks: its last message's text."""
    if not isinstance(body, dict):
        return None
    messages = body.get("messages") or []
    last = messages[-1] if messages else {}
    content = last.get("content")
    return content if isinstance(content, str) else None
