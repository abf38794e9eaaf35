"""A local fake LLM API (OpenAI chat completions and Anthropic Messages) for tests and benchmarks.

Tests script each reply with a `Script` (pieces, delays, HTTP errors, cut, malformed or stalled
streams) so the real httpx-based client is exercised over real HTTP on 127.0.0.1. Benchmarks run
it in its own process (`python -m tests.fakes.llm_server`) so it never competes with the client
for the event loop. With no delay the SSE body is pre-serialised from byte templates and written
in batches, so the server is never the bottleneck of a throughput measurement.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import functools
import json
import re
import signal
import ssl
import sys
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import BodyPartReader, web

HOST = "127.0.0.1"
#: SSE events joined into one `StreamResponse.write` when pieces need no delay between them.
BATCH_EVENTS = 64
#: How long `close()` lets aiohttp wait for handlers; ours are cancelled before that anyway.
SHUTDOWN_TIMEOUT = 0.1
#: Default seconds the `wait_*` helpers wait before raising TimeoutError.
WAIT_TIMEOUT = 5.0
DEFAULT_MODELS = ("fake-model", "fake-model-mini")
DEFAULT_MODEL = DEFAULT_MODELS[0]
ECHO_PREFIX = "echo: "
MALFORMED_DATA = b"data: {not json\n\n"
SSE_HEADERS = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
#: What `/audio/transcriptions` answers when no `Script` is queued, before the file's name.
TRANSCRIPT_PREFIX = "transcript of "
#: OpenAI's upload limit for transcriptions (25 MB) and the extensions it takes, in its order.
MAX_AUDIO_BYTES = 25 * 1024 * 1024
TRANSCRIBE_FORMATS = ("flac", "m4a", "mp3", "mp4", "mpeg", "mpga", "oga", "ogg", "wav", "webm")

_WORD_PIECES = re.compile(r"\s*\S+|\s+")
#: What `/images/generations` draws: a valid 1x1 PNG, so a client can decode what it gets.
GENERATED_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
)
#: The image types Anthropic's Messages API accepts in a base64 image block.
_ANTHROPIC_MEDIA_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})

_OPENAI_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_denied",
    404: "invalid_request_error",
    429: "requests",
}
_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}
_ANTHROPIC_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}
_ANTHROPIC_TOOL_CHOICES = frozenset({"auto", "any", "tool", "none"})


@dataclass
class ToolCall:
    """A tool call the server makes after the script's text: its arguments are sent in the
    pieces given (OpenAI `delta.tool_calls[].function.arguments`, Anthropic `input_json_delta`),
    so a test splits one call's JSON across as many chunks as it likes."""

    name: str
    arguments: list[str] = field(default_factory=lambda: ["{}"])
    id: str = field(default_factory=lambda: f"call_{uuid.uuid4().hex[:12]}")

    @property
    def input(self) -> Any:
        return json.loads("".join(self.arguments))


@dataclass
class Script:
    """How the server answers one request; `enqueue` several to script a conversation."""

    pieces: list[str] = field(default_factory=lambda: ["Hello", ",", " world"])
    delay: float = 0.0
    first_delay: float = 0.0
    status: int = 200
    error_message: str = "fake error"
    error_code: str | None = None
    #: None -> the provider's usual type for `status` (e.g. OpenAI "requests" for 429).
    error_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    usage: dict | None = None
    finish_reason: str = "stop"
    cut_after: int | None = None
    malformed_after: int | None = None
    stall_after: int | None = None
    #: After this many pieces, flush and wait for `release` to be set, then go on: a test holds
    #: one reply mid-stream for as long as it needs (concurrency), never for a guessed time.
    hold_after: int | None = None
    release: asyncio.Event = field(default_factory=asyncio.Event)
    #: The exact body. A list is written segment by segment (`delay` apart when > 0), so one SSE
    #: event can arrive split across TCP reads. It is sent as `text/event-stream` unless
    #: `headers` gives another `Content-Type`: a real server's exact JSON answer, for one. It is
    #: sent with `status`, so an error body can be replayed byte for byte too.
    raw_sse: bytes | list[bytes] | None = None
    #: Calls made after the text, in order; the finish reason becomes `tool_calls` (Anthropic:
    #: `tool_use`) unless `finish_reason` says otherwise.
    tool_calls: list[ToolCall] = field(default_factory=list)
    #: The model's thinking, sent before `pieces` as reasoning deltas: on the OpenAI wire in
    #: the delta's `reasoning_field` (`reasoning_content` as DeepSeek and vLLM name it,
    #: `reasoning` as OpenRouter and Ollama do) with `content` null; on Anthropic's as a
    #: `thinking` block of `thinking_delta`s (and its `signature_delta`) before the text block.
    #: They count as pieces for `hold_after` and the other markers.
    reasoning: list[str] = field(default_factory=list)
    reasoning_field: str = "reasoning_content"


@dataclass
class UploadedFile:
    """A file part of a multipart request, as it arrived."""

    filename: str | None
    content_type: str | None
    data: bytes


@dataclass
class RecordedRequest:
    """One request as the server saw it; header names are lower-cased. A multipart request
    (`/audio/transcriptions`) has its text fields in `json` and its file parts in `files`."""

    method: str
    path: str
    headers: dict[str, str]
    json: Any
    files: dict[str, UploadedFile] = field(default_factory=dict)


