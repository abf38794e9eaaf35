"""Streaming throughput of Parley's core against the openai SDK, g4f and raw httpx.

All four clients stream the same 2,000-piece answer from the fake server, which runs in its own
process so it never competes for the client's event loop. Rounds alternate the clients (the
order rotates every round) so machine noise, which is large on a shared 2-core box, hits all of
them alike; the figure per client is the median over rounds. Every consumer reads each chunk's
delta content and the joined text is checked, so no client can win by skipping work.

Run from the repository root: `python -m bench.core_stream [--rounds N]`.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import g4f.debug
import httpx
from g4f.client import AsyncClient as G4FAsyncClient
from g4f.client.factory import create_custom_provider
from g4f.requests.aiohttp import close_shared_connectors
from openai import AsyncOpenAI

from bench.common import NetworkGuard, fake_server, machine_report, percentile
from core import AsyncClient
from core.providers.http import close_shared_client

PIECES = 2000
PIECE = "tok "
#: The non-streaming probe is a small answer, so the figure is overhead, not parsing.
SMALL_PIECES = 8
MODEL = "fake-model"
MESSAGES: list[dict[str, Any]] = [{"role": "user", "content": "Stream the benchmark answer."}]
DEFAULT_ROUNDS = 40
DEFAULT_CALLS = 400
WARMUP_CALLS = 20

#: Targets from SPEC "Quality bars" and the benchmark brief.
TARGET_VS_OPENAI = 2.5
TARGET_VS_HTTPX = 0.85
TARGET_NONSTREAM_MS = 1.0

#: A consumer streams one answer and returns (chunks with content, joined text).
Consumer = Callable[[], Awaitable[tuple[int, str]]]


class Contenders:
    """The four clients, each built once and reused, as an application would."""

    def __init__(self, base_url: str, small_url: str) -> None:
        # g4f starts a thread that asks PyPI for its latest version on the first request.
        g4f.debug.version_check = False
        self.parley = AsyncClient(base_url=base_url)
        self.parley_small = AsyncClient(base_url=small_url)
        self.openai = AsyncOpenAI(base_url=base_url, api_key="x")
        # `models` set: otherwise g4f asks the server's /models on first use (still local).
        provider = create_custom_provider(
            base_url, api_key="x", name="LocalFake", default_model=MODEL, models=[MODEL]
        )
        self.g4f = G4FAsyncClient(provider=provider)
        self.http = httpx.AsyncClient(timeout=None, trust_env=False)
        self.url = f"{base_url}/chat/completions"
        self.small_url = f"{small_url}/chat/completions"
        # The same body every client sends: usage requested, as Parley and g4f always do.
        self.body = {
            "model": MODEL,
            "messages": MESSAGES,
            "stream": True,
            "stream_options": {"include_usage": True},
        }

    def consumers(self) -> dict[str, Consumer]:
        return {
            "parley": self.stream_parley,
            "openai": self.stream_openai,
            "g4f": self.stream_g4f,
            "httpx": self.stream_httpx,
        }

    async def stream_parley(self) -> tuple[int, str]:
        parts = []
        stream = self.parley.chat.completions.create(MESSAGES, model=MODEL, stream=True)
        async for chunk in stream:
            content = chunk.choices[0].delta.content
            if content:
                parts.append(content)
        return len(parts), "".join(parts)

    async def stream_openai(self) -> tuple[int, str]:
        parts = []
        stream = await self.openai.chat.completions.create(
            model=MODEL,
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
        async for chunk in stream:
            if chunk.choices:
                content = chunk.choices[0].delta.content
                if content:
                    parts.append(content)
        return len(parts), "".join(parts)

    async def stream_g4f(self) -> tuple[int, str]:
        parts = []
        # g4f may annotate the messages it is given; it gets its own copies.
        messages = [dict(message) for message in MESSAGES]
        stream = self.g4f.chat.completions.create(messages, model=MODEL, stream=True)
        async for chunk in stream:
            content = chunk.choices[0].delta.content
            if content:
                parts.append(content)
        return len(parts), "".join(parts)

    async def stream_httpx(self) -> tuple[int, str]:
        """The floor: httpx's own line iterator and one `json.loads` per `data:` line."""
        parts = []
        async with self.http.stream("POST", self.url, json=self.body) as response:
            response.raise_for_status()
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                choices = json.loads(data).get("choices")
                if choices:
                    content = choices[0]["delta"].get("content")
                    if content:
                        parts.append(content)
        return len(parts), "".join(parts)

    async def complete_parley(self) -> str:
        completion = await self.parley_small.chat.completions.create(MESSAGES, model=MODEL)
        return completion.choices[0].message.content or ""

    async def complete_httpx(self) -> str:
        body = {"model": MODEL, "messages": MESSAGES}
        response = await self.http.post(self.small_url, json=body)
        response.raise_for_status()
        return response.json()["choices"][0]["message"]["content"]

    async def aclose(self) -> None:
        await self.openai.close()
        await self.http.aclose()
        await close_shared_connectors()
        await close_shared_client()


class Sample:
    """One stream: wall-clock chunks/s and this process's CPU time per chunk."""

    __slots__ = ("cpu_us_per_chunk", "rate")

    def __init__(self, chunks: int, seconds: float, cpu_seconds: float) -> None:
        self.rate = chunks / seconds
        self.cpu_us_per_chunk = cpu_seconds / chunks * 1e6


async def timed_stream(name: str, consume: Consumer) -> Sample:
    """Time one complete stream and check every chunk arrived."""
    gc.collect()
    cpu_started = time.process_time()
    started = time.perf_counter()
    chunks, text = await consume()
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    if chunks != PIECES or text != PIECE * PIECES:
        raise RuntimeError(
            f"{name}: incomplete stream: {chunks} chunks, {len(text)} chars "
            f"(expected {PIECES} and {len(PIECE) * PIECES})"
        )
    return Sample(chunks, elapsed, cpu)


