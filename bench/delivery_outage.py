"""What the user ends up seeing when the Bot API fails in the middle of a reply (issue 9).

A real `parley run` child talks to the fake Bot API and the fake model, both on 127.0.0.1. The
model streams a 1,500-character reply over 3 s; once a third of it is on screen the fake Bot
API answers every call with 502, until `--window` seconds after the model finished. Then the
script waits `--settle` seconds for the bot to catch up and reports how many characters of the
reply the user's message shows, when it got them, and what the database says.

    python -m bench.delivery_outage            # the issue's scenario: 502 until 8 s after the end
    python -m bench.delivery_outage --window 3

Run from a checkout's root: the child runs that checkout's code.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sqlite3
import tempfile
import time
from pathlib import Path

from tests.cli_support import start_parley
from tests.fakes.llm_server import FakeLLMServer, Script
from tests.fakes.telegram_api import FakeTelegramAPI, user

ALICE = user(1001, "Alice")
TEXT = " ".join(f"w{i:04d}" for i in range(300))[:1499] + "."
PIECES = [TEXT[i : i + 50] for i in range(0, len(TEXT), 50)]
#: Seconds any one step may take before the run is called failed.
STEP_TIMEOUT = 30.0


def database_row(database: Path) -> str:
    with contextlib.closing(sqlite3.connect(database)) as db:
        columns = [row[1] for row in db.execute("PRAGMA table_info(messages)")]
        pending = ", delivery_pending" if "delivery_pending" in columns else ""
        row = db.execute(
            f"SELECT status, length(text){pending} FROM messages WHERE role = 'assistant'"
        ).fetchone()
    return ", ".join(
        f"{name}={value}" for name, value in zip(["status", "chars", "pending"], row, strict=False)
    )


async def measure(window: float, settle: float, extra_env: dict[str, str]) -> None:
    folder = Path(tempfile.mkdtemp(prefix="parley-outage-"))
    database = folder / "parley.db"
    async with FakeTelegramAPI() as tg, FakeLLMServer() as llm:
        llm.enqueue(Script(pieces=PIECES, delay=0.1))
        env = {
            "TELEGRAM_BOT_TOKEN": tg.token,
            "TELEGRAM_API_BASE": tg.base_url,
            "OPENAI_BASE_URL": llm.base_url,
            "DEFAULT_MODEL": "fake-model",
            "DATABASE_URL": f"sqlite:///{database}",
            **extra_env,
        }
        child = await start_parley("run", env=env, cwd=folder, merge_stderr=True)
        try:
            await tg.wait_calls("getUpdates", ok=None, timeout=STEP_TIMEOUT)
            chat = tg.private_chat(ALICE)
            await tg.message(chat, ALICE, "a long answer, please")
            message = await tg.wait_until(
                lambda: next((m for m in chat.bot_messages() if len(m.text or "") >= 500), None),
                STEP_TIMEOUT,
            )
            tg.start_outage()
            print(f"502 from {len(message.text or '')} characters on screen")
            await llm.wait_until_no_active_streams(STEP_TIMEOUT)
            await asyncio.sleep(window)  # the outage lasts this long after the model finished
            tg.end_outage()
            back = time.monotonic()
            print(
                f"API back {window:g} s after the model finished; {len(message.text or '')} shown"
            )
            with contextlib.suppress(TimeoutError):
                await tg.wait_until(lambda: message.text == TEXT, settle)
            shown = len(message.text or "")
            when = message.history[-1][2] - back
            print(
                f"user sees {shown} of {len(TEXT)} characters"
                + (f", complete {when:.1f} s after the API came back" if shown == len(TEXT) else "")
            )
        finally:
            with contextlib.suppress(ProcessLookupError):
                child.terminate()
            out, _ = await asyncio.wait_for(child.communicate(), STEP_TIMEOUT)
        print(f"database: {database_row(database)}")
        lines = out.decode(errors="replace").splitlines()
        interesting = ("reply message", "gave up", "Traceback", "failed (")
        print(f"log: {len(lines)} lines; about delivery:")
        for line in lines:
            if any(word in line for word in interesting):
                print("   ", " ".join(line.split())[:160])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--window", type=float, default=8.0, help="outage after the model ends")
    parser.add_argument("--settle", type=float, default=40.0, help="wait for the bot afterwards")
    parser.add_argument("--delivery-timeout", help="DELIVERY_TIMEOUT_SECONDS for the child")
    args = parser.parse_args()
    extra = {"COLUMNS": "400"}
    if args.delivery_timeout:
        extra["DELIVERY_TIMEOUT_SECONDS"] = args.delivery_timeout
    asyncio.run(measure(args.window, args.settle, extra))


if __name__ == "__main__":
    main()
