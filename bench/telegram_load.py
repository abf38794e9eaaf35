"""Load on the Telegram bot: many private chats, or five people in one group, asking at once.

Three processes, so each figure belongs to the bot alone: the fake LLM server
(`tests.fakes.llm_server`, streaming `--pieces` pieces `--delay` apart), the fake Bot API
(`tests.fakes.telegram_api`, run by this script in `--serve-telegram` mode) and the bot
(`bots.telegram.TelegramBot` with the real conversation service on SQLite, at Telegram's real
pace of one edit per second per private chat). All chats' questions are queued at once; the run
ends when every reply reads the full answer.

Reported: Bot API calls per reply (by method); the time from the model's first token reaching
the bot to the reply's first visible text (the fake's arrival time of the first sendMessage, or
of the first sendMessageDraft in draft mode; both processes read the same system-wide monotonic
clock); CPU seconds of the bot process per reply; and the machine. `--stream-mode draft` (the
default, as STREAM_MODE) streams private replies as native drafts, then one message each;
`--stream-mode edit` sends early and edits.

`--group`: `--people` (5) people in one supergroup each @mention the bot at the same moment,
1,500-character answers streamed over about 4.3 s, the fake enforcing Telegram's flood limits
(20 writes a minute per group, sends and edits together, 429 with `retry_after` beyond). Per
reply: first visible text counted from the question being queued and from the model's first
token, the time until the full answer was accepted, edits; for the chat: the peak writes in any
60 s and the 429s answered.

Run from the repository root: `python -m bench.telegram_load [--chats 200]
[--stream-mode draft|edit]` or
`python -m bench.telegram_load --group`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections import Counter
from typing import Any

from bench.common import (
    await_go,
    fake_server,
    group_report,
    hand_over,
    machine_report,
    percentile,
    run_with_fake_platform,
)

DEFAULT_CHATS = 200
DEFAULT_PIECES = 80
DEFAULT_PIECE = "tok "
DEFAULT_DELAY = 0.025
#: The group workload: 150 pieces of 10 characters 29 ms apart, 1,500 characters in 4.3 s.
GROUP_PEOPLE = 5
GROUP_PIECES = 150
GROUP_PIECE = "word word "
GROUP_DELAY = 0.029
GROUP_CHAT_ID = -1001000000042
#: Telegram's window for the group limit, over which the peak writes are counted.
FLOOD_WINDOW = 60.0
#: Seconds the whole load may take before the run is declared failed.
RUN_TIMEOUT = 180.0
#: Bot API methods the bot calls once at start-up, not per reply.
STARTUP_METHODS = frozenset({"getMe", "deleteWebhook", "setMyCommands", "getUpdates"})
FIRST_USER_ID = 10_000


# -- the fake Bot API process -----------------------------------------------------------------


async def serve_telegram(chats: int, expected: str) -> None:
    """Child mode: print READY, queue every chat's question on GO, print RESULT when done."""
    from tests.fakes.telegram_api import FakeTelegramAPI, user

    async with FakeTelegramAPI() as tg:
        polling = tg.wait_calls("getUpdates", ok=None, timeout=RUN_TIMEOUT)
        if not await await_go([tg.base_url, tg.token], polling, "POLLING"):
            return
        people = [user(FIRST_USER_ID + i, f"User {i}") for i in range(chats)]
        rooms = [tg.private_chat(person) for person in people]
        started = time.monotonic()
        for i, (room, person) in enumerate(zip(rooms, people, strict=True)):
            await tg.message(room, person, f"question {i}")

        def done() -> bool:
            return all(any(m.text == expected for m in room.bot_messages()) for room in rooms)

        with contextlib.suppress(TimeoutError):
            await tg.wait_until(done, RUN_TIMEOUT)
        finished = time.monotonic()
        first_visible = {}
        for call in tg.calls:
            if call.method in ("sendMessage", "sendMessageDraft") and call.ok and call.done:
                first_visible.setdefault(str(call.params["chat_id"]), call.at)
        result = {
            "started": started,
            "finished": finished,
            "complete": sum(any(m.text == expected for m in room.bot_messages()) for room in rooms),
            "calls": Counter(c.method for c in tg.calls if c.method not in STARTUP_METHODS),
            "failed_calls": Counter(
                f"{c.method}: {c.error}"
                for c in tg.calls
                if c.done and not c.ok and c.method != "getUpdates"
            ),
            "first_visible": first_visible,
        }
        await hand_over(result)


