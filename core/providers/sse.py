"""A small Server-Sent Events decoder working on raw bytes.

It is separate from the providers (as openai-python keeps its `SSEDecoder` apart from
`AsyncStream`) and works on bytes rather than httpx's `aiter_lines()`: splitting the byte
buffer ourselves avoids a text decode and a line iterator per event, the largest cost
of a fast local stream.
"""

from __future__ import annotations

from collections.abc import AsyncIterator


class ServerSentEvent:
    __slots__ = ("data", "event")

    def __init__(self, event: str, data: bytes) -> None:
        self.event = event
        self.data = data


async def iter_sse(chunks: AsyncIterator[bytes]) -> AsyncIterator[ServerSentEvent]:
    """Yield events from a byte stream: `data:` lines joined by newlines, `event:` names kept.

    Handles LF and CRLF line ends, comment lines (`:`), events split across reads and
    several events per read. A last event without its blank line is still delivered.
    """
    buffer = b""
    event = ""
    data: list[bytes] = []
    async for chunk in chunks:
        buffer += chunk
        if b"\n" not in chunk:
            continue
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                if data:
                    yield ServerSentEvent(event, b"\n".join(data))
                    data = []
                event = ""
            elif line.startswith(b"data:"):
                data.append(line[6:] if line[5:6] == b" " else line[5:])
            elif line.startswith(b"event:"):
                event = line[6:].strip().decode()
            # Comments (":") and other fields (id, retry) carry nothing a completion needs.
    if buffer.startswith(b"data:"):
        data.append(buffer[5:].strip())
    if data:
        yield ServerSentEvent(event, b"\n".join(data))
