"""Anthropic's Messages API (`POST /v1/messages`), streamed as its typed SSE events."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from .. import errors
from ..content import content_text
from ..redact import Redactor
from ..types import FinishReason, Reasoning, Usage
from .base import Messages, StreamItem
from .http_provider import SHAPE_ERRORS, Exchange, HTTPProvider
from .sse import iter_sse
from .tools import AnthropicToolReader, anthropic_tool_fields, anthropic_turns
from .wire import response_id, server_error

ANTHROPIC_BASE_URL = "https://api.anthropic.com/v1"
ANTHROPIC_VERSION = "2023-06-01"
#: The Messages API requires max_tokens; this is the answer length a chat reply may take.
DEFAULT_MAX_TOKENS = 4096
_STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
}


def split_system(messages: Messages) -> tuple[str | None, Messages]:
    """Anthropic takes the system prompt apart and wants user/assistant turns only.

    A turn's OpenAI-style parts become Anthropic's blocks (`core.content.anthropic_content`),
    tool calls and results too (`tools.anthropic_turns`); a system prompt given as parts keeps
    its text."""
    system = [content_text(m.get("content")) for m in messages if m.get("role") == "system"]
    return ("\n\n".join(system) or None), anthropic_turns(messages)


class Anthropic(HTTPProvider):
    path = "/messages"

    def __init__(
        self,
        api_key: str | None = None,
        *,
        name: str = "Anthropic",
        base_url: str = ANTHROPIC_BASE_URL,
        default_model: str | None = "claude-sonnet-4-5",
        models: list[str] | None = None,
        key_env: str = "ANTHROPIC_API_KEY",
        **options: Any,
    ) -> None:
        super().__init__(
            name,
            base_url,
            api_key,
            default_model=default_model,
            models=models or ["claude-*"],
            needs_auth=True,
            key_env=key_env,
            **options,
        )

    def _request(
        self, model: str, messages: Messages, stream: bool, key: str | None, options: dict[str, Any]
    ) -> tuple[dict[str, Any], dict[str, str]]:
        system, turns = split_system(messages)
        body: dict[str, Any] = {
            "model": model or self.default_model,
            "messages": turns,
            "max_tokens": options.get("max_tokens") or DEFAULT_MAX_TOKENS,
            "stream": stream,
        }
        if system:
            body["system"] = system
        if options.get("stop"):
            stop = options["stop"]
            body["stop_sequences"] = [stop] if isinstance(stop, str) else stop
        if options.get("temperature") is not None:
            body["temperature"] = options["temperature"]
        body.update(anthropic_tool_fields(options))
        return body, {"x-api-key": key or "", "anthropic-version": ANTHROPIC_VERSION}

    def _read_json(
        self, body: bytes, redact: Redactor, tools: AnthropicToolReader | None = None
    ) -> list[StreamItem]:
        """`tools`: the call's reader of `tool_use` blocks; without one they are read as plain
        calls (an `Exchange.whole` caller has no request body to tell a JSON answer by)."""
        try:
            payload = json.loads(body)
            blocks = payload["content"]
            text = "".join(b.get("text", "") for b in blocks if b.get("type") == "text")
            thinking = "".join(b.get("thinking", "") for b in blocks if b.get("type") == "thinking")
            usage = payload.get("usage") or {}
            tokens = Usage(
                int(usage.get("input_tokens") or 0), int(usage.get("output_tokens") or 0)
            )
            reason = _STOP_REASONS.get(payload.get("stop_reason") or "end_turn", "stop")
            tools = tools or AnthropicToolReader({})
            calls = tools.whole(payload["content"])
            reason = tools.finish_reason(reason)
        except SHAPE_ERRORS:
            raise errors.ResponseStatusError(
                f"{self.name}: the answer was not a message: {body[:200]!r}"
            ) from None
        # Id and usage before the text, as `OpenAICompatible._read_json` explains.
        ident = response_id(payload)
        items: list[StreamItem] = [tokens] if ident is None else [ident, tokens]
        if thinking:
            items.append(Reasoning(thinking))
        items.append(text)
        items.extend(calls)
        if reason != "stop":
            items.append(FinishReason(reason))
        return items

    async def _read(self, exchange: Exchange) -> AsyncIterator[StreamItem]:
        redact = exchange.redact
        async with exchange.open() as response:
            tools = AnthropicToolReader(exchange.body)
            if not exchange.is_stream(response):
                for item in self._read_json(await response.aread(), redact, tools):
                    yield item
                return
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
                    text = ident = call = thinking = None
                    try:
                        kind = payload.get("type", event.event)
                        if kind == "content_block_delta":
                            delta = payload.get("delta", {})
                            text = delta.get("text")
                            # Extended thinking: `thinking_delta`s in a `thinking` block.
                            thinking = delta.get("thinking")
                            if text is None and thinking is None:
                                call = tools.delta(payload)
                        elif kind == "content_block_start":
                            call = tools.start(payload)
                        elif kind == "message_start":
                            message = payload["message"]
                            input_tokens = int(message.get("usage", {}).get("input_tokens") or 0)
                            ident = response_id(message)
                        elif kind == "message_delta":
                            usage = payload.get("usage", {})
                            output_tokens = int(usage.get("output_tokens") or 0)
                            # message_delta's usage is cumulative; a proxy (LiteLLM) sends the
                            # prompt's count only here, after 0 in message_start.
                            input_tokens = int(usage.get("input_tokens") or input_tokens)
                            stop_reason = payload.get("delta", {}).get("stop_reason")
                            reason = _STOP_REASONS.get(stop_reason or "end_turn", "stop")
                        elif kind == "error" or (not kind and "error" in payload):
                            # Anthropic names the event; LiteLLM's proxy may send a bare
                            # `data: {"error": ...}` line with no `event: error` before it.
                            raise server_error(self.name, payload.get("error"), redact)
                    except SHAPE_ERRORS:
                        raise errors.ResponseStatusError(
                            f"{self.name}: the stream sent a malformed event: {event.data[:120]!r}"
                        ) from None
                    if text:
                        yield text
                    elif call is not None:
                        yield call
                    elif thinking:
                        yield Reasoning(thinking)
                    elif kind == "message_stop":
                        finished = True
                        break
                    elif ident is not None:
                        yield ident
                if finished:
                    break
            if not finished:
                raise errors.ProviderConnectionError(
                    f"{self.name}: the stream ended before the answer was finished."
                )
            yield Usage(input_tokens, output_tokens)
            reason = tools.finish_reason(reason)
            if reason != "stop":
                yield FinishReason(reason)
