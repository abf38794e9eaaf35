"""Tool calling on both wires: OpenAI's shapes as the core's own, Anthropic's translated.

The core speaks OpenAI's chat format, so `tools`, `tool_choice`, `parallel_tool_calls` and
`response_format` go to OpenAI-compatible servers as they are, and their `tool_calls` (streamed
in pieces under `delta.tool_calls`, or whole under `message.tool_calls`) become
`ChoiceDeltaToolCall` items here. Anthropic's Messages API names the same things differently:
tools carry an `input_schema`, `tool_choice` is `{"type": "auto" | "any" | "tool" | "none"}`,
a call is a `tool_use` block whose input streams as `input_json_delta` pieces, and a result is
a `tool_result` block in a user turn. This module does both translations, in one place.

Anthropic has no `response_format`. As its documentation advises for JSON output, a JSON schema
(or `json_object`, any object) becomes one forced tool whose input is the answer: its
`input_json_delta` pieces are read back as the answer's text, so the caller sees JSON text as
an OpenAI server would send it.
"""

from __future__ import annotations

import json
from typing import Any

from .. import errors
from ..content import anthropic_content
from ..types import ChoiceDeltaToolCall, ChoiceDeltaToolCallFunction
from .base import Messages, StreamItem

#: The tool a `response_format` becomes on Anthropic; its input is the answer's text.
RESPONSE_FORMAT_TOOL = "response_format"
#: What Anthropic says for a tool it should not call: OpenAI's `"none"`.
_ANTHROPIC_CHOICES = {"auto": "auto", "required": "any", "none": "none"}


# -- OpenAI ------------------------------------------------------------------------------------


def openai_tool_calls(calls: Any) -> list[ChoiceDeltaToolCall]:
    """The tool calls of a streamed delta or a whole message, as delta pieces.

    A whole message's calls have no `index`: their position is theirs. Raises one of
    `SHAPE_ERRORS` when the server's list is malformed, as every other reader does.
    """
    if calls is None:
        return []
    if not isinstance(calls, list):
        raise TypeError("tool_calls is not a list")
    pieces = []
    for position, call in enumerate(calls):
        function = call.get("function") or {}
        index = call.get("index", position)
        if isinstance(index, bool) or not isinstance(index, int):
            raise TypeError("a tool call's index is not an integer")
        pieces.append(
            ChoiceDeltaToolCall(
                index,
                call.get("id") or None,
                ChoiceDeltaToolCallFunction(function.get("name"), function.get("arguments")),
                call.get("type") or None,
            )
        )
    return pieces


# -- Anthropic requests ------------------------------------------------------------------------


def anthropic_tool_fields(options: dict[str, Any]) -> dict[str, Any]:
    """The Messages API fields for a call's `tools`, `tool_choice`, `parallel_tool_calls` and
    `response_format`; an `InvalidRequestError` for what Anthropic cannot be asked."""
    fields: dict[str, Any] = {}
    tools = options.get("tools")
    response_format = options.get("response_format")
    if tools:
        fields["tools"] = [_anthropic_tool(tool) for tool in tools]
    choice = _anthropic_choice(options.get("tool_choice"))
    schema = _response_schema(response_format)
    if schema is not None:
        if tools:
            raise errors.InvalidRequestError(
                "Anthropic answers in a JSON schema through a forced tool, so response_format "
                "cannot be combined with tools there: pass one or the other."
            )
        fields["tools"] = [
            {
                "name": RESPONSE_FORMAT_TOOL,
                "description": "Answer by calling this tool; its input is the whole answer.",
                "input_schema": schema,
            }
        ]
        choice = {"type": "tool", "name": RESPONSE_FORMAT_TOOL}
    if options.get("parallel_tool_calls") is False and "tools" in fields:
        choice = {**(choice or {"type": "auto"}), "disable_parallel_tool_use": True}
    if choice is not None:
        fields["tool_choice"] = choice
    return fields


def _anthropic_tool(tool: Any) -> dict[str, Any]:
    function = tool.get("function") if isinstance(tool, dict) else None
    if (
        not isinstance(tool, dict)
        or tool.get("type", "function") != "function"
        or not (isinstance(function, dict) and isinstance(function.get("name"), str))
    ):
        raise errors.InvalidRequestError(
            f"Anthropic takes function tools only, {{'type': 'function', 'function': "
            f"{{'name', 'description', 'parameters'}}}}; got {tool!r:.80}"
        )
    converted: dict[str, Any] = {
        "name": function["name"],
        # Anthropic requires a schema; OpenAI lets a function without parameters take none.
        "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
    }
    if function.get("description"):
        converted["description"] = function["description"]
    return converted


def _anthropic_choice(choice: Any) -> dict[str, Any] | None:
    if choice is None:
        return None
    if isinstance(choice, str) and choice in _ANTHROPIC_CHOICES:
        return {"type": _ANTHROPIC_CHOICES[choice]}
    function = choice.get("function") if isinstance(choice, dict) else None
    if isinstance(function, dict) and isinstance(function.get("name"), str):
        return {"type": "tool", "name": function["name"]}
    raise errors.InvalidRequestError(
        "tool_choice must be 'auto', 'required', 'none' or "
        f"{{'type': 'function', 'function': {{'name': ...}}}}; got {choice!r:.80}"
    )


def _response_schema(response_format: Any) -> dict[str, Any] | None:
    """The JSON schema a `response_format` asks of Anthropic; None for plain text."""
    kind = response_format.get("type") if isinstance(response_format, dict) else response_format
    if response_format is None or kind == "text":
        return None
    if kind == "json_object":
        return {"type": "object"}
    spec = response_format.get("json_schema") if kind == "json_schema" else None
    schema = spec.get("schema") if isinstance(spec, dict) else None
    if isinstance(schema, dict) and schema.get("type", "object") == "object":
        return schema
    raise errors.InvalidRequestError(
        "Anthropic can be asked for response_format {'type': 'text'}, {'type': 'json_object'} "
        "or {'type': 'json_schema', 'json_schema': {'schema': <an object schema>}}; "
        f"got {response_format!r:.120}"
    )