class _BadRequest(Exception):
    """A request the real API would refuse; carries the status and the error details."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


class _Cut:
    """Marker in an event plan: close the transport here."""


class _Stall:
    """Marker in an event plan: send nothing more until the client leaves."""


class _Pause:
    """Marker in an event plan: flush what is pending, then wait the script's `delay`."""


class _Hold:
    """Marker in an event plan: flush what is pending, then wait for the script's `release`."""


_CUT = _Cut()
_STALL = _Stall()
_PAUSE = _Pause()
_HOLD = _Hold()
_PlanItem = bytes | _Cut | _Stall | _Pause | _Hold


@functools.lru_cache(maxsize=4096)
def _encode(value: str) -> bytes:
    """JSON-encode a piece once; benchmarks repeat the same piece thousands of times."""
    return json.dumps(value).encode()


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _content_text(content: Any) -> str:
    """Text of a message's content: a string, or a list of {"type": "text", "text": ...} parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def _word_count(messages: list[Any], system: Any = None) -> int:
    texts = [_content_text(system)]
    texts += [_content_text(m.get("content")) for m in messages if isinstance(m, dict)]
    return sum(len(text.split()) for text in texts)


def _echo_script(messages: list[Any], delay: float = 0.0) -> Script:
    """The reply when nothing is queued: the last user message echoed back, word by word,
    `delay` seconds apart."""
    last = ""
    for message in messages:
        if isinstance(message, dict) and message.get("role") == "user":
            last = _content_text(message.get("content"))
    return Script(pieces=_WORD_PIECES.findall(ECHO_PREFIX + last), delay=delay)


def _max_tokens(body: dict, *names: str) -> int | None:
    for name in names:
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise _BadRequest(400, f"Invalid '{name}': expected an integer of at least 1.")
        return value
    return None


@dataclass
class _Reply:
    """A script resolved against one request: the pieces actually sent and the final numbers."""

    script: Script
    pieces: list[str]
    finish_reason: str
    prompt_tokens: int

    @classmethod
    def build(cls, script: Script, max_tokens: int | None, prompt_tokens: int) -> _Reply:
        pieces, finish = script.pieces, script.finish_reason
        if script.tool_calls and finish == "stop":
            finish = "tool_calls"
        if max_tokens is not None and len(pieces) > max_tokens:
            pieces, finish = pieces[:max_tokens], "length"
        return cls(script, pieces, finish, prompt_tokens)

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    def openai_usage(self) -> dict:
        if self.script.usage is not None:
            return self.script.usage
        done = len(self.pieces)
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": done,
            "total_tokens": self.prompt_tokens + done,
        }

    def anthropic_usage(self) -> dict:
        usage = self.openai_usage()
        return {
            "input_tokens": usage.get("input_tokens", usage.get("prompt_tokens", 0)),
            "output_tokens": usage.get("output_tokens", usage.get("completion_tokens", 0)),
        }

    def plan(
        self, piece_events: list[bytes], malformed: bytes, tail: list[bytes]
    ) -> list[_PlanItem]:
        """Events in order, with the malformed event and the pause/hold/cut/stall markers in
        place."""
        script = self.script
        markers = {script.malformed_after, script.cut_after, script.stall_after, script.hold_after}
        if script.delay <= 0 and markers == {None}:
            return [*piece_events, *tail]
        items: list[_PlanItem] = []
        for index in range(len(piece_events) + 1):
            if script.malformed_after == index:
                items.append(malformed)
            if script.hold_after == index:
                items.append(_HOLD)
            if script.cut_after == index:
                return [*items, _CUT]
            if script.stall_after == index:
                return [*items, _STALL]
            if index < len(piece_events):
                if index and script.delay > 0:
                    items.append(_PAUSE)
                items.append(piece_events[index])
        return items + tail


class FakeLLMServer:
    """OpenAI- and Anthropic-compatible endpoints answering from a queue of `Script`s."""

    def __init__(
        self,
        *,
        require_key: str | None = None,
        models: set[str] | None = None,
        default_script: Script | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """`default_script` answers every request when the queue is empty (benchmarks);
        without one, each request is answered by echoing its question, `echo_delay` seconds
        between words (tests of concurrent replies tell them apart by it).
        `ssl_context` serves HTTPS with its certificate (the proxy and CA tests)."""
        self.require_key = require_key
        self.ssl_context = ssl_context
        self.models = models
        self.default_script = default_script
        self.echo_delay = 0.0
        self.requests: list[RecordedRequest] = []
        self.active_streams = 0
        self.base_url = ""
        self.anthropic_base_url = ""
        self._queue: deque[Script] = deque()
        #: Scripts for `/images/generations` (only `status`, `error_*` and `headers` matter);
        #: with none queued, each request is drawn.
        self.image_scripts: deque[Script] = deque()
        #: Drawn images served at `{root}/generated/<name>` when asked for as a URL.
        self.generated: dict[str, bytes] = {}
        self.root_url = ""
        self._waiters: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []
        self._handlers: set[asyncio.Task[Any]] = set()
        self._runner: web.AppRunner | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self, port: int = 0) -> str:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._openai_chat)
        app.router.add_get("/v1/models", self._openai_models)
        app.router.add_post("/anthropic/v1/messages", self._anthropic_messages)
        app.router.add_post("/v1/images/generations", self._openai_images)
        app.router.add_get("/generated/{name}", self._generated_image)
        app.router.add_post("/v1/audio/transcriptions", self._openai_transcription)
        self._runner = web.AppRunner(
            app,
            access_log=None,
            handler_cancellation=True,  # a client that leaves cancels its handler (stall_after)
            shutdown_timeout=SHUTDOWN_TIMEOUT,
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, HOST, port, ssl_context=self.ssl_context)
        await site.start()
        server = site._server
        assert server is not None and server.sockets
        bound_port = server.sockets[0].getsockname()[1]
        scheme = "https" if self.ssl_context is not None else "http"
        self.root_url = f"{scheme}://{HOST}:{bound_port}"
        self.base_url = f"{self.root_url}/v1"
        self.anthropic_base_url = f"{scheme}://{HOST}:{bound_port}/anthropic/v1"
        return self.base_url

    async def close(self) -> None:
        for task in list(self._handlers):
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeLLMServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- scripting and observation -------------------------------------------------------------

    def enqueue(self, *scripts: Script) -> None:
        self._queue.extend(scripts)

    @property
    def image_parts(self) -> list[dict[str, Any]]:
        """Every image part of the chat requests so far, in order, as sent: OpenAI
        `image_url` parts and Anthropic `image` blocks."""
        return [
            part
            for recorded in self.requests
            if isinstance(recorded.json, dict)
            and recorded.path.endswith(("/chat/completions", "/messages"))
            for message in recorded.json.get("messages") or []
            if isinstance(message, dict) and isinstance(message.get("content"), list)
            for part in message["content"]
            if isinstance(part, dict) and part.get("type") in ("image_url", "image")
        ]

    # The `timeout` parameters are the agreed test interface (ASYNC109 prefers asyncio.timeout).
    async def wait_for_requests(
        self,
        n: int,
        timeout: float = WAIT_TIMEOUT,
    ) -> list[RecordedRequest]:
        """Wait until `n` requests (any endpoint) have arrived; raises TimeoutError."""
        await self._wait(lambda: len(self.requests) >= n, timeout)
        return self.requests

    async def wait_until_no_active_streams(
        self,
        timeout: float = WAIT_TIMEOUT,
    ) -> None:
        """Wait until every completion request has finished or been abandoned by its client."""
        await self.wait_for_active_streams(0, timeout)

    async def wait_for_active_streams(self, count: int, timeout: float = WAIT_TIMEOUT) -> None:
        """Wait until exactly `count` completion requests are in flight: a test that holds
        several sees one of them end (finished, or abandoned by a stopped reply)."""
        await self._wait(lambda: self.active_streams == count, timeout)

    async def _wait(self, predicate: Callable[[], bool], within: float) -> None:
        if predicate():
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (predicate, future)
        self._waiters.append(entry)
        try:
            await asyncio.wait_for(future, within)
        finally:
            self._waiters.remove(entry)

    def _notify(self) -> None:
        """Synchronous so it also runs from `finally` blocks of cancelled handlers."""
        for predicate, future in self._waiters:
            if not future.done() and predicate():
                future.set_result(None)

    async def _record(self, request: web.Request) -> Any:
        """Record the request; returns its JSON body, or a `_BadRequest` if it has none."""
        raw = await request.read()
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = _BadRequest(400, "We could not parse the JSON body of your request.")
        recorded_json = None if isinstance(body, _BadRequest) else body
        headers = {name.lower(): value for name, value in request.headers.items()}
        self.requests.append(RecordedRequest(request.method, request.path, headers, recorded_json))
        self._notify()
        return body

    def _next_script(self, messages: list[Any]) -> Script:
        if self._queue:
            return self._queue.popleft()
        return self.default_script or _echo_script(messages, self.echo_delay)

    @contextlib.contextmanager
    def _in_flight(self) -> Iterator[None]:
        """Count a completion request from arrival to its last byte (or the client leaving)."""
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.active_streams += 1
        try:
            yield
        finally:
            self.active_streams -= 1
            self._handlers.discard(task)
            self._notify()

    # -- OpenAI --------------------------------------------------------------------------------

    async def _openai_models(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        try:
            self._check_bearer(request)
        except _BadRequest as exc:
            return _openai_error(exc.status, exc.message, exc.code)
        names = sorted(self.models) if self.models is not None else list(DEFAULT_MODELS)
        data = [
            {"id": n, "object": "model", "created": 0, "owned_by": "parley-fake"} for n in names
        ]
        return web.json_response({"object": "list", "data": data})

    def _check_bearer(self, request: web.Request) -> None:
        if self.require_key is None:
            return
        header = request.headers.get("Authorization", "")
        if not header:
            raise _BadRequest(401, "You didn't provide an API key.", "invalid_api_key")
        if header != f"Bearer {self.require_key}":
            raise _BadRequest(401, "Incorrect API key provided.", "invalid_api_key")

    async def _openai_chat(self, request: web.Request) -> web.StreamResponse:
        with self._in_flight():
            body = await self._record(request)
            try:
                if isinstance(body, _BadRequest):
                    raise body
                self._check_bearer(request)
                messages, model, stream, max_tokens = self._parse_openai(body)
            except _BadRequest as exc:
                return _openai_error(exc.status, exc.message, exc.code)
            script = self._next_script(messages)
            reply = _Reply.build(script, max_tokens, _word_count(messages))
            return await self._serve_openai(request, reply, body, model, stream)

    def _parse_openai(self, body: Any) -> tuple[list[Any], str, bool, int | None]:
        if not isinstance(body, dict):
            raise _BadRequest(400, "The request body must be a JSON object.")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _BadRequest(400, "'messages' must be a non-empty array.")
        model = body.get("model") if isinstance(body.get("model"), str) else DEFAULT_MODEL
        if self.models is not None and model not in self.models:
            raise _BadRequest(
                404,
                f"The model `{model}` does not exist or you do not have access to it.",
                "model_not_found",
            )
        max_tokens = _max_tokens(body, "max_completion_tokens", "max_tokens")
        _check_openai_images(messages)
        _check_openai_tools(body)
        return messages, model, bool(body.get("stream")), max_tokens

    async def _serve_openai(
        self, request: web.Request, reply: _Reply, body: dict, model: str, stream: bool
    ) -> web.StreamResponse:
        script = reply.script
        if script.first_delay:
            await asyncio.sleep(script.first_delay)
        if script.raw_sse is not None:
            return await _write_raw(request, script)
        if script.status != 200:
            return _openai_error(
                script.status,
                script.error_message,
                script.error_code,
                script.error_type,
                script.headers,
            )
        completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        if not stream:
            return await _write_whole(
                request, script, _openai_completion(reply, completion_id, created, model)
            )
        stream_options = body.get("stream_options")
        include_usage = isinstance(stream_options, dict) and bool(
            stream_options.get("include_usage")
        )
        events, tail = _openai_events(reply, completion_id, created, model, include_usage)
        plan = reply.plan(events, MALFORMED_DATA, tail)
        return await _write_plan(request, script, plan)

    # -- OpenAI images --------------------------------------------------------------------------

    async def _openai_images(self, request: web.Request) -> web.StreamResponse:
        """`POST /v1/images/generations`: draws `GENERATED_PNG` `n` times, as b64_json or as a
        URL this server serves; a queued `image_scripts` entry with a status answers that
        error instead (400 with `error_code="content_policy_violation"`: a refused prompt),
        one with `raw_sse` answers that exact body."""
        body = await self._record(request)
        try:
            if isinstance(body, _BadRequest):
                raise body
            self._check_bearer(request)
            count, response_format = self._parse_images(body)
        except _BadRequest as exc:
            return _openai_error(exc.status, exc.message, exc.code)
        script = self.image_scripts.popleft() if self.image_scripts else Script()
        if script.raw_sse is not None:  # an exact body: another server's answer, or junk
            return await _write_raw(request, script)
        if script.status != 200:
            return _openai_error(
                script.status,
                script.error_message,
                script.error_code,
                script.error_type,
                script.headers,
            )
        data = []
        for _ in range(count):
            if response_format == "b64_json":
                data.append({"b64_json": base64.b64encode(GENERATED_PNG).decode()})
            else:
                name = f"img-{uuid.uuid4().hex[:12]}.png"
                self.generated[name] = GENERATED_PNG
                data.append({"url": f"{self.root_url}/generated/{name}"})
            data[-1]["revised_prompt"] = body["prompt"]
        return web.json_response({"created": int(time.time()), "data": data})

    def _parse_images(self, body: Any) -> tuple[int, str]:
        if not isinstance(body, dict):
            raise _BadRequest(400, "The request body must be a JSON object.")
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt:
            raise _BadRequest(
                400, "Missing required parameter: 'prompt'.", "missing_required_parameter"
            )
        model = body.get("model")
        if model is not None and self.models is not None and model not in self.models:
            raise _BadRequest(
                404,
                f"The model `{model}` does not exist or you do not have access to it.",
                "model_not_found",
            )
        count = body.get("n", 1)
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 10:
            raise _BadRequest(400, "Invalid 'n': expected an integer from 1 to 10.")
        if str(model or "").startswith("gpt-image"):  # as OpenAI: data only, no such parameter
            if "response_format" in body:
                raise _BadRequest(400, "Unknown parameter: 'response_format'.", "unknown_parameter")
            return count, "b64_json"
        response_format = body.get("response_format", "url")
        if response_format not in ("url", "b64_json"):
            raise _BadRequest(400, "Invalid 'response_format': expected 'url' or 'b64_json'.")
        return count, response_format

    async def _generated_image(self, request: web.Request) -> web.StreamResponse:
        data = self.generated.get(request.match_info["name"])
        if data is None:
            raise web.HTTPNotFound()
        return web.Response(body=data, content_type="image/png")

    # -- OpenAI audio transcriptions -----------------------------------------------------------

    async def _openai_transcription(self, request: web.Request) -> web.StreamResponse:
        """`POST /v1/audio/transcriptions`: OpenAI's multipart form (`file`, `model`, optional
        `language`, `prompt`, `response_format`), checked as OpenAI checks it. The transcript
        is the next queued `Script`'s pieces joined (its `status`, `raw_sse`, `first_delay`
        and `cut_after` apply as for a completion), else `TRANSCRIPT_PREFIX` and the file's
        name and size."""
        try:
            fields, files = await _read_form(request)
        except _BadRequest as exc:
            return _openai_error(exc.status, exc.message, exc.code)
        headers = {name.lower(): value for name, value in request.headers.items()}
        self.requests.append(RecordedRequest(request.method, request.path, headers, fields, files))
        self._notify()
        try:
            self._check_bearer(request)
            upload, response_format = _check_transcription(fields, files)
        except _BadRequest as exc:
            return _openai_error(exc.status, exc.message, exc.code)
        if self._queue:
            script = self._queue.popleft()
        else:
            default = f"{TRANSCRIPT_PREFIX}{upload.filename} ({len(upload.data)} bytes)"
            script = Script(pieces=[default])
        if script.first_delay:
            await asyncio.sleep(script.first_delay)
        if script.cut_after is not None:
            await _cut(request)
        if script.raw_sse is not None:
            return await _write_raw(request, script)
        if script.status != 200:
            return _openai_error(
                script.status,
                script.error_message,
                script.error_code,
                script.error_type,
                script.headers,
            )
        text = "".join(script.pieces)
        if response_format == "text":
            return web.Response(text=text + "\n", content_type="text/plain")
        body: dict[str, Any] = {"text": text}
        if response_format == "verbose_json":
            body = {"task": "transcribe", "language": "english", "duration": 0.0, **body}
            body["segments"] = []
        return web.json_response(body, headers=script.headers or None)

    # -- Anthropic -----------------------------------------------------------------------------

    async def _anthropic_messages(self, request: web.Request) -> web.StreamResponse:
        with self._in_flight():
            body = await self._record(request)
            try:
                if isinstance(body, _BadRequest):
                    raise body
                self._check_anthropic_headers(request)
                messages, model, stream, max_tokens = self._parse_anthropic(body)
            except _BadRequest as exc:
                return _anthropic_error(exc.status, exc.message)
            script = self._next_script(messages)
            reply = _Reply.build(script, max_tokens, _word_count(messages, body.get("system")))
            return await self._serve_anthropic(request, reply, model, stream)

    def _check_anthropic_headers(self, request: web.Request) -> None:
        if self.require_key is not None:
            key = request.headers.get("x-api-key")
            if key is None:
                raise _BadRequest(401, "x-api-key header is required")
            if key != self.require_key:
                raise _BadRequest(401, "invalid x-api-key")
        if not request.headers.get("anthropic-version"):
            raise _BadRequest(400, "anthropic-version: header is required")

    def _parse_anthropic(self, body: Any) -> tuple[list[Any], str, bool, int]:
        if not isinstance(body, dict):
            raise _BadRequest(400, "The request body must be a JSON object.")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _BadRequest(400, "messages: field required and must be a non-empty list")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise _BadRequest(400, "model: field required")
        if self.models is not None and model not in self.models:
            raise _BadRequest(404, f"model: {model}")
        max_tokens = _max_tokens(body, "max_tokens")
        if max_tokens is None:
            raise _BadRequest(400, "max_tokens: field required")
        _check_anthropic_images(messages)
        _check_anthropic_tools(body)
        return messages, model, bool(body.get("stream")), max_tokens

    async def _serve_anthropic(
        self, request: web.Request, reply: _Reply, model: str, stream: bool
    ) -> web.StreamResponse:
        script = reply.script
        if script.first_delay:
            await asyncio.sleep(script.first_delay)
        if script.raw_sse is not None:
            return await _write_raw(request, script)
        if script.status != 200:
            return _anthropic_error(
                script.status, script.error_message, script.error_type, script.headers
            )
        message_id = f"msg_{uuid.uuid4().hex[:24]}"
        if not stream:
            return await _write_whole(request, script, _anthropic_message(reply, message_id, model))
        events, head, tail = _anthropic_events(reply, message_id, model)
        malformed = b"event: content_block_delta\n" + MALFORMED_DATA
        plan = head + reply.plan(events, malformed, tail)
        return await _write_plan(request, script, plan)


# -- image parts -------------------------------------------------------------------------------


def _check_base64(data: Any, where: str) -> None:
    try:
        base64.b64decode(data, validate=True)
    except (binascii.Error, TypeError, ValueError):
        raise _BadRequest(400, f"{where}: the image data is not valid base64.") from None


def _content_parts(messages: list[Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, part) of every part of a list content, for the image checks."""
    for index, message in enumerate(messages):
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            for number, part in enumerate(content):
                if isinstance(part, dict):
                    yield f"messages.{index}.content.{number}", part


