"""Context load on PostgreSQL beside SQLite, 1,000,000 messages each (issue 14's first figure).

    python -m bench.storage_postgres                 # 1,000,000 messages in 10,000 chats
    python -m bench.storage_postgres --chats 1000    # a quicker run

Both engines hold the same history, section 3's (`bench/storage.py`: turns interleaved across
the chats, so a conversation's rows are scattered): SQLite in a fresh file, PostgreSQL in a
throwaway cluster this script starts (`tests/postgres_support.py`'s: a temp folder, 127.0.0.1,
run as the `postgres` user when root, fsync off, otherwise PostgreSQL's default settings) and
stops. Each database is migrated by `open_store`, then filled past the store: SQLite with
executemany in large transactions, PostgreSQL with COPY (triggers and foreign-key checks off
for the load, then VACUUM ANALYZE, as a restored dump would be).

Then the store call the service makes per reply, `Store.context_messages` (the newest 50
messages before a chat's last question), for random chats, one at a time, through each engine's
real store (aiosqlite; asyncpg's pool over TCP to 127.0.0.1), with and without the chat-settings
read beside it. The engines take turns in rounds, so a slow minute on this shared machine falls
on both; each starts with warm-up loads that are not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import sqlite3
import tempfile
import time
from itertools import islice
from pathlib import Path

import aiosqlite
import asyncpg

from bench.common import machine_report, percentile
from bench.storage import (
    BATCH_ROWS,
    CONTEXT_MESSAGES,
    TIMESTAMP,
    WARMUP_LOADS,
    bulk_load,
    chat_rows,
    context_loads,
    message_rows,
    percentiles,
    report,
)
from storage import Store, open_store
from tests.postgres_support import _binaries, _start_cluster, with_database

DATABASE = "parley_bench"
#: Context loads per engine per round; the rounds alternate the engines.
ROUND_LOADS = 500
MESSAGE_COLUMNS = (
    "id",
    "conversation",
    "reply_to",
    "role",
    "author_id",
    "author_name",
    "text",
    "status",
    "model",
    "provider",
    "first_token_ms",
    "created_at",
    "updated_at",
)


async def copy_load(url: str, chats: int, per_chat: int) -> tuple[int, float]:
    """COPY the history into the migrated database `url`; (messages, seconds)."""
    started = time.perf_counter()
    conn = await asyncpg.connect(url)
    messages = 0
    try:
        # Bulk load only: no per-row trigger (platform_ids -> platform_messages: all empty here)
        # nor foreign-key checks; the store's own sessions run with both.
        await conn.execute("SET session_replication_role = replica")
        await conn.copy_records_to_table(
            "chats",
            records=[(n, "telegram", chat_id, "", TIMESTAMP) for n, chat_id in chat_rows(chats)],
            columns=("id", "platform", "chat_id", "thread_id", "created_at"),
        )
        await conn.copy_records_to_table(
            "conversations",
            records=[(n, n, TIMESTAMP) for n in range(1, chats + 1)],
            columns=("id", "chat", "created_at"),
        )
        rows = message_rows(chats, per_chat)
        while batch := [(*row, TIMESTAMP, TIMESTAMP) for row in islice(rows, BATCH_ROWS)]:
            await conn.copy_records_to_table("messages", records=batch, columns=MESSAGE_COLUMNS)
            messages += len(batch)
        for table in ("chats", "conversations", "messages"):
            await conn.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), max(id)) FROM {table}"
            )
        await conn.execute("VACUUM ANALYZE")
        size = await conn.fetchval("SELECT pg_database_size(current_database())")
    finally:
        await conn.close()
    seconds = time.perf_counter() - started
    print(
        f"PostgreSQL load (COPY): {messages:,} messages in {chats:,} chats in {seconds:.1f} s "
        f"({messages / seconds:,.0f} rows/s); database {size / 1e6:,.0f} MB"
    )
    return messages, seconds


async def prepare_postgres(server_url: str, chats: int, per_chat: int) -> str:
    conn = await asyncpg.connect(server_url)
    try:
        version = await conn.fetchval("SHOW server_version")
        await conn.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        await conn.execute(f"CREATE DATABASE {DATABASE} TEMPLATE template0 ENCODING 'UTF8'")
    finally:
        await conn.close()
    print(f"postgresql: PostgreSQL {version}, asyncpg {asyncpg.__version__}")
    url = with_database(server_url, DATABASE)
    store = await open_store(url)  # the real schema, by the migrations
    await store.close()
    await copy_load(url, chats, per_chat)
    return url


async def compare(stores: dict[str, Store], args: argparse.Namespace) -> None:
    """Both kinds of load on every engine, the engines alternating round by round."""
    for with_settings, label in (
        (False, f"context load (newest {CONTEXT_MESSAGES})"),
        (True, "chat settings + context load"),
    ):
        samples: dict[str, list[int]] = {name: [] for name in stores}
        rngs = {name: random.Random(7) for name in stores}  # the same chats on each engine
        for name, store in stores.items():
            await context_loads(
                store,
                args.chats,
                args.per_chat,
                WARMUP_LOADS,
                with_settings=with_settings,
                rng=rngs[name],
            )
        while len(samples["SQLite"]) < args.samples:
            for name, store in stores.items():
                samples[name] += await context_loads(
                    store,
                    args.chats,
                    args.per_chat,
                    min(ROUND_LOADS, args.samples - len(samples[name])),
                    with_settings=with_settings,
                    rng=rngs[name],
                )
        print(f"  {label}:")
        for name, timings in samples.items():
            report(f"  {name}", percentiles(timings))
        ms = {name: [t / 1e6 for t in timings] for name, timings in samples.items()}
        p50, p99 = (
            percentile(ms["PostgreSQL"], q) / percentile(ms["SQLite"], q) for q in (0.5, 0.99)
        )
        report("  PostgreSQL / SQLite", f"p50 {p50:.2f}x, p99 {p99:.2f}x")


async def run(args: argparse.Namespace) -> None:
    binaries = _binaries()
    if binaries is None:
        raise SystemExit("no PostgreSQL binaries (initdb, pg_ctl): install Debian's postgresql")
    folder = Path(tempfile.mkdtemp(prefix="parley-bench-"))
    cluster = await asyncio.to_thread(_start_cluster, binaries)
    try:
        for line in machine_report():
            print(line)
        print(f"sqlite: SQLite {sqlite3.sqlite_version}, aiosqlite {aiosqlite.__version__}")
        path = folder / "bench.db"
        store = await open_store(f"sqlite:///{path}")
        await store.close()
        messages, seconds = await asyncio.to_thread(bulk_load, path, args.chats, args.per_chat)
        print(
            f"SQLite load (executemany): {messages:,} messages in {args.chats:,} chats in "
            f"{seconds:.1f} s ({messages / seconds:,.0f} rows/s); "
            f"file {path.stat().st_size / 1e6:,.0f} MB"
        )
        postgres_url = await prepare_postgres(cluster.url, args.chats, args.per_chat)
        stores = {
            "SQLite": await open_store(f"sqlite:///{path}"),
            "PostgreSQL": await open_store(postgres_url),
        }
        try:
            print("Results:")
            await compare(stores, args)
        finally:
            for store in stores.values():
                await store.close()
    finally:
        await asyncio.to_thread(cluster.stop)
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chats", type=int, default=10_000)
    parser.add_argument("--per-chat", type=int, default=100, help="messages per chat (even)")
    parser.add_argument(
        "--samples", type=int, default=5_000, help="context loads timed per engine and kind"
    )
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
