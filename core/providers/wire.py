"""What OpenAI- and Anthropic-style servers put around an answer's text, read alike for both.

The answer's id: the server's own, as the openai SDK shows it (`ResponseId`).

Errors a server reports in the body of an answer that began with HTTP 200: OpenAI-compatible
servers send `data: {"error": {...}}` in the stream, Anthropic an `error` event. What the
server writes there is not fit for a chat: LiteLLM's proxy, for one, puts the whole Python
traceback in the message (`f"{exc}\n\n{traceback}"`). So the raised error carries one short
line (what the console shows and the history stores; the bots show only its `user_hint`) and
the full text goes to the log, once, here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from .. import errors
from ..types import ResponseId

log = logging.getLogger(__name__)

#: Longest piece of the server's own text kept in the raised error's message.
MAX_SERVER_TEXT = 160
#: Said after the short line when the server's text was longer, so an operator reading the
#: stored error knows where the rest is.
CUT_NOTE = " [...] (full text in the log)"


def response_id(payload: Any) -> ResponseId | None:
    """The server's id of its answer, from a chunk, an event's message or a whole body."""
    ident = payload.get("id") if isinstance(payload, dict) else None
    return ResponseId(ident) if isinstance(ident, str) and ident else None


def server_error(
    provider: str, error: Any, redact: Callable[[str], str]
) -> errors.ResponseStatusError:
    """The typed error for an `error` object a server sent in its answer's body."""
    message, status = _message_and_status(error)
    full = redact(message)
    log.warning("%s: the server reported an error mid-answer: %s", provider, full)
    return errors.ResponseStatusError(
        f"{provider}: error inside the stream: {short_line(full)}", status
    )


def short_line(text: str) -> str:
    """The first non-blank line of `text`, its spaces collapsed, cut to `MAX_SERVER_TEXT`."""
    lines = [" ".join(line.split()) for line in text.splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        return "(no message)"
    first = lines[0]
    if len(first) > MAX_SERVER_TEXT:
        return first[:MAX_SERVER_TEXT].rstrip() + CUT_NOTE
    return first + CUT_NOTE if len(lines) > 1 else first


def _message_and_status(error: Any) -> tuple[str, int | None]:
    """(message, HTTP-like status) of an OpenAI-, Anthropic- or LiteLLM-shaped error object.

    LiteLLM sends the code as a string ("500") and "None" for an unknown type.
    """
    if not isinstance(error, dict):
        return str(error), None
    message = error.get("message")
    kind = error.get("type")
    text = str(message) if message is not None else str(error)
    if isinstance(kind, str) and kind not in ("", "None") and not text.startswith(kind):
        text = f"{kind}: {text}"
    return text, _status(error.get("code"))


def _status(code: Any) -> int | None:
    try:
        status = int(code)
    except (TypeError, ValueError):
        return None
    return status if 100 <= status <= 599 else None