def _check_openai_images(messages: list[Any]) -> None:
    """Refuse an `image_url` part OpenAI would: no URL, or a data URL that is not base64."""
    for where, part in _content_parts(messages):
        if part.get("type") != "image_url":
            continue
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else None
        if not isinstance(url, str):
            raise _BadRequest(400, f"{where}: image_url.url is required.", "invalid_image_url")
        if url.startswith("data:"):
            header, _, payload = url.partition(",")
            if not header.endswith(";base64"):
                raise _BadRequest(
                    400, f"{where}: only base64 data URLs are supported.", "invalid_image_url"
                )
            _check_base64(payload, where)
        elif not url.startswith(("http://", "https://")):
            raise _BadRequest(400, f"{where}: invalid image URL.", "invalid_image_url")


def _check_anthropic_images(messages: list[Any]) -> None:
    """Refuse what Anthropic would: OpenAI's `image_url` parts, or a malformed image block."""
    for where, part in _content_parts(messages):
        kind = part.get("type")
        if kind not in ("text", "image", "tool_use", "tool_result"):
            raise _BadRequest(
                400,
                f"{where}: Input tag {kind!r} found using 'type' does not match any of the expected tags",
            )
        if kind != "image":
            continue
        source = part.get("source")
        if not isinstance(source, dict) or source.get("type") not in ("base64", "url"):
            raise _BadRequest(400, f"{where}.source: must be a base64 or url source")
        if source["type"] == "url":
            continue
        if source.get("media_type") not in _ANTHROPIC_MEDIA_TYPES:
            raise _BadRequest(
                400, f"{where}.source.media_type: unsupported {source.get('media_type')!r}"
            )
        _check_base64(source.get("data"), where)


