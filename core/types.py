"""Response objects in the shape of OpenAI's (and so g4f's) chat completion types.

They are plain slotted classes rather than pydantic models: a stream of thousands of chunks
builds three objects per piece, and the benchmark shows validation would cost more than the
HTTP parsing. They keep the part of pydantic's surface callers use: attribute access and
`model_dump()`.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

#: The finish reasons OpenAI names. An OpenAI-compatible server may send another, which is
#: passed on as it was sent, so `FinishReason` takes any string.
FinishReasonName = Literal["stop", "length", "content_filter", "tool_calls", "error"]


class _Dumpable:
    """Attribute access plus a recursive `model_dump()`, shared by every response object."""

    __slots__: tuple[str, ...] = ()

    def model_dump(self) -> dict[str, Any]:
        return {name: _dump(getattr(self, name)) for name in self.__slots__}

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__name__}({fields})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self.model_dump() == other.model_dump()

    # Unhashable, as pydantic models are once they define `__eq__`.
    __hash__ = None  # type: ignore[assignment]  # typeshed types object.__hash__ as a method


def _dump(value: Any) -> Any:
    if isinstance(value, _Dumpable):
        return value.model_dump()
    if isinstance(value, list):
        return [_dump(item) for item in value]
    return value


class Usage(_Dumpable):
    """Token counts. A provider may yield one in its stream; the client attaches it.

    `estimated` is true when the client counted them itself (about four characters a token)
    because no server figure arrived, so a caller never mistakes a guess for a bill.
    `model_dump()` carries the flag only when it is true: a server's usage dumps in exactly
    OpenAI's shape.
    """

    __slots__ = ("completion_tokens", "estimated", "prompt_tokens", "total_tokens")

    def __init__(
        self,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        total_tokens: int | None = None,
        *,
        estimated: bool = False,
    ):
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens
        self.total_tokens = (
            prompt_tokens + completion_tokens if total_tokens is None else total_tokens
        )
        self.estimated = estimated

    def model_dump(self) -> dict[str, Any]:
        dumped: dict[str, Any] = {
            "completion_tokens": self.completion_tokens,
            "prompt_tokens": self.prompt_tokens,
            "total_tokens": self.total_tokens,
        }
        if self.estimated:
            dumped["estimated"] = True
        return dumped


class FinishReason:
    """Yielded by a provider to say why its text ended when that is not a plain `"stop"`."""

    __slots__ = ("reason",)

    def __init__(self, reason: FinishReasonName | str) -> None:
        self.reason = reason

    def __repr__(self) -> str:
        return f"FinishReason({self.reason!r})"


class ResponseId:
    """Yielded by a provider before its first text: the id the server gave this answer.

    The client uses it as the completion's `id`, as the openai SDK shows the server's own;
    an answer whose server sent none gets a generated `chatcmpl-…` id.
    """

    __slots__ = ("id",)

    def __init__(self, id: str) -> None:
        self.id = id

    def __repr__(self) -> str:
        return f"ResponseId({self.id!r})"


class Reasoning:
    """Yielded by a provider for a piece of the model's thinking, apart from its answer (g4f's
    `Reasoning`, its `token`): OpenAI-compatible servers' `reasoning_content` / `reasoning`
    deltas, Anthropic's thinking blocks, and `<think>` blocks in the text (`core.reasoning`).

    The client passes it on as a chunk whose `delta.reasoning_content` holds it and whose
    `delta.content` is None, so code that reads only `content` never sees thinking.
    """

    __slots__ = ("token",)

    def __init__(self, token: str) -> None:
        self.token = token

    def __str__(self) -> str:
        return self.token

    def __repr__(self) -> str:
        return f"Reasoning({self.token!r})"


class ProviderInfo:
    """Yielded by a fallback provider just before the first text: who is answering.

    The client keeps the first one it sees, which is the innermost provider's.
    """

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


class Function(_Dumpable):
    """The function a finished tool call names, its arguments a JSON string (OpenAI's
    `chat_completion_message_tool_call.Function`)."""

    __slots__ = ("arguments", "name")

    def __init__(self, name: str, arguments: str) -> None:
        self.arguments = arguments
        self.name = name


class ChatCompletionMessageToolCall(_Dumpable):
    """One tool call of a whole answer, its arguments gathered from every streamed piece."""

    __slots__ = ("function", "id", "type")

    def __init__(self, id: str, function: Function, type: str = "function") -> None:
        self.id = id
        self.function = function
        self.type = type


class ChoiceDeltaToolCallFunction(_Dumpable):
    """A piece of a streamed call's function: the name comes once, the arguments in pieces."""

    __slots__ = ("arguments", "name")

    def __init__(self, name: str | None = None, arguments: str | None = None) -> None:
        self.arguments = arguments
        self.name = name


class ChoiceDeltaToolCall(_Dumpable):
    """A piece of a streamed tool call, in OpenAI's chunk shape.

    Providers yield these as they read them (`index` tells parallel calls apart; `id`, `type`
    and the function's name come with a call's first piece), and the client puts each in a
    chunk's `delta.tool_calls` as it is.
    """

    __slots__ = ("function", "id", "index", "type")

    def __init__(
        self,
        index: int,
        id: str | None = None,
        function: ChoiceDeltaToolCallFunction | None = None,
        type: str | None = None,
    ) -> None:
        self.index = index
        self.id = id
        self.function = function
        self.type = type


