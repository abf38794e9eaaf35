"""History across process boundaries: a restart keeps everything, a SIGKILL breaks nothing."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
from pathlib import Path

from core import AsyncClient
from core.config import CoreSettings
from core.conversation import ConversationService
from storage import MessageStatus, Role, open_store
from tests.test_conversation_fakes import ALICE, BOB, ScriptedProvider, chat, collect

PROJECT_ROOT = Path(__file__).resolve().parent.parent
#: Bound on a child process's run; they take well under a second when healthy.
CHILD_TIMEOUT = 60.0
#: Deltas the crashing child streams before it reports in, so a checkpoint exists.
DELTAS_BEFORE_KILL = 50

_CHILD_PRELUDE = """
import asyncio, sys
from core import AsyncClient
from core.config import CoreSettings
from core.conversation import Author, ChatRef, ConversationService
from storage import open_store
from tests.test_conversation_fakes import ScriptedProvider, collect
"""

WRITER = (
    _CHILD_PRELUDE
    + """
async def main(url):
    store = await open_store(url)
    settings = CoreSettings(_env_file=None, default_model="m", system_prompt="SYS")
    service = ConversationService(store, AsyncClient(provider=ScriptedProvider()), settings)
    key = ChatRef("telegram", "-100", "7")
    await service.set_model(key, "chat-model")
    await service.set_system_prompt(key, "Réponds en français 🇫🇷")
    await collect(service.reply(key, Author("1", "Zoë"), "premier 🙂", group=True))
    await service.reset(key)
    for text in ("second", "troisième"):
        await collect(service.reply(key, Author("2", "Bob"), text, group=True))
    await service.aclose()
    await store.close()
    print("WRITTEN", flush=True)

asyncio.run(main(sys.argv[1]))
"""
)

CRASHER = (
    _CHILD_PRELUDE
    + """
async def endless(model, messages):
    number = 0
    while True:
        number += 1
        yield f"word{number} "

async def main(url, deltas_before_report):
    store = await open_store(url)
    client = AsyncClient(provider=ScriptedProvider(endless))
    service = ConversationService(store, client, CoreSettings(_env_file=None), checkpoint_seconds=0)
    # Other chats keep the writer busy, so the kill lands among writes.
    busy = [service.reply(ChatRef("console", f"busy{n}"), Author("b", "B"), "go") for n in range(5)]
    victim = service.reply(ChatRef("console", "victim"), Author("v", "V"), "write forever")
    count = 0
    async for _ in victim:
        count += 1
        if count == deltas_before_report:
            print("STREAMING", victim.message_id, flush=True)

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""
)


def child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}


async def test_history_survives_a_restart(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/parley.db"
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        WRITER,
        url,
        env=child_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(child.communicate(), CHILD_TIMEOUT)
    assert child.returncode == 0, err.decode()
    assert out.decode().strip() == "WRITTEN"

    store = await open_store(url)  # this process never wrote to it
    try:
        key = chat("-100", thread_id="7")
        config = await store.chat_config(key)
        assert (config.model, config.system_prompt) == ("chat-model", "Réponds en français 🇫🇷")
        [record] = await store.find_chats("-100", "telegram")
        old, current = await store.conversations(record.id)
        first = await store.conversation_messages(old.id)
        assert [(m.role, m.author_name, m.text) for m in first] == [
            (Role.USER, "Zoë", "premier 🙂"),
            (Role.ASSISTANT, None, "echo: [Zoë] premier 🙂"),
        ]
        texts = [m.text for m in await store.conversation_messages(current.id)]
        assert texts == ["second", "echo: [Bob] second", "troisième", "echo: [Bob] troisième"]

        # The conversation goes on where it stopped, with the stored settings.
        provider = ScriptedProvider()
        service = ConversationService(
            store, AsyncClient(provider=provider), CoreSettings(_env_file=None)
        )
        await collect(service.reply(key, BOB, "et après ?", group=True))
        assert provider.calls[0].model == "chat-model"
        assert [m["content"] for m in provider.calls[0].messages] == [
            "Réponds en français 🇫🇷",
            "[Bob] second",
            "echo: [Bob] second",
            "[Bob] troisième",
            "echo: [Bob] troisième",
            "[Bob] et après ?",
        ]
    finally:
        await store.close()


async def test_sigkill_mid_reply_leaves_a_consistent_database(tmp_path: Path) -> None:
    path = tmp_path / "parley.db"
    url = f"sqlite:///{path}"
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CRASHER,
        url,
        str(DELTAS_BEFORE_KILL),
        env=child_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        line = await asyncio.wait_for(child.stdout.readline(), CHILD_TIMEOUT)  # type: ignore[union-attr]
        assert line.startswith(b"STREAMING"), (await child.stderr.read()).decode()  # type: ignore[union-attr]
        victim_id = int(line.split()[1])
    finally:
        child.send_signal(signal.SIGKILL)
        await asyncio.wait_for(child.wait(), CHILD_TIMEOUT)
    assert child.returncode == -signal.SIGKILL

    with sqlite3.connect(path) as db:  # SQLite's own recovery, then its own checks
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []
    db.close()

    store = await open_store(url)
    try:
        service = ConversationService(
            store, AsyncClient(provider=ScriptedProvider()), CoreSettings(_env_file=None)
        )
        assert await service.recover() >= 1
        victim_chat = chat("victim", platform="console")
        user, reply = await service.history(victim_chat)
        assert (user.text, user.status) == ("write forever", MessageStatus.COMPLETE)
        assert reply.id == victim_id
        assert reply.status is MessageStatus.INTERRUPTED
        # Checkpoints ran after every delta, so at least the deltas before the report are kept.
        expected = "".join(f"word{n} " for n in range(1, DELTAS_BEFORE_KILL))
        assert reply.text.startswith(expected)
        for number in range(5):
            for message in await service.history(chat(f"busy{number}", platform="console")):
                assert message.status in (MessageStatus.COMPLETE, MessageStatus.INTERRUPTED)
        # The chat works again after the crash.
        assert await collect(service.reply(victim_chat, ALICE, "still there?")) == (
            "echo: still there?"
        )
    finally:
        await store.close()