# -- tools -------------------------------------------------------------------------------------


def _check_openai_tools(body: dict[str, Any]) -> None:
    """Refuse what OpenAI would: a malformed tool, or a tool result answering no call."""
    for index, tool in enumerate(body.get("tools") or []):
        function = tool.get("function") if isinstance(tool, dict) else None
        if tool.get("type") != "function" or not isinstance(function, dict):
            raise _BadRequest(400, f"Invalid 'tools[{index}]': expected a function tool.")
        if not isinstance(function.get("name"), str):
            raise _BadRequest(400, f"Missing required parameter: 'tools[{index}].function.name'.")
    called: set[str] = set()
    for index, message in enumerate(body["messages"]):
        if not isinstance(message, dict):
            continue
        if message.get("role") == "assistant":
            called = {call.get("id") for call in message.get("tool_calls") or []}
        elif message.get("role") == "tool" and message.get("tool_call_id") not in called:
            raise _BadRequest(
                400,
                f"Invalid parameter: messages[{index}]: messages with role 'tool' must be a "
                "response to a preceeding message with 'tool_calls'.",
            )


def _check_anthropic_tools(body: dict[str, Any]) -> None:
    """Refuse what Anthropic would: a tool without an input_schema, an unknown tool_choice,
    a `tool_result` that answers no `tool_use` of the assistant turn before it."""
    for index, tool in enumerate(body.get("tools") or []):
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            raise _BadRequest(400, f"tools.{index}.name: Field required")
        if not isinstance(tool.get("input_schema"), dict):
            raise _BadRequest(400, f"tools.{index}.input_schema: Field required")
    choice = body.get("tool_choice")
    if choice is not None and (
        not isinstance(choice, dict) or choice.get("type") not in _ANTHROPIC_TOOL_CHOICES
    ):
        raise _BadRequest(400, "tool_choice: Input tag does not match any of the expected tags")
    used: set[str] = set()
    for index, message in enumerate(body["messages"]):
        content = message.get("content") if isinstance(message, dict) else None
        blocks = [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []
        if message.get("role") == "assistant":
            used = {b.get("id") for b in blocks if b.get("type") == "tool_use"}
            continue
        for block in blocks:
            if block.get("type") == "tool_result" and block.get("tool_use_id") not in used:
                raise _BadRequest(
                    400,
                    f"messages.{index}: unexpected `tool_use_id` found in `tool_result` blocks: "
                    f"{block.get('tool_use_id')}. Each `tool_result` block must have a "
                    "corresponding `tool_use` block in the previous message.",
                )


# -- audio transcriptions ----------------------------------------------------------------------


async def _read_form(request: web.Request) -> tuple[dict[str, str], dict[str, UploadedFile]]:
    """The text fields and file parts of a multipart body, read part by part: aiohttp's
    `request.post()` would refuse a body over its 1 MB default, and OpenAI takes 25 MB."""
    if not request.content_type.startswith("multipart/form-data"):
        raise _BadRequest(400, "Content-Type must be multipart/form-data.")
    fields: dict[str, str] = {}
    files: dict[str, UploadedFile] = {}
    total = 0
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        assert isinstance(part, BodyPartReader)  # a nested multipart is not what OpenAI takes
        data = bytearray()
        # Chunk by chunk: `part.read()` stops at the app's `client_max_size` (1 MB).
        while chunk := await part.read_chunk():
            data += chunk
            total += len(chunk)
            if total > MAX_AUDIO_BYTES:
                raise _BadRequest(
                    413,
                    f"Maximum content size limit ({MAX_AUDIO_BYTES}) exceeded ({total} bytes read)",
                )
        if part.filename is not None:
            content_type = part.headers.get("Content-Type")
            files[part.name or ""] = UploadedFile(part.filename, content_type, bytes(data))
        else:
            fields[part.name or ""] = data.decode(errors="replace")
    return fields, files


def _check_transcription(
    fields: dict[str, str], files: dict[str, UploadedFile]
) -> tuple[UploadedFile, str]:
    """The upload and the response format, or the 400 OpenAI answers."""
    upload = files.get("file")
    if upload is None:
        raise _BadRequest(
            400,
            "1 validation error for Request\nbody -> file\n  field required (type=value_error.missing)",
        )
    if not fields.get("model"):
        raise _BadRequest(400, "you must provide a model parameter")
    extension = (upload.filename or "").rpartition(".")[2].lower()
    if extension not in TRANSCRIBE_FORMATS:
        supported = ", ".join(f"'{name}'" for name in TRANSCRIBE_FORMATS)
        raise _BadRequest(400, f"Invalid file format. Supported formats: [{supported}]")
    if not upload.data:
        raise _BadRequest(
            400,
            "Audio file is too short. Minimum audio length is 0.1 seconds.",
            "audio_too_short",
        )
    response_format = fields.get("response_format", "json")
    if response_format not in ("json", "text", "verbose_json"):
        raise _BadRequest(
            400, f"'{response_format}' is not one of ['json', 'text', 'verbose_json'] (this fake)"
        )
    return upload, response_format


# -- wire shapes -------------------------------------------------------------------------------


def _openai_error(
    status: int,
    message: str,
    code: str | None = None,
    error_type: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    kind = error_type or _OPENAI_ERROR_TYPES.get(status, "server_error")
    error = {"message": message, "type": kind, "param": None, "code": code}
    return web.json_response({"error": error}, status=status, headers=headers)


def _anthropic_error(
    status: int,
    message: str,
    error_type: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    kind = error_type or _ANTHROPIC_ERROR_TYPES.get(status, "api_error")
    body = {"type": "error", "error": {"type": kind, "message": message}}
    return web.json_response(body, status=status, headers=headers)


def _openai_completion(reply: _Reply, completion_id: str, created: int, model: str) -> dict:
    message: dict[str, Any] = {"role": "assistant", "content": reply.text, "refusal": None}
    if reply.script.tool_calls:
        message["content"] = reply.text or None
        message["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": "".join(call.arguments)},
            }
            for call in reply.script.tool_calls
        ]
    if reply.script.reasoning:
        message[reply.script.reasoning_field] = "".join(reply.script.reasoning)
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {"index": 0, "message": message, "logprobs": None, "finish_reason": reply.finish_reason}
        ],
        "usage": reply.openai_usage(),
        "system_fingerprint": None,
    }


