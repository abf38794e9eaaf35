"""Summarising the turns that fell out of the context window (`SUMMARY_MODEL`).

The summary is rolling: the previous summary and the turns newly left out go to the summary
model, which writes one summary of both, so every turn is summarised once however long the
conversation grows. It asks the model through the core client, like any answer, without
streaming. What it sends is bounded by the summary model's own window: when the turns newly
left out do not fit it, the oldest of them are the ones not read.

Each call comes back with what it is charged (`core.usage.charged_usage`, as a reply's is):
the summary is written on behalf of the reply that needed it, and the service records it in
the usage ledger as that reply's user's and chat's spend.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from core.client import AsyncClient
from core.content import CHARS_PER_TOKEN, MESSAGE_TOKENS, content_text, message_tokens
from core.types import Usage
from core.usage import charged_usage
from storage import Role, StoredMessage

#: What the summary model is told to do; the transcript follows as the user message.
SUMMARY_INSTRUCTIONS = (
    "You keep the memory of a chat. Summarise the conversation below for the assistant who "
    "will carry it on: the facts, names, decisions, preferences and open questions it needs, "
    "in at most 200 words, as plain sentences. Write only the summary."
)
#: Above the previous summary in the transcript, so the model folds it in rather than repeats.
PREVIOUS_LABEL = "Summary so far:"
#: Tokens asked for at most: the instructions ask for 200 words, about 270 tokens.
SUMMARY_MAX_TOKENS = 400


def transcript(previous: str, turns: Sequence[StoredMessage], max_chars: int) -> str:
    """The previous summary and `turns` as lines to summarise, at most `max_chars` long: the
    oldest turns are the ones dropped when they do not all fit."""
    lines = [
        f"{'User' if m.role is Role.USER else 'Assistant'}"
        f"{f' ({m.author_name})' if m.role is Role.USER and m.author_name else ''}: {m.text}"
        for m in turns
    ]
    head = f"{PREVIOUS_LABEL}\n{previous}\n\n" if previous else ""
    body = "\n".join(lines)
    room = max(max_chars - len(head), 0)
    return head + (body[-room:] if len(body) > room else body)


@dataclass(frozen=True, slots=True)
class SummaryCall:
    """One call to the summary model: what it wrote ("" when nothing) and what it costs."""

    text: str
    model: str
    provider: str | None
    usage: Usage


class Summariser:
    """Writes a conversation's rolling summary with `model`, through `client`."""

    def __init__(self, client: AsyncClient, model: str) -> None:
        self.client = client
        self.model = model

    async def summarise(self, previous: str, turns: Sequence[StoredMessage]) -> SummaryCall:
        """One summary of `previous` (the summary so far, or "") and `turns`, with what the
        call is charged. Raises what the client raises: a request that failed is not billed.
        An empty answer comes back as one (`text` ""): it is no summary, but it was billed."""
        window = self.client.context_window(self.model)
        spare = window.prompt_budget - message_tokens(SUMMARY_INSTRUCTIONS) - MESSAGE_TOKENS
        room = spare * CHARS_PER_TOKEN
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": SUMMARY_INSTRUCTIONS},
            {"role": "user", "content": transcript(previous, turns, room)},
        ]
        response = await self.client.chat.completions.create(
            messages, model=self.model, max_tokens=SUMMARY_MAX_TOKENS
        )
        written = content_text(response.choices[0].message.content)
        return SummaryCall(
            written.strip(),
            response.model or self.model,
            response.provider,
            charged_usage(response.usage, messages, len(written)),
        )
