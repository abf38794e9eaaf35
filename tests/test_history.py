"""`parley history export`: JSON keeps every stored field, Markdown reads well, bad asks fail clearly."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bots.config import Settings
from bots.errors import HistoryNotFoundError
from bots.history import export_chats
from core import AsyncClient
from core.conversation import ChatRef, ConversationService
from core.errors import RateLimitError
from storage import StorageUnavailableError, open_store
from tests.cli_support import run_parley
from tests.test_conversation_fakes import ALICE, BOB, ScriptedProvider, collect, echo

NASTY = "'; DROP TABLE chats; -- 🙂 **bold** # heading"


@pytest.fixture
async def settings(tmp_path: Path) -> Settings:
    """A database with two platforms sharing a chat id, two threads, two conversations."""
    settings = Settings(_env_file=None, database_url=f"sqlite:///{tmp_path}/h.db")
    store = await open_store(settings.database_url)
    fail = False

    async def answer(model: str, messages: list[dict[str, Any]]) -> Any:
        if fail:
            yield "half"
            raise RateLimitError("slow down")
        async for piece in echo(model, messages):
            yield piece

    service = ConversationService(store, AsyncClient(provider=ScriptedProvider(answer)), settings)
    group = ChatRef("telegram", "-100")
    await service.set_model(group, "chat-model")
    await collect(service.reply(group, ALICE, "old talk", platform_message_id="11"))
    await service.reset(group)
    await collect(service.reply(group, BOB, NASTY, group=True))
    fail = True
    with pytest.raises(RateLimitError):
        await collect(service.reply(group, ALICE, "and now?"))
    fail = False
    await collect(service.reply(ChatRef("telegram", "-100", "5"), ALICE, "in a topic"))
    await collect(service.reply(ChatRef("discord", "-100"), ALICE, "same id, other platform"))
    await collect(service.reply(ChatRef("discord", "999"), ALICE, "not exported"))
    await service.aclose()
    await store.close()
    return settings


async def test_json_export_has_every_conversation_and_field(settings: Settings) -> None:
    data = json.loads(await export_history(settings, "-100", "telegram", "json"))
    assert data["database"].endswith("h.db")
    main_chat, topic = data["chats"]
    assert (main_chat["platform"], main_chat["thread_id"], main_chat["model"]) == (
        "telegram",
        "",
        "chat-model",
    )
    assert topic["thread_id"] == "5"
    old, current = main_chat["conversations"]
    assert [m["text"] for m in old["messages"]] == ["old talk", "echo: old talk"]
    assert old["messages"][0]["platform_message_ids"] == ["11"]
    assert old["messages"][1]["model"] == "chat-model"
    assert old["messages"][1]["provider"] == "Scripted"
    texts = [(m["role"], m["author_name"], m["text"], m["status"]) for m in current["messages"]]
    assert texts == [
        ("user", "Bob", NASTY, "complete"),
        ("assistant", None, f"echo: [Bob] {NASTY}", "complete"),
        ("user", "Alice", "and now?", "complete"),
        ("assistant", None, "half", "error"),
    ]
    assert current["messages"][3]["error"] == "RateLimitError: slow down"
    assert {"first_token_ms", "total_ms", "total_tokens", "reply_to"} <= set(current["messages"][1])


async def test_without_a_platform_every_platform_with_that_id_is_exported(
    settings: Settings,
) -> None:
    data = json.loads(await export_history(settings, "-100", None, "json"))
    assert [(c["platform"], c["thread_id"]) for c in data["chats"]] == [
        ("discord", ""),
        ("telegram", ""),
        ("telegram", "5"),
    ]


async def test_one_conversation_can_be_picked(settings: Settings) -> None:
    everything = json.loads(await export_history(settings, "-100", "telegram", "json"))
    wanted = everything["chats"][0]["conversations"][0]["id"]
    data = json.loads(
        await export_history(settings, "-100", "telegram", "json", conversation=wanted)
    )
    [chat] = data["chats"]
    assert [c["id"] for c in chat["conversations"]] == [wanted]
    with pytest.raises(HistoryNotFoundError, match="no conversation 12345"):
        await export_history(settings, "-100", "telegram", "json", conversation=12345)


async def test_markdown_export_reads_as_a_transcript(settings: Settings) -> None:
    text = await export_history(settings, "-100", "telegram", "markdown")
    assert text.startswith("# telegram chat -100\n\nModel: chat-model\n")
    assert "# telegram chat -100, thread 5" in text
    assert text.count("## Conversation ") == 3
    assert "**Bob** · " in text and f"\n{NASTY}\n" in text
    assert "**chat-model** · " in text
    assert "· _error: RateLimitError: slow down_" in text


async def test_unknown_chats_formats_and_databases_fail_clearly(
    settings: Settings, tmp_path: Path
) -> None:
    with pytest.raises(HistoryNotFoundError, match=r"No chat '-100' on console in .*h\.db"):
        await export_history(settings, "-100", "console", "json")
    with pytest.raises(ValueError, match="markdown"):
        await export_history(settings, "-100", None, "yaml")
    missing = Settings(_env_file=None, database_url=f"sqlite:///{tmp_path}/typo/h.db")
    with pytest.raises(StorageUnavailableError, match="does not exist"):
        await export_history(missing, "-100", None, "json")
    assert not (tmp_path / "typo").exists()  # a mistyped URL creates nothing


async def test_the_parley_command_prints_the_export(settings: Settings, tmp_path: Path) -> None:
    finished = await run_parley(
        *("history", "export", "--chat", "999", "--format", "json"),
        env={"DATABASE_URL": settings.database_url},
        cwd=tmp_path,
    )
    assert finished.code == 0, finished.err
    data = json.loads(finished.out)
    assert [m["text"] for m in data["chats"][0]["conversations"][0]["messages"]] == [
        "not exported",
        "echo: not exported",
    ]


async def export_history(settings: Settings, *args: Any, **kwargs: Any) -> str:
    """The export's text, as the CLI prints it."""
    return (await export_chats(settings, *args, **kwargs)).text
