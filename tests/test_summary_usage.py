"""The summary model's calls in the usage ledger (`SUMMARY_MODEL`): charged to the user and chat
whose reply needed the summary, beside the reply's own row, with the provider's token counts or
the estimate; seen by `parley usage` and `/usage`. Over real HTTP to the fake LLM server, on a
real SQLite store, and through the real Telegram bot against the fake Bot API."""

from __future__ import annotations

import json
import logging
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from core.client import estimate_usage
from core.content import content_chars
from core.usage import UsageKey
from storage import Store
from tests.cli_support import run_parley
from tests.fakes.llm_server import FakeLLMServer, Script
from tests.test_context_window import BIG, ask, service_for, summary_requests
from tests.test_telegram_bot import ALICE as TG_ALICE
from tests.test_telegram_bot import running_bot

REPLY_USAGE = {"prompt_tokens": 310, "completion_tokens": 1}
SUMMARY_USAGE = {"prompt_tokens": 321, "completion_tokens": 9}


def ledger(db: Path) -> list[tuple[Any, ...]]:
    """(kind, model, user, chat, prompt, completion, estimated, message) of every row, in order."""
    with sqlite3.connect(db) as connection:
        return connection.execute(
            "SELECT kind, model, user_id, chat_id, prompt_tokens, completion_tokens, estimated,"
            " message FROM usage ORDER BY id"
        ).fetchall()


def reply_ids(db: Path) -> list[int]:
    with sqlite3.connect(db) as connection:
        rows = connection.execute("SELECT id FROM messages WHERE role = 'assistant' ORDER BY id")
        return [row[0] for row in rows]


@pytest.fixture
async def llm() -> Any:
    async with FakeLLMServer() as server:
        yield server


async def test_the_summary_is_charged_beside_the_reply_that_needed_it(
    store: Store, llm: FakeLLMServer, tmp_path: Path
) -> None:
    service = service_for(store, llm, tmp_path, summary_model="summ-model")
    llm.enqueue(
        Script(pieces=["ok"], usage=REPLY_USAGE),
        Script(pieces=["Alice sent a long x."], usage=SUMMARY_USAGE),
        Script(pieces=["ok"], usage=REPLY_USAGE),
    )
    await ask(service, BIG)
    _, cut = await ask(service, BIG + " again")
    await service.aclose()
    assert cut and len(summary_requests(llm)) == 1
    db = tmp_path / "history.db"
    first, second = reply_ids(db)
    assert ledger(db) == [
        ("chat", "tiny-model", "100", "1", 310, 1, 0, first),
        ("chat", "summ-model", "100", "1", 321, 9, 0, second),  # the reply it was made for
        ("chat", "tiny-model", "100", "1", 310, 1, 0, second),
    ]
    user = UsageKey.user("telegram", "100", "day")
    totals = await store.usage_totals([user], datetime.now(UTC))
    assert totals[user].tokens == 2 * 311 + 330  # what budgets check: the summary included

    report = await run_parley(
        "usage",
        "--by",
        "model",
        "--format",
        "json",
        env={"DATABASE_URL": f"sqlite:///{db}"},
        cwd=tmp_path,
    )
    assert report.code == 0, report.err
    rows = {row["key"]: row for row in json.loads(report.out)}
    assert rows["summ-model"]["calls"] == 1
    assert rows["summ-model"]["prompt_tokens"] + rows["summ-model"]["completion_tokens"] == 330
    assert rows["tiny-model"]["calls"] == 2


async def test_a_summary_without_usage_is_charged_the_estimate(
    store: Store, llm: FakeLLMServer, tmp_path: Path
) -> None:
    """The server reports no usage: the same estimate a reply without usage gets, marked."""
    written = "Alice sent a long x."
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": "summ-model",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": written},
                "finish_reason": "stop",
            }
        ],
    }
    service = service_for(store, llm, tmp_path, summary_model="summ-model")
    llm.enqueue(
        Script(pieces=["ok"], usage=REPLY_USAGE),
        Script(raw_sse=json.dumps(body).encode(), headers={"Content-Type": "application/json"}),
        Script(pieces=["ok"], usage=REPLY_USAGE),
    )
    await ask(service, BIG)
    await ask(service, BIG + " again")
    await service.aclose()
    [request] = summary_requests(llm)
    guess = estimate_usage(request, len(written))
    assert guess.prompt_tokens >= sum(content_chars(m["content"]) for m in request) // 4 > 0
    [summary] = [row for row in ledger(tmp_path / "history.db") if row[1] == "summ-model"]
    assert summary[4:7] == (guess.prompt_tokens, guess.completion_tokens, 1)


async def test_a_failed_summary_costs_nothing_and_not_the_reply(
    store: Store, llm: FakeLLMServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    service = service_for(store, llm, tmp_path, summary_model="summ-model")
    llm.enqueue(Script(pieces=["ok"]), Script(status=400), Script(pieces=["fine"]))
    await ask(service, BIG)
    with caplog.at_level(logging.WARNING):
        shown, _ = await ask(service, BIG + " again")
    await service.aclose()
    assert shown.startswith("fine")
    assert "Summarising 2 older messages with summ-model failed" in caplog.text
    assert [row[1] for row in ledger(tmp_path / "history.db")] == ["tiny-model", "tiny-model"]


async def test_an_empty_summary_is_no_summary_but_is_charged(
    store: Store, llm: FakeLLMServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The model answered, so the provider billed it; its empty answer is not stored."""
    service = service_for(store, llm, tmp_path, summary_model="summ-model")
    llm.enqueue(
        Script(pieces=["ok"]), Script(pieces=["  "], usage=SUMMARY_USAGE), Script(pieces=["fine"])
    )
    await ask(service, BIG)
    with caplog.at_level(logging.WARNING):
        shown, _ = await ask(service, BIG + " again")
    await service.aclose()
    assert shown.startswith("fine") and "wrote an empty summary" in caplog.text
    conversation = (await store.context_messages(1, 1))[0].conversation_id
    assert await store.history_summary(conversation) is None
    summaries = [row for row in ledger(tmp_path / "history.db") if row[1] == "summ-model"]
    assert [row[4:6] for row in summaries] == [(321, 9)]


async def test_telegram_usage_counts_the_summary(tmp_path: Path) -> None:
    """A private chat whose history outgrows the model's window (the default one: 7,168
    tokens for the prompt) with SUMMARY_MODEL set: `/usage` shows the ledger's total, the
    summary's tokens in it."""
    long = "word " * 800  # 4,000 characters, 1,000 tokens: the eighth does not fit
    async with running_bot(tmp_path, summary_model="summ-model", context_max_chars=100_000) as h:
        h.llm.default_script = Script(pieces=["ok"])
        chat = h.tg.private_chat(TG_ALICE)
        for turn in range(9):
            asked = await h.ask(chat, TG_ALICE, f"{turn} {long}")
            await h.any_reply(chat, asked)
        assert summary_requests(h.llm)
        db = tmp_path / "parley.db"
        rows = ledger(db)
        assert [row[1] for row in rows].count("summ-model") == len(summary_requests(h.llm))
        total = sum(row[4] + row[5] for row in rows)
        summarised = sum(row[4] + row[5] for row in rows if row[1] == "summ-model")
        assert summarised > 0

        asked = await h.ask(chat, TG_ALICE, "/usage")
        answer = await h.any_reply(chat, asked)
        assert (answer.text or "").startswith(f"Your use\nToday: {total:,} tokens")
