"""Image benchmark (not a test): a 12-megapixel JPEG from raw bytes to the model-ready data URL.

    python -m bench.images              # 10 one-at-a-time runs, then 20 photos at once
    python -m bench.images --runs 30 --at-once 20

The photo is made here (a gradient with grain, 4,000 x 3,000, JPEG quality 92: a few MB, as a
phone's are), so nothing is downloaded. What is timed is what Parley does between having the
bytes and sending the request: `core.images.prepare_image` (decode, downscale to 2,048 px,
re-encode, in a worker thread) and `data_url` (base64). The download itself is the platform's
and is not in these figures.

1. One at a time: per-photo latency, p50 and max; beside it, in the same run, llmcord's way
   (the bytes as the user sent them, base64-encoded into the data URL with no decoding), its
   time and the size of what each sends to the model.
2. `--at-once` photos arriving together (an album, a busy group): wall time until the last is
   ready, and the process's peak resident memory above what it held before, sampled every 2 ms
   (Pillow allocates image memory in C, where tracemalloc does not look, so RSS it is).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import statistics
import time

from PIL import Image, ImageFilter

from bench.common import PeakRSS, machine_report, percentile
from core.images import data_url, prepare_image

WIDTH, HEIGHT = 4000, 3000


def make_photo() -> bytes:
    """A 12-megapixel JPEG with a photo's kind of detail: smooth areas and sensor grain, so
    neither decoding nor re-encoding gets the easy ride a flat colour would give."""
    gradient = Image.linear_gradient("L").resize((WIDTH, HEIGHT))
    channels = [
        Image.blend(
            gradient.rotate(angle, expand=False), Image.effect_noise((WIDTH, HEIGHT), 40), 0.3
        )
        for angle in (0, 90, 180)
    ]
    photo = Image.merge("RGB", channels).filter(ImageFilter.SMOOTH)
    out = io.BytesIO()
    photo.save(out, "JPEG", quality=92)
    return out.getvalue()


async def to_data_url(raw: bytes) -> str:
    return data_url(await prepare_image(raw))


def llmcord_data_url(raw: bytes) -> str:
    """What llmcord sends for an image attachment: the downloaded bytes, base64, as they are
    (llmcord.py: `f"data:{att.content_type};base64,{b64encode(resp.content).decode()}"`)."""
    return f"data:image/jpeg;base64,{base64.b64encode(raw).decode('utf-8')}"


def mb(size: float) -> str:
    return f"{size / (1024 * 1024):.1f} MB"


async def run(args: argparse.Namespace) -> None:
    for line in machine_report():
        print(line)
    print(f"pillow: {Image.__version__}")
    raw = make_photo()
    url = await to_data_url(raw)  # warm-up: thread pool, codecs
    print(f"photo: {WIDTH}x{HEIGHT} JPEG, {mb(len(raw))}; data URL {mb(len(url))}")

    latencies = []
    for _ in range(args.runs):
        started = time.perf_counter()
        await to_data_url(raw)
        latencies.append(time.perf_counter() - started)
    print(
        f"one at a time ({args.runs} runs): p50 {statistics.median(latencies) * 1000:.0f} ms, "
        f"p90 {percentile(latencies, 0.9) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms"
    )
    peer = []
    for _ in range(args.runs):
        started = time.perf_counter()
        raw_url = llmcord_data_url(raw)
        peer.append(time.perf_counter() - started)
    ours, theirs = statistics.median(latencies), statistics.median(peer)
    print(
        f"llmcord's way, same photo ({args.runs} runs): p50 {theirs * 1000:.0f} ms, data URL "
        f"{mb(len(raw_url))}; Parley takes {ours / theirs:.0f}x the time and sends "
        f"{len(url) / len(raw_url):.2f}x the bytes ({mb(len(url))})"
    )

    photos = [bytes(raw) for _ in range(args.at_once)]  # distinct buffers, as downloads are
    with PeakRSS() as memory:
        started = time.perf_counter()
        urls = await asyncio.gather(*(to_data_url(photo) for photo in photos))
        elapsed = time.perf_counter() - started
    assert len(urls) == args.at_once
    print(
        f"{args.at_once} at once: all ready in {elapsed * 1000:.0f} ms "
        f"({elapsed / args.at_once * 1000:.0f} ms per photo); peak RSS {mb(memory.peak)}, "
        f"{mb(memory.peak - memory.before)} above the {mb(memory.before)} held before "
        "(the raw photos and their data URLs included)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="one-at-a-time runs (default 10)")
    parser.add_argument(
        "--at-once", type=int, default=20, help="photos prepared together (default 20)"
    )
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
