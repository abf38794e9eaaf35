"""Load on the Discord bot: five people mentioning it in one channel at the same moment.

Three processes, as in `bench.telegram_load`, so each figure belongs to the bot alone: the fake
LLM server (`tests.fakes.llm_server`, 1,500-character answers streamed over about 4.3 s), the
fake Discord (`tests.fakes.discord_api`, run by this script in `--serve-discord` mode, with
Discord's per-channel message bucket of 5 creates and edits per 5 s) and the bot
(`bots.discord.DiscordBot` with the real conversation service on SQLite, at its real pace).

Reported per reply: first visible text counted from the question being posted and from the
model's first token reaching the bot (the fake's time of storing the reply's first message;
both processes read the same system-wide monotonic clock), the time until the full answer was
stored, edits; for the channel: the peak writes in any 5 s and the 429s served (discord.py
waits on the bucket headers, so a 429 means the bot went over anyway).

Run from the repository root: `python -m bench.discord_load [--people 5]`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from typing import Any

from bench.common import (
    await_go,
    fake_server,
    group_report,
    hand_over,
    run_with_fake_platform,
)

PEOPLE = 5
PIECES = 150
PIECE = "word word "
DELAY = 0.029
#: Discord's bucket for creating and editing messages in one channel: 5 per 5 s.
CHANNEL_BUCKET = (5, 5.0)
#: Seconds the whole load may take before the run is declared failed.
RUN_TIMEOUT = 180.0
FIRST_USER_ID = 1_000_000_000_000_001_000


# -- the fake Discord process -----------------------------------------------------------------


async def serve_discord(people: int, expected: str) -> None:
    """Child mode: print READY, then CONNECTED once the bot is on the gateway; post every
    question on GO; print RESULT when every reply is complete (or the run timed out)."""
    from tests.fakes.discord_api import BOT_ID, GENERAL_ID, FakeDiscord, Message

    async with FakeDiscord(channel_bucket=CHANNEL_BUCKET) as fake:
        for i in range(people):
            fake.add_member(FIRST_USER_ID + i, f"User {i}")
        fields = [fake.api_base, fake.gateway_url, fake.token]
        if not await await_go(fields, fake.wait_connected(RUN_TIMEOUT), "CONNECTED"):
            return
        asked: dict[int, float] = {}  # question message id -> when it was posted
        started = time.monotonic()
        for i in range(people):
            asked_at = time.monotonic()
            question = await fake.push_message(
                f"<@{BOT_ID}> question {i}", author=FIRST_USER_ID + i
            )
            asked[question.id] = asked_at

        def answers() -> dict[int, list[Message]]:
            """The bot's messages per question: the first replies to it, a continuation to
            the bot's message before it."""
            root: dict[int, int] = {}
            chains: dict[int, list[Message]] = {q: [] for q in asked}
            for message in fake.bot_messages(GENERAL_ID):
                target = message.reference_id or 0
                owner = target if target in asked else root.get(target)
                if owner is not None:
                    root[message.id] = owner
                    chains[owner].append(message)
            return chains

        def complete(chain: list[Message]) -> bool:
            return any(m.content.strip() == expected for m in chain)

        with contextlib.suppress(TimeoutError):
            await fake.wait_for(lambda: all(map(complete, answers().values())), RUN_TIMEOUT)
        finished = time.monotonic()
        replies: list[dict[str, Any]] = []
        for i, (question_id, chain) in enumerate(answers().items()):
            final = [at for m in chain for at in _times_showing(m, expected)]
            replies.append(
                {
                    "question": f"question {i}",
                    "asked": asked[question_id],
                    "first_send": min((m.created_at for m in chain), default=None),
                    "final": min(final, default=None),
                    "edits": sum(len(m.edits) for m in chain),
                    "complete": complete(chain),
                }
            )
        result = {
            "started": started,
            "finished": finished,
            "complete": sum(bool(r["complete"]) for r in replies),
            "replies": replies,
            "peak_writes": fake.max_writes_in_window(GENERAL_ID, CHANNEL_BUCKET[1]),
            "writes": len(fake.writes(GENERAL_ID)),
            "refusals": fake.rate_limit_refusals(GENERAL_ID),
        }
        await hand_over(result)


def _times_showing(message: Any, text: str) -> list[float]:
    """When `message` came to read `text` (the fake, unlike Discord, keeps the whitespace
    around it): at its creation if never edited, else at the edits that set it."""
    if not message.edits:
        return [message.created_at] if message.content.strip() == text else []
    return [
        at
        for content, at in zip(message.edits, message.edit_times, strict=True)
        if content.strip() == text
    ]


# -- the bot process (this one) ---------------------------------------------------------------


def run_bot(llm_url: str, child_command: list[str]) -> dict:
    from bots.discord import DiscordBot

    return run_with_fake_platform(
        child_command,
        llm_url,
        settings_from=lambda fields: {
            "discord_api_base": fields[0],
            "discord_gateway_url": fields[1],
            "discord_bot_token": fields[2],
        },
        bot_for=DiscordBot,
        ready="CONNECTED",
        timeout=RUN_TIMEOUT,
    )


def report(args: argparse.Namespace, result: dict) -> list[str]:
    limit, per = CHANNEL_BUCKET
    headline = (
        f"discord_load: {args.people} people in one channel at once; each answer "
        f"{len(args.piece * args.pieces)} characters in {args.pieces} pieces "
        f"{args.delay * 1000:g} ms apart; the fake's channel bucket: {limit} creates and edits "
        f"per {per:g} s; the bot at its real pace"
    )
    return group_report(
        args, result, headline=headline, place="channel", window=per, refusals="served"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=PEOPLE)
    parser.add_argument("--pieces", type=int, default=PIECES)
    parser.add_argument("--piece", default=PIECE)
    parser.add_argument("--delay", type=float, default=DELAY)
    parser.add_argument("--serve-discord", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    expected = (args.piece * args.pieces).strip()
    if args.serve_discord:
        asyncio.run(serve_discord(args.people, expected))
        return
    child_command = [
        sys.executable,
        "-m",
        "bench.discord_load",
        "--serve-discord",
        "--people",
        str(args.people),
        "--pieces",
        str(args.pieces),
        "--piece",
        args.piece,
    ]
    with fake_server(args.pieces, args.piece, args.delay) as llm_url:
        result = run_bot(llm_url, child_command)
    print("\n".join(report(args, result)))
    if result["complete"] != args.people:
        sys.exit(1)


if __name__ == "__main__":
    main(sys.argv[1:])
