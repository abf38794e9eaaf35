"""Anthropic's Messages API (`POST /v1/messages`), streamed as its typed SSE events."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from .. import errors
from ..types import FinishReason, Usage
from .base import BaseProvider, Messages, StreamItem
from .http import POOL_TIMEOUT, Redactor, open_stream
from .openai_compatible import DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_RETRIES, DEFAULT_READ_TIMEOUT
from .sse import iter_sse

ANTHROPIC_BASE_URL = "https://api.anthropic.com/v1"
ANTHROPIC_VERSION = "2023-06-01"
#: The Messages API requires max_tokens; this is the answer length a chat reply may take.
DEFAULT_MAX_TOKENS = 4096
_STOP_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length"}
#: What reading a well-formed JSON value of the wrong shape raises.
_SHAPE_ERRORS = (LookupError, TypeError, AttributeError, ValueError)


def split_system(messages: Messages) -> tuple[str | None, Messages]:
    """Anthropic takes the system prompt apart and wants user/assistant turns only."""
    system = [str(m.get("content") or "") for m in messages if m.get("role") == "system"]
    turns = [
        {"role": m["role"], "content": m.get("content") or ""}
        for m in messages
        if m.get("role") in ("user", "assistant")
    ]
    return ("\n\n".join(system) or None), turns


class Anthropic(BaseProvider):
    needs_auth = True

    def __init__(
        self,
        api_key: str | None = None,
        *,
        name: str = "Anthropic",
        base_url: str = ANTHROPIC_BASE_URL,
        default_model: str | None = "claude-sonnet-4-5",
        models: list[str] | None = None,
        key_env: str = "ANTHROPIC_API_KEY",
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
    ) -> None:
        self._name = name
        self.api_key = api_key or None
        self.base_url = base_url.rstrip("/")
        self.default_model = default_model
        self.models = list(models or ["claude-*"])
        self.key_env = key_env
        self.working = bool(self.api_key)
        self.timeout = httpx.Timeout(connect_timeout, read=read_timeout, pool=POOL_TIMEOUT)
        self.max_retries = max_retries

    @property
    def name(self) -> str:
        return self._name

    async def create_async_generator(
        self,
        model: str,
        messages: Messages,
        *,
        stream: bool = True,
        api_key: str | None = None,
        timeout: float | None = None,
        max_tokens: int | None = None,
        stop: list[str] | None = None,
        temperature: float | None = None,
        **_: Any,
    ) -> AsyncIterator[StreamItem]:
        key = api_key or self.api_key
        if not key:
            raise errors.MissingAuthError(f"{self.name} needs an API key: set {self.key_env}.")
        system, turns = split_system(messages)
        body: dict[str, Any] = {
            "model": model or self.default_model,
            "messages": turns,
            "max_tokens": max_tokens or DEFAULT_MAX_TOKENS,
            "stream": stream,
        }
        if system:
            body["system"] = system
        if stop:
            body["stop_sequences"] = stop
        if temperature is not None:
            body["temperature"] = temperature
        headers = {"x-api-key": key, "anthropic-version": ANTHROPIC_VERSION}
        redact = Redactor(key)
        async with open_stream(
            self.name,
            f"{self.base_url}/messages",
            json_body=body,
            headers=headers,
            timeout=httpx.Timeout(timeout) if timeout else self.timeout,
            max_retries=self.max_retries,
            key_hint=self.key_env,
            redact=redact,
        ) as response:
            if stream:
                async for item in self._read_stream(response, redact):
                    yield item
            else:
                for item in self._read_json(await response.aread()):
                    yield item

    def _read_json(self, body: bytes) -> list[StreamItem]:
        try:
            payload = json.loads(body)
            text = "".join(b.get("text", "") for b in payload["content"] if b.get("type") == "text")
            usage = payload.get("usage") or {}
            tokens = Usage(
                int(usage.get("input_tokens") or 0), int(usage.get("output_tokens") or 0)
            )
            reason = _STOP_REASONS.get(payload.get("stop_reason") or "end_turn", "stop")
        except _SHAPE_ERRORS:
            raise errors.ResponseStatusError(
                f"{self.name}: the answer was not a message: {body[:200]!r}"
            ) from None
        items: list[StreamItem] = [text, tokens]
        if reason != "stop":
            items.append(FinishReason(reason))  # type: ignore[arg-type]
        return items

    async def _read_stream(
        self, response: httpx.Response, redact: Redactor
    ) -> AsyncIterator[StreamItem]:
        input_tokens = output_tokens = 0
        reason = "stop"
        finished = False
        async for events in iter_sse(response.aiter_bytes()):
            for event in events:
                try:
                    payload = json.loads(event.data)
                except ValueError:
                    raise errors.ResponseStatusError(
                        f"{self.name}: the stream sent invalid JSON: {event.data[:120]!r}"
                    ) from None
                text = error = None
                try:
                    kind = payload.get("type", event.event)
                    if kind == "content_block_delta":
                        text = payload.get("delta", {}).get("text")
                    elif kind == "message_start":
                        input_tokens = int(
                            payload["message"].get("usage", {}).get("input_tokens") or 0
                        )
                    elif kind == "message_delta":
                        output_tokens = int(payload.get("usage", {}).get("output_tokens") or 0)
                        stop_reason = payload.get("delta", {}).get("stop_reason")
                        reason = _STOP_REASONS.get(stop_reason or "end_turn", "stop")
                    elif kind == "error":
                        error = payload.get("error", {})
                        error = error.get("message", error) if isinstance(error, dict) else error
                except _SHAPE_ERRORS:
                    raise errors.ResponseStatusError(
                        f"{self.name}: the stream sent a malformed event: {event.data[:120]!r}"
                    ) from None
                if text:
                    yield text
                elif kind == "message_stop":
                    finished = True
                    break
                elif kind == "error":
                    raise errors.ResponseStatusError(
                        redact(f"{self.name}: error inside the stream: {error}")
                    )
            if finished:
                break
        if not finished:
            raise errors.ProviderConnectionError(
                f"{self.name}: the stream ended before the answer was finished."
            )
        yield Usage(input_tokens, output_tokens)
        if reason != "stop":
            yield FinishReason(reason)  # type: ignore[arg-type]