def _openai_events(
    reply: _Reply, completion_id: str, created: int, model: str, include_usage: bool
) -> tuple[list[bytes], list[bytes]]:
    """Piece events from byte templates (no per-piece dict or dumps), and the closing events."""
    head = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": None,
    }
    prefix = b"data: " + _dumps(head)[:-1] + b',"choices":[{"index":0,"delta":{'
    usage_null = b',"usage":null' if include_usage else b""
    suffix = b'},"logprobs":null,"finish_reason":null}]' + usage_null + b"}\n\n"
    first = prefix + b'"role":"assistant","content":'
    rest = prefix + b'"content":'
    thinking = [
        prefix
        + (b'"role":"assistant",' if i == 0 else b"")
        + b'"content":null,"'
        + reply.script.reasoning_field.encode()
        + b'":'
        + _encode(piece)
        + suffix
        for i, piece in enumerate(reply.script.reasoning)
    ]
    said = bool(thinking)
    events = thinking + [
        (rest if i or said else first) + _encode(p) + suffix for i, p in enumerate(reply.pieces)
    ]
    for index, call in enumerate(reply.script.tool_calls):
        start = {
            "index": index,
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": ""},
        }
        opening = {"role": "assistant", "content": None} if not events else {}
        events.append(prefix + _dumps({**opening, "tool_calls": [start]})[1:-1] + suffix)
        for piece in call.arguments:
            delta = {"tool_calls": [{"index": index, "function": {"arguments": piece}}]}
            events.append(prefix + _dumps(delta)[1:-1] + suffix)

    def event(choices: list[dict], usage: dict | None) -> bytes:
        chunk = {**head, "choices": choices}
        if include_usage:
            chunk["usage"] = usage
        return b"data: " + _dumps(chunk) + b"\n\n"

    finish = {"index": 0, "delta": {}, "logprobs": None, "finish_reason": reply.finish_reason}
    tail = [event([finish], None)]
    if include_usage:
        tail.append(event([], reply.openai_usage()))
    tail.append(b"data: [DONE]\n\n")
    return events, tail