async def serve_group(people: int, expected: str) -> None:
    """Child mode of `--group`: as `serve_telegram`, with every question in one supergroup
    under Telegram's flood limits; the result follows each reply by the question it answers."""
    from tests.fakes.telegram_api import BOT_USERNAME, FakeTelegramAPI, FloodLimits, user

    async with FakeTelegramAPI(flood_limits=FloodLimits()) as tg:
        polling = tg.wait_calls("getUpdates", ok=None, timeout=RUN_TIMEOUT)
        if not await await_go([tg.base_url, tg.token], polling, "POLLING"):
            return
        group = tg.supergroup(GROUP_CHAT_ID, "Bench group")
        asked: dict[int, float] = {}  # question message id -> when it was queued
        started = time.monotonic()
        for i in range(people):
            person = user(FIRST_USER_ID + i, f"User {i}")
            asked_at = time.monotonic()
            question = await tg.message(group, person, f"@{BOT_USERNAME} question {i}")
            asked[question["message_id"]] = asked_at

        def answers() -> dict[int, list[Any]]:
            """The bot's messages per question: the first replies to it, a continuation to
            the bot's message before it."""
            root: dict[int, int] = {}
            chains: dict[int, list[Any]] = {q: [] for q in asked}
            for message in group.bot_messages():
                target = message.reply_to or 0
                owner = target if target in asked else root.get(target)
                if owner is not None:
                    root[message.message_id] = owner
                    chains[owner].append(message)
            return chains

        def complete(chain: list[Any]) -> bool:
            return any(m.text == expected for m in chain)

        with contextlib.suppress(TimeoutError):
            await tg.wait_until(lambda: all(map(complete, answers().values())), RUN_TIMEOUT)
        finished = time.monotonic()
        sent_at = {
            c.result["message_id"]: c.at
            for c in tg.calls
            if c.method == "sendMessage" and c.ok and c.done
        }
        replies: list[dict[str, Any]] = []
        for i, (question_id, chain) in enumerate(answers().items()):
            final = [at for m in chain for text, _, at in m.history if text == expected]
            replies.append(
                {
                    "question": f"question {i}",
                    "asked": asked[question_id],
                    "first_send": min((sent_at[m.message_id] for m in chain), default=None),
                    "final": min(final, default=None),
                    "messages": len(chain),
                    "edits": sum(len(m.history) - 1 for m in chain),
                    "complete": complete(chain),
                }
            )
        result = {
            "started": started,
            "finished": finished,
            "complete": sum(bool(r["complete"]) for r in replies),
            "replies": replies,
            "peak_writes": tg.max_writes_in_window(group.id, FLOOD_WINDOW),
            "writes": len(tg.writes(group.id)),
            "refusals": tg.flood_refusals(group.id),
            "calls": Counter(c.method for c in tg.calls if c.method not in STARTUP_METHODS),
            "failed_calls": Counter(
                f"{c.method}: {c.error}"
                for c in tg.calls
                if c.done and not c.ok and c.method != "getUpdates"
            ),
        }
        await hand_over(result)


# -- the bot process (this one) ---------------------------------------------------------------


def run_bot(llm_url: str, child_command: list[str], stream_mode: str) -> dict:
    from bots.telegram import TelegramBot

    return run_with_fake_platform(
        child_command,
        llm_url,
        settings_from=lambda fields: {
            "telegram_api_base": fields[0],
            "telegram_bot_token": fields[1],
            "stream_mode": stream_mode,
        },
        bot_for=TelegramBot,
        ready="POLLING",
        timeout=RUN_TIMEOUT,
    )


