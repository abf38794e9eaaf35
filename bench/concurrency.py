"""1,000 concurrent streams through one `AsyncClient`: event-loop lag, CPU and memory.

The fake server runs in its own process and sends each piece after a delay, the way a model
produces tokens, so all streams are open together for several seconds. A ticker task asks to
wake every 10 ms and records how late it woke: that lateness is what every other task in a bot
(a Telegram update, a Discord heartbeat) would wait. The ticker also samples this process's RSS,
its CPU time and the chunks received so far, which gives the CPU cost per chunk while every
stream is flowing.

Streams start spread over `--ramp` seconds (a bot's requests arrive over time); `--ramp 0`
starts all of them in one instant, the worst case, where opening 1,000 connections at once
dominates the lag.

Run from the repository root: `python -m bench.concurrency [--streams N] [--ramp S]`.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import resource
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import psutil

from bench.common import NetworkGuard, fake_server_process, machine_report, percentile
from bots.app import tune_gc_for_streaming
from core import AsyncClient
from core.providers.http import POOL_LIMITS, close_shared_client

DEFAULT_STREAMS = 1000
#: 30 pieces 200 ms apart: every stream lasts about 6 s at 5 pieces/s, so 1,000 of them bring
#: 5,000 chunks/s. The CPU per chunk printed by the run says how far a core goes.
DEFAULT_PIECES = 30
DEFAULT_DELAY = 0.2
#: Starts spread over one second: 1,000 requests arriving within a second, all then overlapping.
DEFAULT_RAMP = 1.0
PIECE = "tok "
MODEL = "fake-model"
MESSAGES: list[dict[str, Any]] = [{"role": "user", "content": "Stream the benchmark answer."}]
TICK = 0.010
MB = 1024 * 1024

TARGET_LAG_P99_MS = 50.0
TARGET_RSS_MB = 300.0


class ChunkCounter:
    __slots__ = ("chunks",)

    def __init__(self) -> None:
        self.chunks = 0


@dataclass(frozen=True, slots=True)
class Tick:
    due: float
    lateness: float
    cpu: float
    chunks: int


@dataclass
class LagMonitor:
    """Wakes every `TICK` seconds; records each tick and the peak RSS seen."""

    counter: ChunkCounter
    ticks: list[Tick] = field(default_factory=list)
    peak_rss: int = 0

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        process = psutil.Process()
        while not stop.is_set():
            due = loop.time() + TICK
            await asyncio.sleep(TICK)
            lateness = loop.time() - due
            self.ticks.append(Tick(due, lateness, time.process_time(), self.counter.chunks))
            self.peak_rss = max(self.peak_rss, process.memory_info().rss)

    def window(self, start: float = float("-inf"), end: float = float("inf")) -> list[Tick]:
        """The ticks due within [start, end]: a stall that began earlier is not blamed on the
        window it spilled into."""
        return [tick for tick in self.ticks if start <= tick.due <= end]


class GcMonitor:
    """Times every garbage collection: a full collection stops the loop like any other work."""

    def __init__(self) -> None:
        self.total = 0.0
        self.longest = 0.0
        self.collections = [0, 0, 0]
        self._started = 0.0

    def __enter__(self) -> GcMonitor:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc_info: object) -> None:
        gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        pause = time.perf_counter() - self._started
        self.total += pause
        self.longest = max(self.longest, pause)
        self.collections[info["generation"]] += 1


@dataclass
class StreamResult:
    text: str
    started: float
    first_chunk: float
    finished: float


async def one_stream(client: AsyncClient, counter: ChunkCounter, wait: float) -> StreamResult:
    """Read every chunk's content, as a bot's streaming engine does."""
    await asyncio.sleep(wait)
    loop = asyncio.get_running_loop()
    started = loop.time()
    first_chunk = 0.0
    parts = []
    async for chunk in client.chat.completions.create(MESSAGES, model=MODEL, stream=True):
        content = chunk.choices[0].delta.content
        if content:
            if not parts:
                first_chunk = loop.time()
            parts.append(content)
            counter.chunks += 1
    return StreamResult("".join(parts), started, first_chunk, loop.time())


def summary(values: list[float]) -> str:
    return (
        f"p50 {percentile(values, 0.5):7.1f}  p99 {percentile(values, 0.99):7.1f}  "
        f"max {max(values):7.1f}"
    )


def lag_line(label: str, ticks: list[Tick]) -> str:
    return f"  {label} ({len(ticks)} ticks): {summary([t.lateness * 1000 for t in ticks])}"


async def run(streams: int, pieces: int, delay: float, ramp: float, tune_gc: bool) -> bool:
    """Run the streams and print the figures; True if every stream delivered its whole text."""
    expected = PIECE * pieces
    counter = ChunkCounter()
    with fake_server_process(pieces, PIECE, delay) as server:
        client = AsyncClient(base_url=server.base_url)
        # Warm-up: imports, the pool, the server's first request.
        warm = await one_stream(client, ChunkCounter(), 0.0)
        if warm.text != expected:
            raise RuntimeError("the warm-up stream came back incomplete")
        await close_shared_client()  # every measured stream opens its own connection
        gc.collect()
        if tune_gc:  # as `parley run` does at start-up
            tune_gc_for_streaming()
        process = psutil.Process()
        baseline_rss = process.memory_info().rss
        monitor = LagMonitor(counter)
        stop = asyncio.Event()
        ticker = asyncio.create_task(monitor.run(stop))
        await asyncio.sleep(TICK * 10)  # some idle ticks first: the quiet loop's lateness
        cpu_started = time.process_time()
        server_cpu_started = server.cpu_seconds()
        wall_started = time.perf_counter()
        with GcMonitor() as gc_monitor:
            results = await asyncio.gather(
                *(one_stream(client, counter, i * ramp / streams) for i in range(streams)),
                return_exceptions=True,
            )
        wall = time.perf_counter() - wall_started
        cpu = time.process_time() - cpu_started
        server_cpu = server.cpu_seconds() - server_cpu_started
        stop.set()
        await ticker
        await close_shared_client()

    failures = [r for r in results if isinstance(r, BaseException)]
    done = [r for r in results if isinstance(r, StreamResult)]
    complete = [r for r in done if r.text == expected]
    print(
        f"\n{streams} streams started over {ramp:g} s, {pieces} pieces of {PIECE!r} each "
        f"{delay * 1000:g} ms apart (ideal stream {(pieces - 1) * delay:.2f} s; "
        f"{streams / delay:,.0f} chunks/s while all flow); pool max_connections="
        f"{POOL_LIMITS.max_connections}, max_keepalive={POOL_LIMITS.max_keepalive_connections}; "
        f"gc: {'tuned as parley run does' if tune_gc else 'Python defaults'} {gc.get_threshold()}"
    )
    print(f"completed with full text: {len(complete)}/{streams}", end="")
    if failures:
        kinds = sorted({f"{type(f).__name__}: {f}" for f in failures})
        print(f"; {len(failures)} failed: {'; '.join(kinds)[:500]}", end="")
    if len(done) != len(complete):
        print(f"; {len(done) - len(complete)} incomplete", end="")
    print()
    if not complete:
        return False

    chunks = len(complete) * pieces
    print(
        f"wall {wall:.2f} s, {chunks:,} chunks; client CPU {cpu:.2f} s ({cpu / wall:.0%} of one "
        f"core), server CPU {server_cpu / wall:.0%} of one core"
    )
    first = [(r.first_chunk - r.started) * 1000 for r in complete]
    total = [r.finished - r.started for r in complete]
    print(f"time to first chunk, ms: {summary(first)}")
    print(f"stream duration, s:      p50 {statistics.median(total):7.2f}  max {max(total):7.2f}")
    print(
        f"garbage collection: {gc_monitor.total * 1000:.0f} ms in all, longest pause "
        f"{gc_monitor.longest * 1000:.1f} ms, collections by generation {gc_monitor.collections}"
    )

    # Steady state: every stream is flowing (all have their first chunk), none has finished.
    steady = monitor.window(max(r.first_chunk for r in complete), min(r.finished for r in complete))
    if len(steady) >= 2 and steady[-1].chunks > steady[0].chunks:
        spent = steady[-1].cpu - steady[0].cpu
        received = steady[-1].chunks - steady[0].chunks
        print(
            f"while all streams flow: {received / (steady[-1].due - steady[0].due):,.0f} "
            f"chunks/s, client CPU {spent / received * 1e6:.0f} us per chunk"
        )
    overall = monitor.window()
    print(f"event-loop lag (ticker every {TICK * 1000:g} ms), ms:")
    print(lag_line("whole run", overall))
    if steady:
        print(lag_line("all streams flowing", steady))
    peak_mb = monitor.peak_rss / MB
    # ru_maxrss is the kernel's high-water mark (KiB on Linux), so a peak between ticks counts.
    kernel_peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"RSS: before the streams {baseline_rss / MB:.0f} MB, peak sampled {peak_mb:.0f} MB, "
        f"kernel high-water mark {kernel_peak_mb:.0f} MB"
    )

    lag_p99 = percentile([t.lateness * 1000 for t in overall], 0.99)
    lag_ok = lag_p99 < TARGET_LAG_P99_MS
    rss_ok = max(peak_mb, kernel_peak_mb) < TARGET_RSS_MB
    all_ok = len(complete) == streams
    print(
        f"target: lag p99 < {TARGET_LAG_P99_MS:g} ms ({lag_p99:.1f}): "
        f"{'met' if lag_ok else 'MISSED'}; RSS < {TARGET_RSS_MB:g} MB "
        f"({max(peak_mb, kernel_peak_mb):.0f}): {'met' if rss_ok else 'MISSED'}; "
        f"all streams complete: {'met' if all_ok else 'MISSED'}"
    )
    return all_ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=DEFAULT_STREAMS)
    parser.add_argument("--pieces", type=int, default=DEFAULT_PIECES, help="pieces per stream")
    parser.add_argument("--delay", type=float, default=DEFAULT_DELAY, help="seconds between pieces")
    parser.add_argument(
        "--ramp", type=float, default=DEFAULT_RAMP, help="seconds over which the streams start"
    )
    parser.add_argument(
        "--default-gc",
        action="store_true",
        help="keep Python's GC thresholds instead of the ones `parley run` sets",
    )
    args = parser.parse_args()
    guard = NetworkGuard()
    guard.install()
    for line in machine_report():
        print(line)
    all_complete = asyncio.run(
        run(args.streams, args.pieces, args.delay, args.ramp, not args.default_gc)
    )
    if guard.foreign:
        print("network: NON-LOCAL ACCESS: " + "; ".join(sorted(set(guard.foreign))))
    else:
        print("network: every connect and lookup went to 127.0.0.1")
    # A missed speed target is a finding; a stream that lost text is a failure.
    sys.exit(0 if all_complete else 1)


if __name__ == "__main__":
    main()
