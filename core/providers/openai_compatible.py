"""Any server that speaks OpenAI's `POST /chat/completions`: OpenAI itself, the hosted
OpenAI-compatible APIs, and local Ollama, LM Studio, llama.cpp and vLLM servers."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from .. import errors
from ..redact import Redactor
from ..types import FinishReason, Usage
from .base import Messages, StreamItem
from .http_provider import SHAPE_ERRORS, Exchange, HTTPProvider
from .sse import iter_sse
from .wire import response_id, server_error

#: OpenAI accepts at most four stop strings; more are applied by the client alone.
MAX_SERVER_STOP_STRINGS = 4
#: Arguments the client handles itself and must not forward into the request body.
_CLIENT_ONLY = frozenset({"ignore_working", "ignore_stream"})


def usage_from(payload: dict[str, Any]) -> Usage:
    return Usage(
        int(payload.get("prompt_tokens") or 0),
        int(payload.get("completion_tokens") or 0),
        payload.get("total_tokens"),
    )


def _chunk_fields(payload: dict[str, Any]) -> tuple[Any, Any, Any]:
    """(text, finish reason, usage dict) of one streamed chunk; raises `SHAPE_ERRORS` if malformed."""
    content = finish_reason = None
    choices = payload.get("choices")
    if choices:
        choice = choices[0]
        delta = choice.get("delta")
        if delta:
            content = delta.get("content")
        finish_reason = choice.get("finish_reason")
    usage = payload.get("usage")
    if usage is not None and not isinstance(usage, dict):
        raise TypeError("usage is not an object")
    return content, finish_reason, usage


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

    def _request(
        self, model: str, messages: Messages, stream: bool, key: str | None, options: dict[str, Any]
    ) -> tuple[dict[str, Any], dict[str, str]]:
        headers = {"Accept": "text/event-stream, application/json", **self.headers}
        if key:
            headers["Authorization"] = f"Bearer {key}"
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
        items.append(content)
        if choice.get("finish_reason") not in (None, "stop"):
            items.append(FinishReason(choice["finish_reason"]))
        return items

    def _irregular_chunk(self, payload: Any, data: str, redact: Redactor) -> tuple[Any, Any, Any]:
        """(text, finish reason, usage) of a chunk off the common shape: the role-only first
        chunk, the usage-only last one, an error sent inside the stream, or junk."""
        if not isinstance(payload, dict):
            return None, None, None
        if "error" in payload:
            raise server_error(self.name, payload["error"], redact)
        try:
            return _chunk_fields(payload)
        except SHAPE_ERRORS:
            raise errors.ResponseStatusError(
                f"{self.name}: the stream sent a malformed chunk: {data[:120]!r}"
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
                        content = choice["delta"]["content"]
                        finish = choice.get("finish_reason")
                        usage = payload.get("usage")
                    except (LookupError, TypeError, AttributeError):
                        content, finish, usage = self._irregular_chunk(payload, data, redact)
                    if content:
                        yield content
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
