"""Usage ledger benchmark (not a test): the budget check and the usage write per reply, and
`parley usage`, on a ledger of 1,000,000 rows; against n3d1117's per-user JSON files.

    python -m bench.usage                 # 1,000,000 rows, 10,000 users, 90 days
    python -m bench.usage --rows 200000

The ledger is filled directly with SQL in one transaction (10,000 users in 500 chats over the
last 90 days, a row per model call), with the running totals it implies, on a fresh SQLite
file migrated by `open_store`. Then, through the real `Store`:
- the budget check: `usage_totals` for what a reply is checked against (the user's day and
  month, the chat's day and month, the guests' day), 2,000 times for random users;
- the usage write: `record_usage` (one ledger row and its totals, one transaction), 1,000 times;
- `parley usage --by user` and `--by model --since 30d`, each as a fresh process (start-up
  included), and `usage_report` in process.

The peer, in the same run: n3d1117's chatgpt-telegram-bot keeps one JSON file per user
(`usage_logs/<id>.json`: per-day token, image and transcription counts, and the day's and month's
cost) and, per message, loads the user's file to check the budget and rewrites it whole after
the reply (`bot/usage_tracker.py`, `UsageTracker`). The same 1,000,000 calls become 10,000 such
files (90 days each); its check is the load and the sums, its write the load and the dump. It has
no report across users: the comparison for `parley usage` is reading every user's file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.common import REPO_ROOT, machine_report, percentile
from core.budgets import Admission, BudgetPolicy
from core.config import CoreSettings
from core.conversation import Author, ChatRef
from storage import UsageKey, UsageKind, UsageRecord, open_store, period_start

USERS = 10_000
CHATS = 500
DAYS = 90
NOW = datetime(2026, 11, 30, 18, 0, tzinfo=UTC)
ROOM = ChatRef("telegram", "-1001")


def rows(count: int, seed: int = 7) -> list[tuple[object, ...]]:
    """The ledger's rows: random users, chats, times over the last `DAYS` days."""
    rng = random.Random(seed)
    made = []
    for _ in range(count):
        at = NOW - timedelta(seconds=rng.randrange(DAYS * 86_400))
        user = rng.randrange(USERS)
        prompt, completion = rng.randrange(200, 4_000), rng.randrange(20, 800)
        made.append(
            (
                at.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                "chat",
                "telegram",
                str(-1000 - rng.randrange(CHATS)),
                "",
                str(user),
                f"User {user}",
                rng.choice(("gpt-4o", "gpt-4o-mini", "claude-sonnet-4", "llama3.1:8b")),
                "OpenAI",
                prompt,
                completion,
                0,
                0,
                0.0,
                0,
                prompt * 2 + completion * 10,
                0,
                None,
            )
        )
    return made


def fill(path: Path, ledger: list[tuple[object, ...]]) -> None:
    """Write the ledger and the running totals it implies, in one transaction."""
    totals: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0])
    for row in ledger:
        at, platform, chat, user = str(row[0]), row[2], row[3], row[5]
        tokens, cost = int(row[9]) + int(row[10]), int(row[15])  # type: ignore[call-overload]
        for scope, key in (("user", f"{platform}:{user}"), ("chat", f"{platform}:{chat}:")):
            for period in (at[:10], at[:7]):
                entry = totals[(scope, key, period)]
                entry[0] += tokens
                entry[1] += cost
    with sqlite3.connect(path) as db:
        db.executemany(
            "INSERT INTO usage (at, kind, platform, chat_id, thread_id, user_id, user_name, model,"
            " provider, prompt_tokens, completion_tokens, estimated, images_in, audio_seconds,"
            " images_out, cost_micros, guest, message)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            ledger,
        )
        db.executemany(
            "INSERT INTO usage_totals VALUES (?, ?, ?, ?, ?)",
            [(*key, tokens, cost) for key, (tokens, cost) in totals.items()],
        )


def n3d1117_files(folder: Path, ledger: list[tuple[object, ...]]) -> None:
    """The same calls as n3d1117's per-user files: tokens per day, the day's and month's cost."""
    users: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    costs: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    today, month = NOW.strftime("%Y-%m-%d"), NOW.strftime("%Y-%m")
    for row in ledger:
        at, user = str(row[0]), str(row[5])
        users[user][at[:10]] += int(row[9]) + int(row[10])  # type: ignore[call-overload]
        cost = int(row[15]) / 1_000_000  # type: ignore[call-overload]
        if at[:10] == today:
            costs[user][0] += cost
        if at[:7] == month:
            costs[user][1] += cost
    for user, days in users.items():
        usage = {
            "user_name": f"User {user}",
            "current_cost": {"day": costs[user][0], "month": costs[user][1], "last_update": today},
            "usage_history": {
                "chat_tokens": days,
                "transcription_seconds": {},
                "number_images": {},
            },
        }
        (folder / f"{user}.json").write_text(json.dumps(usage))


def n3d1117_check(folder: Path, user: str) -> tuple[int, int, float]:
    """What its budget check does per message: load the user's file, sum the month's tokens."""
    usage = json.loads((folder / f"{user}.json").read_text())
    today, month = NOW.strftime("%Y-%m-%d"), NOW.strftime("%Y-%m")
    history = usage["usage_history"]["chat_tokens"]
    day = history.get(today, 0)
    month_tokens = sum(tokens for day_, tokens in history.items() if day_.startswith(month))
    return day, month_tokens, usage["current_cost"]["month"]


