"""Load on the Telegram bot: many private chats asking at once, every reply streamed.

Three processes, so each figure belongs to the bot alone: the fake LLM server
(`tests.fakes.llm_server`, streaming `--pieces` pieces `--delay` apart), the fake Bot API
(`tests.fakes.telegram_api`, run by this script in `--serve-telegram` mode) and the bot
(`bots.telegram.TelegramBot` with the real conversation service on SQLite, at Telegram's real
pace of one edit per second per private chat). All chats' questions are queued at once; the run
ends when every reply reads the full answer.

Reported: Bot API calls per reply (by method); the time from the model's first token reaching
the bot to the reply's first visible text (the fake's arrival time of the first sendMessage;
both processes read the same system-wide monotonic clock); CPU seconds of the bot process per
reply; and the machine.

Run from the repository root: `python -m bench.telegram_load [--chats 200]`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psutil

from bench.common import REPO_ROOT, fake_server, machine_report, percentile

DEFAULT_CHATS = 200
DEFAULT_PIECES = 80
DEFAULT_PIECE = "tok "
DEFAULT_DELAY = 0.025
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
        print(f"READY {tg.base_url} {tg.token}", flush=True)
        await tg.wait_calls("getUpdates", ok=None, timeout=RUN_TIMEOUT)
        print("POLLING", flush=True)
        line = await asyncio.to_thread(sys.stdin.readline)
        if line.strip() != "GO":
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
            if call.method == "sendMessage" and call.ok and call.done:
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
        print("RESULT " + json.dumps(result), flush=True)
        await asyncio.to_thread(sys.stdin.readline)  # stay up until the bot has stopped


# -- the bot process (this one) ---------------------------------------------------------------


class TimedClient:
    """The core client, noting when each chat's first token reaches the bot.

    The key is the question ("question N"), the last user message of each request.
    """

    def __init__(self, client: Any) -> None:
        self._client = client
        self.first_token: dict[str, float] = {}
        self.chat = self
        self.completions = self

    def create(self, messages: list[dict[str, str]], **kwargs: Any) -> Any:
        stream = self._client.chat.completions.create(messages, **kwargs)
        key = messages[-1]["content"]

        async def timed() -> Any:
            async for chunk in stream:
                if key not in self.first_token and chunk.choices and chunk.choices[0].delta.content:
                    self.first_token[key] = time.monotonic()
                yield chunk

        return timed()


async def run_bot(args: argparse.Namespace, llm_url: str, child: subprocess.Popen[str]) -> dict:
    from bots.config import Settings
    from bots.telegram import TelegramBot
    from core import AsyncClient
    from core.conversation import ConversationService
    from storage.factory import open_store

    assert child.stdout is not None and child.stdin is not None
    ready = (await asyncio.to_thread(child.stdout.readline)).split()
    if not ready or ready[0] != "READY":
        raise RuntimeError(f"the fake Bot API did not start: {ready!r}")
    telegram_url, token = ready[1], ready[2]
    with tempfile.TemporaryDirectory() as folder:
        settings = Settings(
            _env_file=None,
            telegram_bot_token=token,
            telegram_api_base=telegram_url,
            openai_base_url=llm_url,
            default_model="fake-model",
            database_url=f"sqlite:///{Path(folder) / 'bench.db'}",
        )
        store = await open_store(settings.database_url)
        client = TimedClient(AsyncClient(base_url=llm_url))
        service = ConversationService(store, client, settings)  # type: ignore[arg-type]
        bot = asyncio.create_task(TelegramBot(settings, service).run())
        try:
            polling = await asyncio.wait_for(asyncio.to_thread(child.stdout.readline), 30)
            if polling.strip() != "POLLING":
                raise RuntimeError(f"the bot did not start polling: {polling!r}")
            process = psutil.Process()
            cpu_before = sum(process.cpu_times()[:2])
            child.stdin.write("GO\n")
            child.stdin.flush()
            line = await asyncio.wait_for(
                asyncio.to_thread(child.stdout.readline), RUN_TIMEOUT + 30
            )
            cpu = sum(process.cpu_times()[:2]) - cpu_before
        finally:
            bot.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await bot
            await service.aclose()
            await store.close()
            child.stdin.write("\n")
            child.stdin.flush()
    if not line.startswith("RESULT "):
        raise RuntimeError(f"the fake Bot API gave no result: {line!r}")
    result = json.loads(line.split(" ", 1)[1])
    result["cpu"] = cpu
    result["first_token"] = client.first_token
    return result


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
        f"{args.delay * 1000:g} ms apart; edits >= 1 s apart (Telegram's pace)",
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chats", type=int, default=DEFAULT_CHATS)
    parser.add_argument("--pieces", type=int, default=DEFAULT_PIECES)
    parser.add_argument("--piece", default=DEFAULT_PIECE)
    parser.add_argument("--delay", type=float, default=DEFAULT_DELAY)
    parser.add_argument("--serve-telegram", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    expected = (args.piece * args.pieces).strip()
    if args.serve_telegram:
        asyncio.run(serve_telegram(args.chats, expected))
        return
    child_command = [
        sys.executable,
        "-m",
        "bench.telegram_load",
        "--serve-telegram",
        "--chats",
        str(args.chats),
        "--pieces",
        str(args.pieces),
        "--piece",
        args.piece,
    ]
    with fake_server(args.pieces, args.piece, args.delay) as llm_url:
        child = subprocess.Popen(
            child_command, cwd=REPO_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        try:
            result = asyncio.run(run_bot(args, llm_url, child))
        finally:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(10)
            if child.poll() is None:
                child.kill()
                child.wait()
    print("\n".join(report(args, result)))
    if result["complete"] != args.chats:
        sys.exit(1)


if __name__ == "__main__":
    main(sys.argv[1:])