def _dump_message(fields: ChatCompletionMessage | ChoiceDelta) -> dict[str, Any]:
    """A message's or delta's dump: `tool_calls` only when it called tools, and
    `reasoning_content` only when there is some, so a plain answer dumps in exactly OpenAI's
    shape."""
    dumped: dict[str, Any] = {"role": fields.role, "content": fields.content}
    if fields.tool_calls is not None:
        dumped["tool_calls"] = [call.model_dump() for call in fields.tool_calls]
    if fields.reasoning_content is not None:
        dumped["reasoning_content"] = fields.reasoning_content
    return dumped


class ChatCompletionMessage(_Dumpable):
    """`reasoning_content`: the model's thinking, as OpenAI-compatible servers name it (None
    when it had none); `reasoning` reads it under g4f's name."""

    __slots__ = ("content", "reasoning_content", "role", "tool_calls")

    def __init__(
        self,
        content: str | None,
        role: str = "assistant",
        tool_calls: list[ChatCompletionMessageToolCall] | None = None,
        reasoning_content: str | None = None,
    ) -> None:
        self.role = role
        self.content = content
        self.tool_calls = tool_calls
        self.reasoning_content = reasoning_content

    @property
    def reasoning(self) -> str | None:
        return self.reasoning_content

    def model_dump(self) -> dict[str, Any]:
        return _dump_message(self)


class Choice(_Dumpable):
    __slots__ = ("finish_reason", "index", "message")

    def __init__(self, message: ChatCompletionMessage, finish_reason: str | None, index: int = 0):
        self.index = index
        self.message = message
        self.finish_reason = finish_reason


class ChatCompletion(_Dumpable):
    """A whole answer, as `create(..., stream=False)` returns it."""

    __slots__ = ("choices", "created", "id", "model", "object", "provider", "usage")

    def __init__(
        self,
        content: str | None,
        finish_reason: str,
        *,
        id: str,
        created: int,
        model: str,
        provider: str,
        usage: Usage,
        reasoning_content: str | None = None,
        tool_calls: list[ChatCompletionMessageToolCall] | None = None,
    ) -> None:
        self.id = id
        self.object = "chat.completion"
        self.created = created
        self.model = model
        self.provider = provider
        message = ChatCompletionMessage(
            content, "assistant", tool_calls=tool_calls, reasoning_content=reasoning_content
        )
        self.choices = [Choice(message, finish_reason)]
        self.usage = usage


class ChoiceDelta(_Dumpable):
    """`reasoning_content`: a piece of the model's thinking (then `content` is None)."""

    __slots__ = ("content", "reasoning_content", "role", "tool_calls")

    def __init__(
        self,
        content: str | None,
        role: str | None = "assistant",
        tool_calls: list[ChoiceDeltaToolCall] | None = None,
        reasoning_content: str | None = None,
    ) -> None:
        self.role = role
        self.content = content
        self.tool_calls = tool_calls
        self.reasoning_content = reasoning_content

    @property
    def reasoning(self) -> str | None:
        return self.reasoning_content

    def model_dump(self) -> dict[str, Any]:
        return _dump_message(self)


class ChunkChoice(_Dumpable):
    __slots__ = ("delta", "finish_reason", "index")

    def __init__(self, delta: ChoiceDelta, finish_reason: str | None, index: int = 0) -> None:
        self.index = index
        self.delta = delta
        self.finish_reason = finish_reason


class ChatCompletionChunk(_Dumpable):
    """One piece of a streamed answer; the last one has `delta.content = None` and the usage."""

    __slots__ = ("choices", "created", "id", "model", "object", "provider", "usage")

    def __init__(
        self,
        content: str | None,
        finish_reason: str | None,
        id: str,
        created: int,
        model: str,
        provider: str,
        usage: Usage | None = None,
        reasoning_content: str | None = None,
        tool_calls: list[ChoiceDeltaToolCall] | None = None,
    ) -> None:
        self.id = id
        self.object = "chat.completion.chunk"
        self.created = created
        self.model = model
        self.provider = provider
        # Positional arguments throughout: this runs once per streamed piece.
        delta = ChoiceDelta(content, "assistant", tool_calls, reasoning_content)
        self.choices = [ChunkChoice(delta, finish_reason, 0)]
        self.usage = usage


class Image(_Dumpable):
    """One generated image, as OpenAI's (and g4f's) `Image`: a URL or the base64 data."""

    __slots__ = ("b64_json", "revised_prompt", "url")

    def __init__(
        self,
        url: str | None = None,
        b64_json: str | None = None,
        revised_prompt: str | None = None,
    ) -> None:
        self.url = url
        self.b64_json = b64_json
        self.revised_prompt = revised_prompt


class ImagesResponse(_Dumpable):
    """What `client.images.generate(...)` returns: `data[i].url` or `data[i].b64_json`."""

    __slots__ = ("created", "data", "model", "provider")

    def __init__(self, data: list[Image], *, created: int, model: str, provider: str) -> None:
        self.data = data
        self.created = created
        self.model = model
        self.provider = provider


def new_completion_id() -> tuple[str, int]:
    """A fresh `chatcmpl-…` id and creation time, made once per answer."""
    return f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