def _sse(name: str, data: dict) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + _dumps(data) + b"\n\n"


def _anthropic_message(reply: _Reply, message_id: str, model: str) -> dict:
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [
            *(
                [{"type": "thinking", "thinking": "".join(reply.script.reasoning)}]
                if reply.script.reasoning
                else []
            ),
            *_anthropic_blocks(reply),
        ],
        "stop_reason": _ANTHROPIC_STOP_REASONS.get(reply.finish_reason, reply.finish_reason),
        "stop_sequence": None,
        "usage": reply.anthropic_usage(),
    }


def _anthropic_blocks(reply: _Reply) -> list[dict[str, Any]]:
    """A whole message's content: the text (left out when empty and tools were called, as
    Anthropic does), then one `tool_use` block per call."""
    calls = reply.script.tool_calls
    blocks: list[dict[str, Any]] = [] if calls and not reply.text else [_text_block(reply.text)]
    blocks += [
        {"type": "tool_use", "id": call.id, "name": call.name, "input": call.input}
        for call in calls
    ]
    return blocks


def _text_block(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def _anthropic_tool_events(reply: _Reply, first_index: int) -> list[bytes]:
    """Each call as Anthropic streams it: a `tool_use` block start, its input in
    `input_json_delta` pieces, the block's stop."""
    events = []
    for index, call in enumerate(reply.script.tool_calls, start=first_index):
        block = {"type": "tool_use", "id": call.id, "name": call.name, "input": {}}
        start = {"type": "content_block_start", "index": index, "content_block": block}
        events.append(_sse("content_block_start", start))
        for piece in call.arguments:
            delta = {"type": "input_json_delta", "partial_json": piece}
            payload = {"type": "content_block_delta", "index": index, "delta": delta}
            events.append(_sse("content_block_delta", payload))
        events.append(_sse("content_block_stop", {"type": "content_block_stop", "index": index}))
    return events


def _anthropic_events(
    reply: _Reply, message_id: str, model: str
) -> tuple[list[bytes], list[bytes], list[bytes]]:
    """(piece events, events before the first piece, events after the last)."""
    usage = reply.anthropic_usage()
    start = _anthropic_message(reply, message_id, model)
    start.update(content=[], stop_reason=None)
    start["usage"] = {"input_tokens": usage["input_tokens"], "output_tokens": 1}
    thinking = reply.script.reasoning
    text_index = 1 if thinking else 0

    def block_start(index: int, block: dict) -> bytes:
        start = {"type": "content_block_start", "index": index, "content_block": block}
        return _sse("content_block_start", start)

    def block_delta(index: int, delta: dict) -> bytes:
        return _sse(
            "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
        )

    head = [
        _sse("message_start", {"type": "message_start", "message": start}),
        block_start(
            0, {"type": "thinking", "thinking": ""} if thinking else {"type": "text", "text": ""}
        ),
        _sse("ping", {"type": "ping"}),
    ]
    events = [block_delta(0, {"type": "thinking_delta", "thinking": piece}) for piece in thinking]
    if thinking:
        events[-1] += block_delta(0, {"type": "signature_delta", "signature": "ZmFrZQ=="})
        events[-1] += _sse("content_block_stop", {"type": "content_block_stop", "index": 0})
        events[-1] += block_start(1, {"type": "text", "text": ""})
    prefix = (
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":'
        + str(text_index).encode()
        + b',"delta":{"type":"text_delta","text":'
    )
    events += [prefix + _encode(piece) + b"}}\n\n" for piece in reply.pieces]
    stop_reason = _ANTHROPIC_STOP_REASONS.get(reply.finish_reason, reply.finish_reason)
    text_stop = _sse("content_block_stop", {"type": "content_block_stop", "index": text_index})
    tail = [
        text_stop,
        _sse(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": usage["output_tokens"]},
            },
        ),
        _sse("message_stop", {"type": "message_stop"}),
    ]
    if reply.script.tool_calls:  # the text block (if any) closes before the calls open
        tail.remove(text_stop)
        if reply.pieces or thinking:  # after thinking, the text block was opened already
            events.append(text_stop)
        else:
            del head[1]
        events += _anthropic_tool_events(
            reply, text_index + 1 if reply.pieces or thinking else text_index
        )
    return events, head, tail


