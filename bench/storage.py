"""Storage benchmark (not a test): context load latency on a big history, sustained writes.

    python -m bench.storage                 # 1,000,000 messages in 10,000 chats
    python -m bench.storage --chats 1000    # a quicker run

1. Bulk-loads the history straight into SQLite (executemany in big transactions, bypassing the
   service) with the schema the migrations create. Turns are interleaved across chats, as real
   concurrent chats write them, so a conversation's rows are scattered over the file rather
   than packed together: the honest case for the index.
2. Context load: the store call the service makes per reply (newest 50 messages of a
   conversation), for random chats, one at a time through aiosqlite; p50/p99/max. Also with
   the chat-settings read the service makes alongside it.
3. Sustained writes: 100 chats writing turns concurrently through the store (user message,
   reply row, two checkpoints, final outcome = 5 transactions a turn), then through the
   conversation service with an instant scripted model.

The INSERT statements here are the bulk loader's own and SQLite-specific, like the benchmark.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import sqlite3
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiosqlite

from bench.common import machine_report, percentile
from core import AsyncClient
from core.config import CoreSettings
from core.conversation import Author, ChatRef, ConversationService
from storage import MessageStatus, ReplyOutcome, Store, open_store

CONTEXT_MESSAGES = 50
CONCURRENT_CHATS = 100
#: Rows per bulk-load transaction.
BATCH_ROWS = 100_000
#: Context loads run before measuring, so the first cold page reads are not counted as p99.
WARMUP_LOADS = 500
USER_TEXT = "How do I keep a sourdough starter alive while I am away for two weeks? "
REPLY_TEXT = (
    "Feed it, let it rise for an hour or two, then keep it in the fridge; a stiff starter "
    "(less water) keeps longer. When you are back, discard most of it and feed it twice a day "
    "for a couple of days until it doubles reliably again. "
)
TIMESTAMP = "2026-01-01T00:00:00.000Z"


def chat_rows(chats: int) -> list[tuple[int, str]]:
    """(id, chat_id) of every chat; conversation n belongs to chat n."""
    return [(n, str(-1000000 - n)) for n in range(1, chats + 1)]


def message_rows(chats: int, per_chat: int) -> Iterator[tuple[Any, ...]]:
    """Every message, turn by turn across the chats: (id, conversation, reply_to, role,
    author_id, author_name, text, status, model, provider, first_token_ms). The ids are
    those `last_user_id` in `context_loads` counts on."""
    next_id = 1
    for turn in range(per_chat // 2):
        for conversation in range(1, chats + 1):
            user_id = next_id
            yield (
                user_id,
                conversation,
                None,
                "user",
                "42",
                "Alice",
                f"{turn} {USER_TEXT}",
                "complete",
                None,
                None,
                None,
            )
            yield (
                user_id + 1,
                conversation,
                user_id,
                "assistant",
                None,
                None,
                f"{turn} {REPLY_TEXT}",
                "complete",
                "gpt-4o-mini",
                "OpenAI",
                320,
            )
            next_id += 2


def bulk_load(path: Path, chats: int, per_chat: int) -> tuple[int, float]:
    """Insert `chats` chats of `per_chat` messages; return (messages, seconds)."""
    started = time.perf_counter()
    messages = 0
    with sqlite3.connect(path, isolation_level=None) as db:
        db.execute("PRAGMA synchronous = OFF")  # bulk load only; the store runs NORMAL
        db.execute("BEGIN")
        db.executemany(
            "INSERT INTO chats (id, platform, chat_id, thread_id, created_at)"
            " VALUES (?, 'telegram', ?, '', ?)",
            ((n, chat_id, TIMESTAMP) for n, chat_id in chat_rows(chats)),
        )
        db.executemany(
            "INSERT INTO conversations (id, chat, created_at) VALUES (?, ?, ?)",
            ((n, n, TIMESTAMP) for n in range(1, chats + 1)),
        )
        db.execute("COMMIT")
        rows: list[tuple[Any, ...]] = []
        for row in message_rows(chats, per_chat):
            rows.append(row)
            if len(rows) >= BATCH_ROWS:
                _insert_messages(db, rows)
                messages += len(rows)
                rows = []
        _insert_messages(db, rows)
        messages += len(rows)
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return messages, time.perf_counter() - started


def _insert_messages(db: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    db.execute("BEGIN")
    db.executemany(
        "INSERT INTO messages (id, conversation, reply_to, role, author_id, author_name, text,"
        " status, model, provider, first_token_ms, created_at, updated_at)"
        f" VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, '{TIMESTAMP}', '{TIMESTAMP}')",
        rows,
    )
    db.execute("COMMIT")


def report(label: str, figures: str) -> None:
    print(f"  {label + ':':<40}{figures}")


def percentiles(samples_ns: list[int]) -> str:
    ms = [sample / 1e6 for sample in samples_ns]
    return (
        f"p50 {percentile(ms, 0.5):.3f} ms, p99 {percentile(ms, 0.99):.3f} ms, "
        f"max {max(ms):.3f} ms ({len(ms)} loads)"
    )


async def context_loads(
    store: Store,
    chats: int,
    per_chat: int,
    loads: int,
    *,
    with_settings: bool = False,
    rng: random.Random,
) -> list[int]:
    """Nanoseconds of each of `loads` context loads (the newest CONTEXT_MESSAGES before a random
    chat's last question, as the service asks per reply), with the chat-settings read before
    it when `with_settings`; checks every load's length."""
    last_turn = per_chat // 2 - 1

    def last_user_id(conversation: int) -> int:
        return 2 * (last_turn * chats + conversation - 1) + 1

    timings = []
    for _ in range(loads):
        conversation = rng.randint(1, chats)
        started = time.perf_counter_ns()
        if with_settings:
            await store.chat_config(ChatRef("telegram", str(-1000000 - conversation)))
        loaded = await store.context_messages(last_user_id(conversation), CONTEXT_MESSAGES)
        elapsed = time.perf_counter_ns() - started
        assert len(loaded) == min(CONTEXT_MESSAGES, per_chat - 1), len(loaded)
        timings.append(elapsed)
    return timings


async def context_latency(store: Store, chats: int, per_chat: int, samples: int) -> None:
    rng = random.Random(7)

    async def measure(with_settings: bool) -> list[int]:
        timings = await context_loads(
            store, chats, per_chat, WARMUP_LOADS + samples, with_settings=with_settings, rng=rng
        )
        return timings[WARMUP_LOADS:]

    report(f"context load (newest {CONTEXT_MESSAGES})", percentiles(await measure(False)))
    report("chat settings + context load", percentiles(await measure(True)))


async def store_writes(store: Store, seconds: float) -> None:
    deadline = time.perf_counter() + seconds
    turns = 0

    async def chat_writer(number: int) -> None:
        nonlocal turns
        key = ChatRef("discord", f"writer-{number}")
        while time.perf_counter() < deadline:
            question = await store.add_user_message(
                key, author_id="7", author_name="Bob", text=USER_TEXT
            )
            reply = await store.start_reply(question, "m")
            await store.save_partial_reply(reply, REPLY_TEXT[:80])
            await store.save_partial_reply(reply, REPLY_TEXT[:160])
            await store.finish_reply(reply, ReplyOutcome(MessageStatus.COMPLETE, REPLY_TEXT))
            turns += 1

    started = time.perf_counter()
    await asyncio.gather(*(chat_writer(n) for n in range(CONCURRENT_CHATS)))
    elapsed = time.perf_counter() - started
    report(
        f"store writes, {CONCURRENT_CHATS} concurrent chats",
        f"{turns * 5 / elapsed:,.0f} write transactions/s ({turns / elapsed:,.0f} turns/s, "
        f"{turns * 2 / elapsed:,.0f} messages/s)",
    )


class _InstantModel:
    working = True
    supports_stream = True
    name = "Instant"

    async def create_async_generator(
        self, model: str, messages: Any, **kw: Any
    ) -> AsyncIterator[str]:
        yield REPLY_TEXT[:100]
        yield REPLY_TEXT[100:]


async def service_writes(store: Store, seconds: float) -> None:
    service = ConversationService(
        store, AsyncClient(provider=_InstantModel()), CoreSettings(_env_file=None)
    )
    deadline = time.perf_counter() + seconds
    replies = 0

    async def chat_user(number: int) -> None:
        nonlocal replies
        key = ChatRef("discord", f"service-{number}")
        author = Author("7", "Bob")
        while time.perf_counter() < deadline:
            async for _ in service.reply(key, author, USER_TEXT, group=True):
                pass
            replies += 1

    started = time.perf_counter()
    await asyncio.gather(*(chat_user(n) for n in range(CONCURRENT_CHATS)))
    elapsed = time.perf_counter() - started
    await service.aclose()
    report(
        f"service replies, {CONCURRENT_CHATS} concurrent chats",
        f"{replies / elapsed:,.0f} replies/s (each: user message, 2 reads, reply row, outcome)",
    )


async def run(args: argparse.Namespace) -> None:
    folder = Path(args.folder) if args.folder else Path(tempfile.mkdtemp(prefix="parley-bench-"))
    path = folder / "bench.db"
    try:
        for line in machine_report():
            print(line)
        print(f"sqlite: SQLite {sqlite3.sqlite_version}, aiosqlite {aiosqlite.__version__}")
        if not path.exists():
            store = await open_store(f"sqlite:///{path}")  # the real schema, by the migrations
            await store.close()
            messages, seconds = bulk_load(path, args.chats, args.per_chat)
            print(
                f"Bulk load: {messages:,} messages in {args.chats:,} chats in {seconds:.1f} s "
                f"({messages / seconds:,.0f} rows/s); file {path.stat().st_size / 1e6:,.0f} MB"
            )
        store = await open_store(f"sqlite:///{path}")
        try:
            print("Results:")
            await context_latency(store, args.chats, args.per_chat, args.samples)
            await store_writes(store, args.seconds)
            await service_writes(store, args.seconds)
        finally:
            await store.close()
    finally:
        if not args.folder:
            shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chats", type=int, default=10_000)
    parser.add_argument("--per-chat", type=int, default=100, help="messages per chat (even)")
    parser.add_argument("--samples", type=int, default=5_000, help="context loads to time")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each write run")
    parser.add_argument("--folder", help="keep the database here (reused when present)")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
