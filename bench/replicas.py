"""Replicas benchmark (not a test): one and then two `parley run` processes on one PostgreSQL
database under the webhook load of issue 14's test.

    python -m bench.replicas                   # 50 chats x 5 messages, 1 then 2 replicas
    python -m bench.replicas --chats 100 --delay 0.05

A throwaway PostgreSQL cluster (Debian's binaries, run as the `postgres` user when root), the
fake Bot API in webhook mode delivering round-robin to the replicas with a tenth of the updates
delivered twice, and the fake LLM echoing each question word by word, `--delay` apart, all
in this process; the replicas are real `parley run` processes (Telegram in webhook mode,
`STREAM_MODE=edit`), each on a fresh database per run. All chats' messages are queued at once;
a run ends when every message has its whole answer on screen.

Reported per run: replies per second (the first update queued to the last answer whole), the
time from an update's first delivery to its reply's first visible text (p50, p95), and the
check that every message was answered exactly once and in order.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import asyncpg

from bench.common import machine_report, percentile
from tests.fakes.llm_server import FakeLLMServer
from tests.fakes.telegram_api import FakeChat, FakeTelegramAPI
from tests.postgres_support import _binaries, _start_cluster, with_database
from tests.replica_support import all_answered, assert_once_in_order, replicas, send_load

WAIT = 300.0


def first_visible(tg: FakeTelegramAPI, chats: list[FakeChat]) -> list[float]:
    """Per message: seconds from its update's first delivery to its reply's first text."""
    delivered: dict[int, float] = {}
    for delivery in tg.webhooks.deliveries:
        delivered.setdefault(delivery.update_id, delivery.at)
    by_message = {
        (u["message"]["chat"]["id"], u["message"]["message_id"]): u["update_id"]
        for u in tg.updates
        if "message" in u
    }
    delays = []
    for chat in chats:
        shown: dict[int, float] = {}
        for message in chat.bot_messages():
            if message.reply_to is not None and message.history:
                at = message.history[0][2]
                shown[message.reply_to] = min(at, shown.get(message.reply_to, at))
        for message_id, at in shown.items():
            update = by_message.get((chat.id, message_id))
            if update in delivered:
                delays.append(at - delivered[update])
    return delays


async def one_run(count: int, server: str, args: argparse.Namespace) -> str:
    name = f"bench_replicas_{count}"
    admin = await asyncpg.connect(server)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    async with (
        FakeTelegramAPI(allow_http_webhooks=True) as tg,
        FakeLLMServer() as llm,
    ):
        llm.echo_delay = args.delay
        async with replicas(count, tg, llm, with_database(server, name)) as children:
            started = time.monotonic()
            chats = await send_load(tg, args.chats, args.messages)
            await tg.wait_until(lambda: all_answered(chats, args.messages), WAIT)
            seconds = time.monotonic() - started
            assert_once_in_order(llm, chats, args.messages)
            delays = first_visible(tg, chats)
            deliveries = len(tg.webhooks.deliveries)
            for child in children:
                await child.stop()
    replies = args.chats * args.messages
    return (
        f"- {count} replica{'s' if count > 1 else ''}: {replies} replies in {seconds:.1f} s, "
        f"{replies / seconds:.1f} replies/s; delivery -> first visible text p50 "
        f"{percentile(delays, 0.5) * 1000:.0f} ms, p95 {percentile(delays, 0.95) * 1000:.0f} ms "
        f"(n={len(delays)}); {deliveries} webhook deliveries; every message answered once, "
        "in order"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chats", type=int, default=50)
    parser.add_argument("--messages", type=int, default=5)
    parser.add_argument("--delay", type=float, default=0.05)
    args = parser.parse_args()
    binaries = _binaries()
    if binaries is None:
        raise SystemExit("no PostgreSQL binaries (initdb, pg_ctl): install Debian's postgresql")
    cluster = await asyncio.to_thread(_start_cluster, binaries)
    try:
        lines = machine_report()
        lines.append(
            f"load: {args.chats} chats x {args.messages} messages, each answer the fake model's "
            f"echo, word by word {args.delay * 1000:.0f} ms apart; 10% of updates delivered twice"
        )
        for count in (1, 2):
            lines.append(await one_run(count, cluster.url, args))
        print("\n".join(lines))
    finally:
        await asyncio.to_thread(cluster.stop)


if __name__ == "__main__":
    asyncio.run(main())
