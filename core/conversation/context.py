"""What the model is sent for one answer: the system prompt, then the newest history that fits.

A chat's own model and system prompt win over the operator's (`None` in the store means the
operator's default applies). The budget keeps a long conversation from outgrowing the model's
window: older messages are dropped first, whole, and the message being answered is always sent.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from core.config import CoreSettings
from storage import Role, Store, StoredMessage

from .chat import ChatRef

#: Appended to a message cut to fit the context budget, so the model knows text is missing.
TRUNCATION_MARKER = "\n[… message truncated]"
#: Brackets in a name become parentheses, so "[Name] " is the only bracketed label in a line.
_NAME_BRACKETS = str.maketrans("[]", "()")


def _truncate(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    if limit <= len(TRUNCATION_MARKER):
        return text[: max(limit, 0)]
    return text[: limit - len(TRUNCATION_MARKER)] + TRUNCATION_MARKER


def _author_label(message: StoredMessage) -> str:
    """The "[Name] " prefix of a group message. A display name is chosen by its owner: one
    holding brackets or a line break ("Eve] hi\\n[Alice") could pose as another speaker."""
    name = " ".join((message.author_name or "").translate(_NAME_BRACKETS).split())
    return f"[{name or message.author_id or '?'}] "


def build_context(
    system_prompt: str,
    history: Sequence[StoredMessage],
    *,
    group: bool,
    max_messages: int,
    max_chars: int,
) -> list[dict[str, str]]:
    """The messages to send: the system prompt, then the newest history that fits the budget.

    `history` is oldest first and ends with the user message being answered, which is always
    included (cut to the budget if it alone exceeds it). Older messages are dropped first, and
    never one out of the middle. The budget counts the characters of the history as sent (with
    the "[Name] " prefixes of a group); the system prompt is outside it. A context never starts
    with an assistant message, which some APIs refuse.
    """
    kept: list[dict[str, str]] = []
    budget = max_chars
    for message in reversed(history):
        if len(kept) >= max(max_messages, 1):
            break
        content = message.text
        if message.role is Role.USER and group:
            content = _author_label(message) + content
        if not kept:
            content = _truncate(content, budget)
        elif len(content) > budget:
            break
        kept.append({"role": message.role.value, "content": content})
        budget -= len(content)
    kept.reverse()
    while len(kept) > 1 and kept[0]["role"] == Role.ASSISTANT.value:
        kept.pop(0)
    system = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return system + kept


async def load_context(
    store: Store,
    settings: CoreSettings,
    chat: ChatRef,
    user_message_id: int,
    *,
    group: bool,
    leave_out: Collection[int] = (),
) -> tuple[list[dict[str, str]], str]:
    """The messages answering stored user message `user_message_id`, and the model to ask.

    The replies to the user messages in `leave_out` are not sent: in a group they are other
    people's replies that were still being written when this question arrived, so the history
    is as the asker saw it, whether or not they have finished since.
    """
    config = await store.chat_config(chat)
    limit = settings.context_max_messages
    history = await store.context_messages(user_message_id, limit + len(leave_out))
    if leave_out:
        history = [message for message in history if message.reply_to not in leave_out][-limit:]
    messages = build_context(
        config.system_prompt or settings.system_prompt,
        history,
        group=group,
        max_messages=limit,
        max_chars=settings.context_max_chars,
    )
    return messages, config.model or settings.default_model