def report(args: argparse.Namespace, result: dict) -> list[str]:
    replies = args.chats
    calls = Counter(result["calls"])
    delays = []
    for i in range(args.chats):
        token = result["first_token"].get(f"question {i}")
        visible = result["first_visible"].get(str(FIRST_USER_ID + i))
        if token is not None and visible is not None:
            delays.append((visible - token) * 1000)
    per_reply = ", ".join(f"{m} {n / replies:.2f}" for m, n in sorted(calls.items()))
    lines = [
        f"telegram_load: {args.chats} private chats at once; each reply {args.pieces} pieces "
        f"{args.delay * 1000:g} ms apart; STREAM_MODE={args.stream_mode} (edits >= 1 s apart, "
        "Telegram's pace; drafts >= 0.2 s apart)",
        f"replies complete: {result['complete']}/{args.chats} in "
        f"{result['finished'] - result['started']:.1f} s",
        f"Bot API calls per reply: {sum(calls.values()) / replies:.2f} ({per_reply})",
        f"failed Bot API calls: {dict(result['failed_calls']) or 'none'}",
    ]
    if delays:
        lines.append(
            f"first token -> first visible text: p50 {percentile(delays, 0.5):.0f} ms, "
            f"p95 {percentile(delays, 0.95):.0f} ms, max {max(delays):.0f} ms "
            f"(n={len(delays)})"
        )
    lines.append(
        f"bot CPU: {result['cpu']:.2f} s total, {result['cpu'] / replies * 1000:.1f} ms per reply"
    )
    return lines + machine_report()


def report_group(args: argparse.Namespace, result: dict) -> list[str]:
    headline = (
        f"telegram_load --group: {args.people} people in one supergroup at once; each answer "
        f"{len(args.piece * args.pieces)} characters in {args.pieces} pieces "
        f"{args.delay * 1000:g} ms apart; the fake enforces 20 writes per 60 s per group (429 "
        "with retry_after); the bot at Telegram's real pace"
    )
    failed = f"failed Bot API calls: {dict(result['failed_calls']) or 'none'}"
    return group_report(
        args,
        result,
        headline=headline,
        place="group",
        window=60.0,
        refusals="answered",
        notes=[failed],
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chats", type=int, default=DEFAULT_CHATS)
    parser.add_argument(
        "--group", action="store_true", help="five people in one group, under flood limits"
    )
    parser.add_argument("--people", type=int, default=GROUP_PEOPLE, help="with --group")
    parser.add_argument(
        "--stream-mode", choices=("draft", "edit"), default="draft", help="private chats"
    )
    parser.add_argument("--pieces", type=int)
    parser.add_argument("--piece")
    parser.add_argument("--delay", type=float)
    parser.add_argument("--serve-telegram", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    defaults = (
        (GROUP_PIECES, GROUP_PIECE, GROUP_DELAY)
        if args.group
        else (DEFAULT_PIECES, DEFAULT_PIECE, DEFAULT_DELAY)
    )
    for name, default in zip(("pieces", "piece", "delay"), defaults, strict=True):
        if getattr(args, name) is None:
            setattr(args, name, default)
    expected = (args.piece * args.pieces).strip()
    if args.serve_telegram:
        if args.group:
            asyncio.run(serve_group(args.people, expected))
        else:
            asyncio.run(serve_telegram(args.chats, expected))
        return
    child_command = [
        sys.executable,
        "-m",
        "bench.telegram_load",
        "--serve-telegram",
        "--chats",
        str(args.chats),
        "--people",
        str(args.people),
        "--pieces",
        str(args.pieces),
        "--piece",
        args.piece,
        *(["--group"] if args.group else []),
    ]
    with fake_server(args.pieces, args.piece, args.delay) as llm_url:
        result = run_bot(llm_url, child_command, args.stream_mode)
    if args.group:
        print("\n".join(report_group(args, result)))
        if result["complete"] != args.people:
            sys.exit(1)
        return
    print("\n".join(report(args, result)))
    if result["complete"] != args.chats:
        sys.exit(1)


if __name__ == "__main__":
    main(sys.argv[1:])
