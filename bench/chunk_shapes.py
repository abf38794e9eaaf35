"""CPU per streamed chunk of the two shapes OpenAI-compatible servers give a content chunk.

OpenAI sends `"finish_reason": null` on every content chunk; LiteLLM's proxy leaves the key
out. Both are the common case and both should take the provider's inline fast path. The bytes
are fed from memory through the real provider and client (no sockets, no server), so the
figure is the core's own CPU per chunk and the difference between shapes is the parser's.

Run from the repository root: `python -m bench.chunk_shapes [--pieces N] [--rounds N]`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import statistics
import time
from collections.abc import AsyncIterator
from typing import Any

from core import AsyncClient
from core.providers.openai_compatible import OpenAICompatible
from core.redact import Redactor

PIECES = 2000
PIECE = "tok "
#: Events per simulated network read, as the fake server batches them.
EVENTS_PER_READ = 64
DEFAULT_ROUNDS = 30
_HEAD = {
    "id": "chatcmpl-bench",
    "created": 1767225600,
    "model": "bench-model",
    "object": "chat.completion.chunk",
    "system_fingerprint": None,
}
#: One content chunk per shape, as each server writes it.
SHAPES = {
    "openai": {"index": 0, "delta": {"content": PIECE}, "logprobs": None, "finish_reason": None},
    "litellm": {"index": 0, "delta": {"content": PIECE, "role": "assistant"}},
}


def _event(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def sse_body(shape: str, pieces: int) -> list[bytes]:
    """The whole stream, cut into reads of `EVENTS_PER_READ` events."""
    events = [_event({**_HEAD, "choices": [SHAPES[shape]]})] * pieces
    events.append(
        _event({**_HEAD, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    )
    usage = {"prompt_tokens": 5, "completion_tokens": pieces, "total_tokens": pieces + 5}
    events.append(_event({**_HEAD, "choices": [], "usage": usage}))
    events.append(b"data: [DONE]\n\n")
    step = EVENTS_PER_READ
    return [b"".join(events[i : i + step]) for i in range(0, len(events), step)]


class _MemoryResponse:
    def __init__(self, reads: list[bytes]) -> None:
        self._reads = reads

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        for read in self._reads:
            yield read


class _MemoryExchange:
    """What `OpenAICompatible._read` needs of an `Exchange`, answering from memory."""

    redact = Redactor(None)

    def __init__(self, reads: list[bytes]) -> None:
        self._reads = reads

    @contextlib.asynccontextmanager
    async def open(self) -> AsyncIterator[_MemoryResponse]:
        yield _MemoryResponse(self._reads)

    def is_stream(self, response: _MemoryResponse) -> bool:
        return True


class _MemoryProvider:
    working = True
    supports_stream = True

    def __init__(self, reads: list[bytes]) -> None:
        self._reads = reads
        self._reader = OpenAICompatible("Bench", "http://127.0.0.1:9/v1")

    def create_async_generator(self, model: str, messages: Any, **_: Any) -> AsyncIterator[Any]:
        return self._reader._read(_MemoryExchange(self._reads))  # type: ignore[arg-type]


async def cpu_us_per_chunk(client: AsyncClient, pieces: int) -> float:
    gc.collect()
    started = time.process_time()
    text = []
    async for chunk in client.chat.completions.create("hi", stream=True):
        if chunk.choices[0].delta.content:
            text.append(chunk.choices[0].delta.content)
    cpu = time.process_time() - started
    if "".join(text) != PIECE * pieces:
        raise RuntimeError("incomplete stream")
    return cpu / pieces * 1e6


async def run(rounds: int, pieces: int) -> None:
    clients = {shape: AsyncClient(_MemoryProvider(sse_body(shape, pieces))) for shape in SHAPES}
    samples: dict[str, list[float]] = {shape: [] for shape in SHAPES}
    for client in clients.values():  # warm-up
        await cpu_us_per_chunk(client, pieces)
    for _ in range(rounds):  # alternate so machine noise hits both shapes alike
        for shape, client in clients.items():
            samples[shape].append(await cpu_us_per_chunk(client, pieces))
    base = statistics.median(samples["openai"])
    for shape, values in samples.items():
        median = statistics.median(values)
        print(f"{shape:8} {median:6.2f} µs CPU/chunk (median of {rounds}), {median / base:.3f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS)
    parser.add_argument("--pieces", type=int, default=PIECES)
    args = parser.parse_args()
    asyncio.run(run(args.rounds, args.pieces))


if __name__ == "__main__":
    main()
