"""Any server that speaks OpenAI's `POST /chat/completions`: OpenAI itself, the hosted
OpenAI-compatible APIs, and local Ollama, LM Studio, llama.cpp and vLLM servers.

Messages go as they are, image parts included: OpenAI's `image_url` parts are the format
these servers share (Ollama's `/v1` takes them with base64 data URLs). Servers that draw
images do it at `POST /images/generations` (`generate_images`)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from .. import errors
from ..redact import Redactor
from ..types import ChoiceDeltaToolCall, FinishReason, Image, ImagesResponse, Reasoning, Usage
from .base import Messages, StreamItem
from .http import open_stream
from .http_provider import SHAPE_ERRORS, Exchange, HTTPProvider
from .sse import iter_sse
from .tools import openai_tool_calls
from .wire import response_id, server_error

#: OpenAI accepts at most four stop strings; more are applied by the client alone.
MAX_SERVER_STOP_STRINGS = 4
#: Arguments the client handles itself and must not forward into the request body.
_CLIENT_ONLY = frozenset({"ignore_working", "ignore_stream"})
#: Seconds to wait for a drawn image: generating one takes far longer than a chat reply's
#: first token (tens of seconds is usual), so the per-read timeout is raised to at least this.
IMAGE_READ_TIMEOUT = 180.0


def usage_from(payload: dict[str, Any]) -> Usage:
    return Usage(
        int(payload.get("prompt_tokens") or 0),
        int(payload.get("completion_tokens") or 0),
        payload.get("total_tokens"),
    )


def reasoning_of(fields: dict[str, Any]) -> Reasoning | None:
    """The thinking in a delta or message: `reasoning_content` (DeepSeek, vLLM, LiteLLM) or
    `reasoning` (OpenRouter, Ollama's `/v1`), whichever holds text."""
    text = fields.get("reasoning_content") or fields.get("reasoning")
    return Reasoning(text) if isinstance(text, str) and text else None


def _chunk_fields(payload: dict[str, Any]) -> tuple[Any, Any, Any, Reasoning | None]:
    """(text, finish reason, usage dict, reasoning) of one streamed chunk; raises
    `SHAPE_ERRORS` if malformed."""
    content = finish_reason = thinking = None
    choices = payload.get("choices")
    if choices:
        choice = choices[0]
        delta = choice.get("delta")
        if delta:
            content = delta.get("content")
            thinking = reasoning_of(delta)
        finish_reason = choice.get("finish_reason")
    usage = payload.get("usage")
    if usage is not None and not isinstance(usage, dict):
        raise TypeError("usage is not an object")
    return content, finish_reason, usage, thinking


class OpenAICompatible(HTTPProvider):
    """One OpenAI-compatible endpoint with its key, models and extra headers."""

    path = "/chat/completions"

    def __init__(
        self,
        name: str,
        base_url: str,
        api_key: str | None = None,
        default_model: str | None = None,
        models: list[str] | None = None,
        headers: dict[str, str] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(
            name, base_url, api_key, default_model=default_model, models=models, **options
        )
        self.headers = dict(headers or {})

    def _headers(self, key: str | None, accept: str) -> dict[str, str]:
        headers = {"Accept": accept, **self.headers}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _request(
        self, model: str, messages: Messages, stream: bool, key: str | None, options: dict[str, Any]
    ) -> tuple[dict[str, Any], dict[str, str]]:
        headers = self._headers(key, "text/event-stream, application/json")
        body: dict[str, Any] = {"model": model or self.default_model or "", "messages": messages}
        for name, value in options.items():
            if value is not None and name not in _CLIENT_ONLY:
                body[name] = value
        stop = body.get("stop")
        if isinstance(stop, list) and len(stop) > MAX_SERVER_STOP_STRINGS:
            del body["stop"]
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return body, headers

    def _read_json(self, body: bytes, redact: Redactor) -> list[StreamItem]:
        try:
            payload = json.loads(body)
            choice = payload["choices"][0]
            content = choice["message"].get("content") or ""
            calls = openai_tool_calls(choice["message"].get("tool_calls"))
            thinking = reasoning_of(choice["message"])
            usage = usage_from(payload["usage"]) if payload.get("usage") else None
        except SHAPE_ERRORS:
            raise errors.ResponseStatusError(
                f"{self.name}: the answer was not a chat completion: {body[:200]!r}"
            ) from None
        # What the body says about the answer comes before its text: a stop string that cuts
        # the text ends the client's reading there, and the server's usage must be in by then.
        items: list[StreamItem] = []
        ident = response_id(payload)
        if ident is not None:
            items.append(ident)
        if usage is not None:
            items.append(usage)
        if thinking is not None:
            items.append(thinking)
        items.append(content)
        items.extend(calls)
        if choice.get("finish_reason") not in (None, "stop"):
            items.append(FinishReason(choice["finish_reason"]))
        return items

    def _irregular_chunk(
        self, payload: Any, data: str, redact: Redactor
    ) -> tuple[Any, Any, Any, Reasoning | None]:
        """(text, finish reason, usage, reasoning) of a chunk off the common shape: the
        role-only first chunk, the usage-only last one, a thinking delta with no `content` key
        (vLLM), an error sent inside the stream, or junk."""
        if not isinstance(payload, dict):
            return None, None, None, None
        if "error" in payload:
            raise server_error(self.name, payload["error"], redact)
        try:
            return _chunk_fields(payload)
        except SHAPE_ERRORS:
            raise errors.ResponseStatusError(
                f"{self.name}: the stream sent a malformed chunk: {data[:120]!r}"
            ) from None

    def _streamed_calls(self, payload: Any, data: str) -> list[ChoiceDeltaToolCall]:
        """The tool call pieces of one chunk's delta."""
        try:
            choices = payload.get("choices")
            delta = choices[0].get("delta") if choices else None
            return openai_tool_calls(delta.get("tool_calls")) if delta else []
        except SHAPE_ERRORS:
            raise errors.ResponseStatusError(
                f"{self.name}: the stream sent malformed tool calls: {data[:120]!r}"
            ) from None

    async def _read(self, exchange: Exchange) -> AsyncIterator[StreamItem]:
        redact = exchange.redact
        async with exchange.open() as response:
            if not exchange.is_stream(response):
                for item in await exchange.whole(response):
                    yield item
                return
            finish_reason: str | None = None
            done = False
            id_pending = True
            async for events in iter_sse(response.aiter_bytes()):
                for event in events:
                    data = event.data
                    if data == "[DONE]":
                        done = True
                        break
                    try:
                        payload = json.loads(data)
                    except ValueError:
                        raise errors.ResponseStatusError(
                            f"{self.name}: the stream sent invalid JSON: {data[:120]!r}"
                        ) from None
                    if id_pending:  # Azure's first chunk has `"id": ""`: wait for a real one
                        ident = response_id(payload)
                        if ident is not None:
                            id_pending = False
                            yield ident
                    # The shape of nearly every chunk, read without a helper call. OpenAI
                    # sends `"finish_reason": null` on content chunks, LiteLLM leaves the
                    # key out: `.get` takes both down this path.
                    try:
                        choice = payload["choices"][0]
                        delta = choice["delta"]
                        content = delta["content"]
                        finish = choice.get("finish_reason")
                        usage = payload.get("usage")
                        # A thinking model's delta has `content` null or "" beside its thinking.
                        thinking = None if content else reasoning_of(delta)
                    except (LookupError, TypeError, AttributeError):
                        content, finish, usage, thinking = self._irregular_chunk(
                            payload, data, redact
                        )
                    if thinking is not None:
                        yield thinking
                    if content:
                        yield content
                    # A plain search of the raw text keeps the JSON walk off text chunks.
                    if '"tool_calls"' in data:
                        for call in self._streamed_calls(payload, data):
                            yield call
                    if finish:
                        finish_reason = finish
                    if usage:
                        try:
                            yield usage_from(usage)
                        except SHAPE_ERRORS:
                            raise errors.ResponseStatusError(
                                f"{self.name}: the stream sent malformed usage: {data[:120]!r}"
                            ) from None
                if done:
                    break
            if not done and finish_reason is None:
                raise errors.ProviderConnectionError(
                    f"{self.name}: the stream ended before the answer was finished."
                )
            if finish_reason not in (None, "stop"):
                yield FinishReason(finish_reason)

    async def generate_images(
        self,
        prompt: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout: float | None = None,
        http_client: httpx.AsyncClient | None = None,
        **options: Any,
    ) -> ImagesResponse:
        """`POST /images/generations`: `options` (`n`, `size`, `response_format`, ...) go into
        the body as they are; an empty `model` is left out, so the server picks its default.

        Errors map as a chat's do (`core.providers.http`), a refused prompt to
        `ContentPolicyError`; 429 and 5xx are retried before the answer starts."""
        key = api_key or self.api_key
        if self.needs_auth and not key:
            raise errors.MissingAuthError(f"{self.name} needs an API key: set {self.key_env}.")
        body: dict[str, Any] = {"prompt": prompt}
        if model:
            body["model"] = model
        body.update(
            (name, value)
            for name, value in options.items()
            if value is not None and name not in _CLIENT_ONLY
        )
        default = self.timeout
        wait = (
            httpx.Timeout(timeout)
            if timeout
            else httpx.Timeout(
                default.connect,
                read=max(default.read or 0.0, IMAGE_READ_TIMEOUT),
                write=default.write,
                pool=default.pool,
            )
        )
        async with open_stream(
            self.name,
            f"{self.base_url}/images/generations",
            json_body=body,
            headers=self._headers(key, "application/json"),
            timeout=wait,
            max_retries=self.max_retries,
            key_hint=self.key_env,
            redact=Redactor(key),
            client=http_client or self.http_client,
        ) as response:
            raw = await response.aread()
        return self._read_images(raw, model)

    def _read_images(self, raw: bytes, model: str) -> ImagesResponse:
        try:
            payload = json.loads(raw)
            images = [
                Image(item.get("url"), item.get("b64_json"), item.get("revised_prompt"))
                for item in payload["data"]
            ]
            created = int(payload.get("created") or 0)
        except SHAPE_ERRORS:
            raise errors.ResponseStatusError(
                f"{self.name}: the answer was not a list of images: {raw[:200]!r}"
            ) from None
        if not images or not all(image.url or image.b64_json for image in images):
            raise errors.EmptyResponseError(f"{self.name} answered without an image.")
        return ImagesResponse(images, created=created, model=model, provider=self.name)
