"""Any server that speaks OpenAI's `POST /chat/completions`: OpenAI itself, the hosted
OpenAI-compatible APIs, and local Ollama, LM Studio, llama.cpp and vLLM servers."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from .. import errors
from ..types import FinishReason, Usage
from .base import BaseProvider, Messages, StreamItem
from .http import POOL_TIMEOUT, Redactor, open_stream
from .sse import iter_sse

DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_READ_TIMEOUT = 60.0
DEFAULT_MAX_RETRIES = 2
#: OpenAI accepts at most four stop strings; more are applied by the client alone.
MAX_SERVER_STOP_STRINGS = 4
#: Arguments the client handles itself and must not forward into the request body.
_CLIENT_ONLY = frozenset({"ignore_working", "ignore_stream", "api_key", "timeout", "stream"})


def usage_from(payload: dict[str, Any]) -> Usage:
    return Usage(
        int(payload.get("prompt_tokens") or 0),
        int(payload.get("completion_tokens") or 0),
        payload.get("total_tokens"),
    )


#: What reading a well-formed JSON value of the wrong shape raises.
_SHAPE_ERRORS = (LookupError, TypeError, AttributeError, ValueError)


def _chunk_fields(payload: dict[str, Any]) -> tuple[Any, Any, Usage | None]:
    """(text, finish reason, usage) of one streamed chunk; raises `_SHAPE_ERRORS` if malformed."""
    content = finish_reason = None
    choices = payload.get("choices")
    if choices:
        choice = choices[0]
        delta = choice.get("delta")
        if delta:
            content = delta.get("content")
        finish_reason = choice.get("finish_reason")
    usage = usage_from(payload["usage"]) if payload.get("usage") else None
    return content, finish_reason, usage


class OpenAICompatible(BaseProvider):
    """One OpenAI-compatible endpoint with its key, models and extra headers."""

    def __init__(
        self,
        name: str,
        base_url: str,
        api_key: str | None = None,
        default_model: str | None = None,
        models: list[str] | None = None,
        headers: dict[str, str] | None = None,
        *,
        needs_auth: bool = False,
        key_env: str = "the provider's API key setting",
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
    ) -> None:
        self._name = name
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key or None
        self.default_model = default_model
        self.models = list(models or [])
        self.headers = dict(headers or {})
        self.needs_auth = needs_auth
        self.working = bool(self.api_key) or not needs_auth
        self.key_env = key_env
        self.timeout = httpx.Timeout(connect_timeout, read=read_timeout, pool=POOL_TIMEOUT)
        self.max_retries = max_retries

    @property
    def name(self) -> str:
        return self._name

    def _request_headers(self, api_key: str | None) -> dict[str, str]:
        headers = {"Accept": "text/event-stream, application/json", **self.headers}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        return headers

    def _body(self, model: str, messages: Messages, stream: bool, kwargs: dict[str, Any]) -> dict:
        body: dict[str, Any] = {"model": model or self.default_model or "", "messages": messages}
        for key, value in kwargs.items():
            if value is not None and key not in _CLIENT_ONLY:
                body[key] = value
        stop = body.get("stop")
        if isinstance(stop, list) and len(stop) > MAX_SERVER_STOP_STRINGS:
            del body["stop"]
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return body

    async def create_async_generator(
        self,
        model: str,
        messages: Messages,
        *,
        stream: bool = True,
        api_key: str | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[StreamItem]:
        key = api_key or self.api_key
        if self.needs_auth and not key:
            raise errors.MissingAuthError(f"{self.name} needs an API key: set {self.key_env}.")
        request_timeout = httpx.Timeout(timeout) if timeout else self.timeout
        redact = Redactor(key)
        async with open_stream(
            self.name,
            f"{self.base_url}/chat/completions",
            json_body=self._body(model, messages, stream, kwargs),
            headers=self._request_headers(key),
            timeout=request_timeout,
            max_retries=self.max_retries,
            key_hint=self.key_env,
            redact=redact,
        ) as response:
            if stream and response.headers.get("content-type", "").startswith("text/event-stream"):
                async for item in self._read_stream(response, redact):
                    yield item
            else:
                for item in self._read_json(await response.aread()):
                    yield item

    def _read_json(self, body: bytes) -> list[StreamItem]:
        try:
            payload = json.loads(body)
            choice = payload["choices"][0]
            content = choice["message"].get("content") or ""
            usage = usage_from(payload["usage"]) if payload.get("usage") else None
        except _SHAPE_ERRORS:
            raise errors.ResponseStatusError(
                f"{self.name}: the answer was not a chat completion: {body[:200]!r}"
            ) from None
        items: list[StreamItem] = [content]
        if usage is not None:
            items.append(usage)
        if choice.get("finish_reason") not in (None, "stop"):
            items.append(FinishReason(choice["finish_reason"]))
        return items

    async def _read_stream(
        self, response: httpx.Response, redact: Redactor
    ) -> AsyncIterator[StreamItem]:
        finish_reason: str | None = None
        done = False
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
                if not isinstance(payload, dict):
                    continue
                if "error" in payload:
                    message = payload["error"]
                    if isinstance(message, dict):
                        message = message.get("message", message)
                    raise errors.ResponseStatusError(
                        redact(f"{self.name}: error inside the stream: {message}")
                    )
                try:
                    content, finish, usage = _chunk_fields(payload)
                except _SHAPE_ERRORS:
                    raise errors.ResponseStatusError(
                        f"{self.name}: the stream sent a malformed chunk: {data[:120]!r}"
                    ) from None
                if content:
                    yield content
                if finish:
                    finish_reason = finish
                if usage is not None:
                    yield usage
            if done:
                break
        if not done and finish_reason is None:
            raise errors.ProviderConnectionError(
                f"{self.name}: the stream ended before the answer was finished."
            )
        if finish_reason not in (None, "stop"):
            yield FinishReason(finish_reason)  # type: ignore[arg-type]
