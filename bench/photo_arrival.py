"""A photo's way through the Telegram bot: from its arrival to the model request.

    python -m bench.photo_arrival               # 10 photos one after another, then 20 at once
    python -m bench.photo_arrival --runs 5 --at-once 10

Three processes, as in `bench.telegram_load`: the fake LLM server, the fake Bot API (this
script in `--serve-telegram` mode) and the bot (`bots.telegram.TelegramBot`, the real
conversation service on SQLite). Each photo is a 12-megapixel JPEG (4,000 x 3,000, 2.4 MB, made
by `bench.images.make_photo`) sent as a file, as Telegram delivers a photo at full size
(Telegram's own photo sizes stop at 2,560 px), with the caption "question N", each from its own
private chat.

Timed per photo, on the machine's monotonic clock that all processes share: from the fake
queueing the update to the bot calling the model with the photo in the request (`getUpdates`,
`getFile`, the download over HTTP, `core.images` decoding, turning upright, downscaling to
2,048 px and re-encoding, storing it in SQLite, the context with its data URL). The bot
process's peak resident memory is sampled every 2 ms while the photos are in flight.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time

from bench.common import (
    await_go,
    fake_server,
    hand_over,
    machine_report,
    percentile,
    run_with_fake_platform,
)

#: Seconds the whole load may take before the run is declared failed.
RUN_TIMEOUT = 300.0
FIRST_USER_ID = 20_000
ANSWER_PIECE = "seen "
ANSWER_PIECES = 2


async def serve_telegram(photos: int, together: bool, expected: str) -> None:
    """Child mode: print READY, send the photos on GO (all at once, or each after the
    previous one's answer), print RESULT when every photo is answered."""
    from bench.images import make_photo
    from tests.fakes.telegram_api import FakeTelegramAPI, user

    raw = make_photo()
    async with FakeTelegramAPI() as tg:
        polling = tg.wait_calls("getUpdates", ok=None, timeout=RUN_TIMEOUT)
        if not await await_go([tg.base_url, tg.token], polling, "POLLING"):
            return
        people = [user(FIRST_USER_ID + i, f"User {i}") for i in range(photos)]
        rooms = [tg.private_chat(person) for person in people]
        arrived: dict[str, float] = {}

        def answered(room: object) -> bool:
            return any(m.text == expected for m in room.bot_messages())  # type: ignore[attr-defined]

        async def send(i: int) -> None:
            arrived[f"question {i}"] = time.monotonic()
            await tg.document_message(
                rooms[i],
                people[i],
                raw,
                file_name=f"IMG_{i:04d}.jpg",
                mime_type="image/jpeg",
                caption=f"question {i}",
            )

        with contextlib.suppress(TimeoutError):
            if together:
                for i in range(photos):
                    await send(i)
                await tg.wait_until(lambda: all(map(answered, rooms)), RUN_TIMEOUT)
            else:
                for i in range(photos):
                    await send(i)
                    await tg.wait_until(lambda i=i: answered(rooms[i]), RUN_TIMEOUT)
        result = {
            "arrived": arrived,
            "answered": sum(map(answered, rooms)),
            "photo_bytes": len(raw),
            "failed_calls": [
                f"{c.method}: {c.error}"
                for c in tg.calls
                if c.done and not c.ok and c.method != "getUpdates"
            ],
        }
        await hand_over(result)


def run_bot(llm_url: str, photos: int, together: bool) -> dict:
    from bots.telegram import TelegramBot

    command = [
        sys.executable,
        "-m",
        "bench.photo_arrival",
        "--serve-telegram",
        "--photos",
        str(photos),
        *(["--together"] if together else []),
    ]
    return run_with_fake_platform(
        command,
        llm_url,
        settings_from=lambda fields: {
            "telegram_api_base": fields[0],
            "telegram_bot_token": fields[1],
            # A model the presets know sees images, so the photo goes to it.
            "default_model": "gpt-4o",
        },
        bot_for=TelegramBot,
        ready="POLLING",
        timeout=RUN_TIMEOUT,
    )


def report(label: str, photos: int, result: dict) -> list[str]:
    delays = [
        (result["requested"][key] - at) * 1000
        for key, at in result["arrived"].items()
        if key in result["requested"]
    ]
    mb = 1024 * 1024
    lines = [
        f"{label}: {result['answered']}/{photos} photos answered; "
        f"failed Bot API calls: {result['failed_calls'] or 'none'}"
    ]
    if delays:
        lines.append(
            f"  arrival -> model request: p50 {percentile(delays, 0.5):.0f} ms, "
            f"p90 {percentile(delays, 0.9):.0f} ms, max {max(delays):.0f} ms (n={len(delays)})"
        )
    lines.append(
        f"  bot process RSS: peak {result['rss_peak'] / mb:.0f} MB, "
        f"{(result['rss_peak'] - result['rss_before']) / mb:.0f} MB above the "
        f"{result['rss_before'] / mb:.0f} MB it held before; CPU {result['cpu']:.1f} s"
    )
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="photos one after another")
    parser.add_argument("--at-once", type=int, default=20, help="photos sent together")
    parser.add_argument("--serve-telegram", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--photos", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--together", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    expected = (ANSWER_PIECE * ANSWER_PIECES).strip()
    if args.serve_telegram:
        asyncio.run(serve_telegram(args.photos, args.together, expected))
        return
    lines = [
        "photo_arrival: 12-megapixel JPEGs (4000x3000, sent as files) through the Telegram bot"
    ]
    ok = True
    with fake_server(ANSWER_PIECES, ANSWER_PIECE) as llm_url:
        for label, photos, together in (
            (f"{args.runs} one after another", args.runs, False),
            (f"{args.at_once} at once", args.at_once, True),
        ):
            result = run_bot(llm_url, photos, together)
            lines += report(label, photos, result)
            ok = ok and result["answered"] == photos
    print("\n".join(lines + machine_report()))
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main(sys.argv[1:])