# -- writing -----------------------------------------------------------------------------------


async def _hang_until_client_leaves() -> None:
    """Handlers are cancelled when their connection is lost (`handler_cancellation=True`)."""
    await asyncio.get_running_loop().create_future()


async def _cut(request: web.Request) -> None:
    """Close the connection mid-body: data already written is flushed, the body never ends."""
    transport = request.transport
    if transport is not None:
        transport.close()
    await _hang_until_client_leaves()


async def _write_whole(request: web.Request, script: Script, payload: dict) -> web.StreamResponse:
    """A non-streamed reply; cut/malformed/stall apply to the body as a whole."""
    if script.cut_after is not None:
        await _cut(request)
    if script.stall_after is not None:
        await _hang_until_client_leaves()
    body = b"{not json" if script.malformed_after is not None else _dumps(payload)
    return web.Response(body=body, content_type="application/json", headers=script.headers or None)


async def _write_raw(request: web.Request, script: Script) -> web.StreamResponse:
    response = web.StreamResponse(status=script.status, headers={**SSE_HEADERS, **script.headers})
    await response.prepare(request)
    segments = [script.raw_sse] if isinstance(script.raw_sse, bytes) else script.raw_sse or []
    for index, segment in enumerate(segments):
        if index and script.delay:
            await asyncio.sleep(script.delay)
        await response.write(segment)
    await response.write_eof()
    return response