async def measure_streams(contenders: Contenders, rounds: int) -> dict[str, list[Sample]]:
    """One stream per client per round, the order rotating every round.

    Rounds are short (well under a second) so a burst of load from another process lands on
    neighbouring samples of every client, and the medians and per-round ratios shrug it off.
    """
    consumers = list(contenders.consumers().items())
    for name, consume in consumers:  # warm-up: connections, imports, caches
        await timed_stream(name, consume)
    samples: dict[str, list[Sample]] = {name: [] for name, _ in consumers}
    for round_index in range(rounds):
        shift = round_index % len(consumers)
        for name, consume in consumers[shift:] + consumers[:shift]:
            samples[name].append(await timed_stream(name, consume))
    return samples


async def measure_nonstream(contenders: Contenders, calls: int) -> dict[str, list[float]]:
    """Latency in ms of one small completion, Parley and raw httpx called alternately."""
    expected = PIECE * SMALL_PIECES
    probes = {"parley": contenders.complete_parley, "httpx": contenders.complete_httpx}
    latencies: dict[str, list[float]] = {name: [] for name in probes}
    for index in range(WARMUP_CALLS + calls):
        order = list(probes.items())
        if index % 2:
            order.reverse()
        for name, call in order:
            started = time.perf_counter()
            text = await call()
            elapsed = time.perf_counter() - started
            if text != expected:
                raise RuntimeError(f"{name}: wrong non-streaming answer {text!r}")
            if index >= WARMUP_CALLS:
                latencies[name].append(elapsed * 1000)
    return latencies


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def ratio_line(label: str, ours: list[Sample], theirs: list[Sample]) -> float:
    """Print the ratio of medians and, as a noise check, the median of per-round ratios."""
    ratio = statistics.median(s.rate for s in ours) / statistics.median(s.rate for s in theirs)
    paired = statistics.median(a.rate / b.rate for a, b in zip(ours, theirs, strict=True))
    cpu = statistics.median(b.cpu_us_per_chunk for b in theirs) / statistics.median(
        a.cpu_us_per_chunk for a in ours
    )
    print(f"parley / {label:<11} {ratio:6.2f}x  (per-round median {paired:.2f}x, CPU {cpu:.2f}x)")
    return ratio


def report(samples: dict[str, list[Sample]], latencies: dict[str, list[float]]) -> None:
    rounds = len(samples["parley"])
    print(
        f"\nStreaming: {PIECES} pieces of {PIECE!r} per answer; {rounds} rounds of one stream per "
        "client, order rotating"
    )
    print(f"{'client':<8} {'median chunks/s':>16} {'min':>10} {'max':>10} {'CPU us/chunk':>13}")
    for name, values in samples.items():
        rates = [s.rate for s in values]
        cpu = statistics.median(s.cpu_us_per_chunk for s in values)
        print(
            f"{name:<8} {statistics.median(rates):>16,.0f} {min(rates):>10,.0f} "
            f"{max(rates):>10,.0f} {cpu:>13.2f}"
        )
    ours = samples["parley"]
    vs_openai = ratio_line("openai SDK", ours, samples["openai"])
    vs_g4f = ratio_line("g4f", ours, samples["g4f"])
    vs_httpx = ratio_line("raw httpx", ours, samples["httpx"])
    print(f"target: >= {TARGET_VS_OPENAI}x openai SDK: {verdict(vs_openai >= TARGET_VS_OPENAI)}")
    print(f"target: ahead of g4f: {verdict(vs_g4f > 1)}")
    print(f"target: >= {TARGET_VS_HTTPX:.0%} of raw httpx ({vs_httpx:.0%}): ", end="")
    print(verdict(vs_httpx >= TARGET_VS_HTTPX))

    calls = len(latencies["parley"])
    print(f"\nNon-streaming: {SMALL_PIECES}-piece answer, {calls} calls each, alternating; ms")
    print(f"{'client':<8} {'median':>8} {'p10':>8} {'p90':>8}")
    for name, values in latencies.items():
        print(
            f"{name:<8} {statistics.median(values):>8.3f} {percentile(values, 0.1):>8.3f} "
            f"{percentile(values, 0.9):>8.3f}"
        )
    overhead = statistics.median(latencies["parley"]) - statistics.median(latencies["httpx"])
    print(f"parley - raw httpx (medians): {overhead:+.3f} ms; ", end="")
    print(f"target within {TARGET_NONSTREAM_MS:g} ms: {verdict(overhead <= TARGET_NONSTREAM_MS)}")


async def run(rounds: int, calls: int) -> None:
    with (
        fake_server(PIECES, PIECE) as base_url,
        fake_server(SMALL_PIECES, PIECE) as small_url,
    ):
        contenders = Contenders(base_url, small_url)
        try:
            samples = await measure_streams(contenders, rounds)
            latencies = await measure_nonstream(contenders, calls)
        finally:
            await contenders.aclose()
    report(samples, latencies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS)
    parser.add_argument("--calls", type=int, default=DEFAULT_CALLS, help="non-streaming calls")
    args = parser.parse_args()
    guard = NetworkGuard()
    guard.install()
    for line in machine_report():
        print(line)
    started = time.perf_counter()
    asyncio.run(run(args.rounds, args.calls))
    print(f"\nwall time: {time.perf_counter() - started:.1f} s")
    if guard.foreign:
        print("network: NON-LOCAL ACCESS: " + "; ".join(sorted(set(guard.foreign))))
    else:
        print("network: every connect and lookup went to 127.0.0.1")


if __name__ == "__main__":
    main()