def n3d1117_write(folder: Path, user: str, tokens: int) -> None:
    """What it does after a reply: load the file, add the tokens and cost, dump it whole."""
    path = folder / f"{user}.json"
    usage = json.loads(path.read_text())
    today = NOW.strftime("%Y-%m-%d")
    history = usage["usage_history"]["chat_tokens"]
    history[today] = history.get(today, 0) + tokens
    usage["current_cost"]["day"] += tokens * 0.002 / 1000
    usage["current_cost"]["month"] += tokens * 0.002 / 1000
    path.write_text(json.dumps(usage))


def ms(values: list[float]) -> str:
    return (
        f"p50 {statistics.median(values) * 1000:.3f} ms, "
        f"p99 {percentile(values, 0.99) * 1000:.3f} ms"
    )


def timed_cli(database: Path, *args: str) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "bots.cli", "usage", *args],
        cwd=REPO_ROOT,
        env={"DATABASE_URL": f"sqlite:///{database}", "PATH": "/usr/bin:/bin"},
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - started


async def run(args: argparse.Namespace) -> None:
    for line in machine_report():
        print(line)
    rng = random.Random(11)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        database = folder / "usage.db"
        store = await open_store(f"sqlite:///{database}")
        await store.close()
        ledger = rows(args.rows)
        started = time.perf_counter()
        fill(database, ledger)
        print(
            f"ledger: {args.rows:,} rows, {USERS:,} users, {CHATS} chats, {DAYS} days "
            f"(filled in {time.perf_counter() - started:.1f} s; "
            f"{database.stat().st_size / 1024**2:.0f} MB)"
        )
        peer = folder / "usage_logs"
        peer.mkdir()
        n3d1117_files(peer, ledger)
        del ledger

        store = await open_store(f"sqlite:///{database}")
        checks = []
        for _ in range(args.checks):
            user = str(rng.randrange(USERS))
            keys = [
                UsageKey.user("telegram", user, "day"),
                UsageKey.user("telegram", user, "month"),
                UsageKey.chat(ROOM, "day"),
                UsageKey.chat(ROOM, "month"),
                UsageKey.guests("day"),
            ]
            began = time.perf_counter()
            await store.usage_totals(keys, NOW)
            checks.append(time.perf_counter() - began)
        # The check a reply passes (`BudgetPolicy.admit`, then `release` once charged), with
        # every budget set: the user's day and month in tokens and cost, the chat's, a guest's.
        policy = BudgetPolicy(
            store,
            CoreSettings(
                _env_file=None,
                user_daily_tokens=10**9,
                user_monthly_tokens=10**9,
                user_daily_cost=1_000,
                user_monthly_cost=1_000,
                chat_daily_tokens=10**9,
                chat_monthly_cost=1_000,
                guest_daily_tokens=10**9,
            ),
            clock=lambda: NOW,
        )
        admissions = []
        for _ in range(args.checks):
            asker = Author(str(rng.randrange(USERS)), "someone", guest=True)
            began = time.perf_counter()
            admitted = await policy.admit(asker, ROOM)
            assert isinstance(admitted, Admission)
            await admitted.release()
            admissions.append(time.perf_counter() - began)
        writes = []
        for _ in range(args.writes):
            user = str(rng.randrange(USERS))
            record = UsageRecord(
                kind=UsageKind.CHAT,
                at=NOW,
                platform="telegram",
                chat_id="-1001",
                thread_id="",
                user_id=user,
                model="gpt-4o",
                prompt_tokens=900,
                completion_tokens=300,
                cost_micros=5_250,
            )
            began = time.perf_counter()
            await store.record_usage(record)
            writes.append(time.perf_counter() - began)
        began = time.perf_counter()
        report = await store.usage_report(None, "user")
        in_process = time.perf_counter() - began
        await store.close()
        assert period_start(NOW, "day") == "2026-11-30" and 0 < len(report) <= USERS

        cli_user = timed_cli(database, "--by", "user")
        cli_model = timed_cli(database, "--by", "model", "--since", "30d")

        present = sorted(path.stem for path in peer.glob("*.json"))
        peer_checks, peer_writes = [], []
        for _ in range(args.checks):
            user = rng.choice(present)
            began = time.perf_counter()
            n3d1117_check(peer, user)
            peer_checks.append(time.perf_counter() - began)
        for _ in range(args.writes):
            user = rng.choice(present)
            began = time.perf_counter()
            n3d1117_write(peer, user, 1_200)
            peer_writes.append(time.perf_counter() - began)
        began = time.perf_counter()
        for user in present:
            n3d1117_check(peer, user)
        peer_report = time.perf_counter() - began

    print(f"budget check (5 totals): {ms(checks)} (n={args.checks})")
    print(
        f"a reply's pass through the budgets (admit + release, 7 budgets set): "
        f"{ms(admissions)} (n={args.checks})"
    )
    print(f"usage write (ledger row + 6 totals, one transaction): {ms(writes)} (n={args.writes})")
    print(f"usage_report by user, in process: {in_process:.2f} s")
    print(f"parley usage --by user (a fresh process): {cli_user:.2f} s")
    print(f"parley usage --by model --since 30d (a fresh process): {cli_model:.2f} s")
    print(
        f"n3d1117's files, same calls: check {ms(peer_checks)}; write {ms(peer_writes)}; "
        f"every user's file read (its nearest to a report) {peer_report:.2f} s"
    )
    ratio = percentile(peer_checks, 0.99) / percentile(checks, 0.99)
    print(
        f"ratio at p99: n3d1117's check takes {ratio:.1f}x Parley's; its write "
        f"{percentile(peer_writes, 0.99) / percentile(writes, 0.99):.1f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--checks", type=int, default=2_000)
    parser.add_argument("--writes", type=int, default=1_000)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