def anthropic_turns(messages: Messages) -> Messages:
    """User and assistant turns in Anthropic's form, tool calls and results included.

    An assistant message's `tool_calls` become `tool_use` blocks after its text; `tool`
    messages become `tool_result` blocks, the results of one round of calls gathered into
    one user turn, as Anthropic wants them all in the turn right after its calls.
    """
    turns: Messages = []
    for message in messages:
        role = message.get("role")
        if role == "tool":
            result = _tool_result(message)
            previous = turns[-1] if turns else None
            if previous is not None and previous.get("tool_results"):
                previous["content"].append(result)
            else:
                turns.append({"role": "user", "content": [result], "tool_results": True})
        elif role == "assistant" and message.get("tool_calls"):
            turns.append({"role": "assistant", "content": _tool_use_blocks(message)})
        elif role in ("user", "assistant"):
            turns.append({"role": role, "content": anthropic_content(message.get("content"))})
    for turn in turns:
        turn.pop("tool_results", None)
    return turns


def _tool_use_blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = anthropic_content(message.get("content"))
    blocks: list[dict[str, Any]] = (
        ([{"type": "text", "text": content}] if content else [])
        if isinstance(content, str)
        else [block for block in content if block.get("type") != "text" or block.get("text")]
    )
    for call in message["tool_calls"]:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not call.get("id") or not function.get("name"):
            raise errors.InvalidRequestError(
                f"A tool call needs an id and a function name; got {call!r:.80}"
            )
        arguments = function.get("arguments") or "{}"
        try:
            arguments_object = json.loads(arguments)
        except ValueError:
            raise errors.InvalidRequestError(
                f"Tool call {call['id']}: its arguments are not JSON: {arguments!r:.80}"
            ) from None
        if not isinstance(arguments_object, dict):
            raise errors.InvalidRequestError(
                f"Tool call {call['id']}: its arguments must be a JSON object."
            )
        blocks.append(
            {
                "type": "tool_use",
                "id": call["id"],
                "name": function["name"],
                "input": arguments_object,
            }
        )
    return blocks


def _tool_result(message: dict[str, Any]) -> dict[str, Any]:
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        raise errors.InvalidRequestError("A 'tool' message needs the tool_call_id it answers.")
    return {
        "type": "tool_result",
        "tool_use_id": call_id,
        "content": anthropic_content(message.get("content")),
    }


# -- Anthropic answers -------------------------------------------------------------------------


class AnthropicToolReader:
    """Reads one answer's `tool_use` blocks into OpenAI's tool call pieces.

    Anthropic numbers every content block (text and tool alike); OpenAI numbers the calls only,
    so the reader keeps which block is which call. The forced `response_format` tool's input is
    the answer's text instead (see the module docstring).
    """

    __slots__ = ("_calls", "_json_blocks", "answers_in_json")

    def __init__(self, body: dict[str, Any]) -> None:
        choice = body.get("tool_choice")
        #: Whether this call asked for JSON through the forced tool.
        self.answers_in_json = isinstance(choice, dict) and choice.get("name") == (
            RESPONSE_FORMAT_TOOL
        )
        self._calls: dict[int, int] = {}  # Anthropic's block index -> OpenAI's call index
        self._json_blocks: set[int] = set()

    def start(self, payload: dict[str, Any]) -> StreamItem:
        """A `content_block_start` event: a call's first piece (id and name), or None."""
        block = payload["content_block"]
        if block.get("type") != "tool_use":
            return None
        index = payload["index"]
        if self.answers_in_json and block.get("name") == RESPONSE_FORMAT_TOOL:
            self._json_blocks.add(index)
            return None
        call = len(self._calls)
        self._calls[index] = call
        return ChoiceDeltaToolCall(
            call, block["id"], ChoiceDeltaToolCallFunction(block["name"], ""), "function"
        )

    def delta(self, payload: dict[str, Any]) -> StreamItem:
        """An `input_json_delta`: a piece of a call's arguments (or of the JSON answer)."""
        delta = payload["delta"]
        if delta.get("type") != "input_json_delta":
            return None
        index = payload["index"]
        piece = delta.get("partial_json") or ""
        if index in self._json_blocks:
            return piece
        call = self._calls.get(index)
        if call is None or not piece:
            return None
        return ChoiceDeltaToolCall(call, None, ChoiceDeltaToolCallFunction(None, piece))

    def whole(self, blocks: list[dict[str, Any]]) -> list[StreamItem]:
        """A whole message's `tool_use` blocks: each call in one piece, or the JSON answer."""
        items: list[StreamItem] = []
        for block in blocks:
            if block.get("type") != "tool_use":
                continue
            arguments = json.dumps(block.get("input") or {}, ensure_ascii=False)
            if self.answers_in_json and block.get("name") == RESPONSE_FORMAT_TOOL:
                items.append(arguments)
                continue
            call = len(self._calls)
            self._calls[call] = call
            items.append(
                ChoiceDeltaToolCall(
                    call,
                    block["id"],
                    ChoiceDeltaToolCallFunction(block["name"], arguments),
                    "function",
                )
            )
        return items

    def finish_reason(self, reason: str) -> str:
        """`tool_calls` stays only when the answer called a tool the caller gave."""
        if reason == "tool_calls" and self.answers_in_json and not self._calls:
            return "stop"
        return reason