async def _write_plan(
    request: web.Request, script: Script, plan: list[_PlanItem]
) -> web.StreamResponse:
    """Write planned events in batches, flushing at every marker."""
    response = web.StreamResponse(headers={**SSE_HEADERS, **script.headers})
    await response.prepare(request)
    batch: list[bytes] = []
    for item in plan:
        if isinstance(item, bytes):
            batch.append(item)
            if len(batch) < BATCH_EVENTS:
                continue
        if batch:
            await response.write(b"".join(batch))
            batch.clear()
        if item is _PAUSE:
            await asyncio.sleep(script.delay)
        elif item is _CUT:
            await _cut(request)
        elif item is _STALL:
            await _hang_until_client_leaves()
        elif item is _HOLD:
            await script.release.wait()
    if batch:
        await response.write(b"".join(batch))
    await response.write_eof()
    return response


# -- command line ------------------------------------------------------------------------------


async def _serve_forever(args: argparse.Namespace) -> None:
    script = Script(pieces=[args.piece] * args.pieces, delay=args.delay)
    server = FakeLLMServer(default_script=script)
    base_url = await server.start(port=args.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"READY {base_url}", flush=True)
    try:
        await stop.wait()
    finally:
        await server.close()


def main(argv: list[str] | None = None) -> None:
    """Benchmarks run the server in its own process so it never shares the client's loop."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--pieces", type=int, default=3, help="pieces in every reply")
    parser.add_argument("--piece", default="tok ", help="the text of each piece")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds between pieces")
    asyncio.run(_serve_forever(parser.parse_args(argv)))


if __name__ == "__main__":
    main(sys.argv[1:])
