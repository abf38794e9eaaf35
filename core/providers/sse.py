"""A small Server-Sent Events decoder, kept apart from the providers as openai-python keeps
its `SSEDecoder` apart from `AsyncStream`.

It is shaped by the streaming benchmark (`bench/core_stream.py`): each network read is decoded
once (incrementally, so a character split across reads survives), cut at blank lines, and the
common one-line `data:` event is sliced out without a line loop. Events come out in one batch
per read, so the async-generator hand-off happens per read rather than per event.
"""

from __future__ import annotations

import codecs
from collections.abc import AsyncIterator


class ServerSentEvent:
    __slots__ = ("data", "event")

    def __init__(self, event: str, data: str) -> None:
        self.event = event
        self.data = data


def _parse_block(block: str) -> ServerSentEvent | None:
    """The general case: several lines, `event:` names, comments, multi-line data."""
    event = ""
    data: list[str] = []
    for line in block.split("\n"):
        if line.startswith("data:"):
            data.append(line[6:] if line[5:6] == " " else line[5:])
        elif line.startswith("event:"):
            event = line[6:].strip()
        # Comments (":") and other fields (id, retry) carry nothing a completion needs.
    return ServerSentEvent(event, "\n".join(data)) if data else None


class SSEDecoder:
    """Feed raw bytes, get complete events; `flush()` returns a last event left unterminated."""

    def __init__(self) -> None:
        self._decode = codecs.getincrementaldecoder("utf-8")("replace").decode
        self._buffer = ""

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        text = self._buffer + self._decode(chunk)
        if "\r" in text:
            # A CR at the very end may be half of a CRLF whose LF is in the next read.
            held = "\r" if text.endswith("\r") else ""
            text = text[: len(text) - len(held)].replace("\r\n", "\n").replace("\r", "\n") + held
        blocks = text.split("\n\n")
        self._buffer = blocks.pop()
        events: list[ServerSentEvent] = []
        for block in blocks:
            if block.startswith("data: ") and "\n" not in block:
                events.append(ServerSentEvent("", block[6:]))
            elif block:
                event = _parse_block(block.strip("\n"))
                if event is not None:
                    events.append(event)
        return events

    def flush(self) -> list[ServerSentEvent]:
        rest, self._buffer = (self._buffer + self._decode(b"", final=True)).rstrip("\r\n"), ""
        event = _parse_block(rest.replace("\r\n", "\n").replace("\r", "\n")) if rest else None
        return [event] if event is not None else []


async def iter_sse(chunks: AsyncIterator[bytes]) -> AsyncIterator[list[ServerSentEvent]]:
    """Batches of events from a byte stream, one batch per read that completed any event."""
    decoder = SSEDecoder()
    async for chunk in chunks:
        events = decoder.feed(chunk)
        if events:
            yield events
    events = decoder.flush()
    if events:
        yield events
