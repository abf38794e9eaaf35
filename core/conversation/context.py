"""What the model is sent for one answer: the system prompt, then the newest history that fits.

A chat's own model and system prompt win over the operator's (`None` in the store means the
operator's default applies). The budget keeps a long conversation from outgrowing the model's
window: older messages are dropped first, whole, and the message being answered is always sent.

Images go as OpenAI-style content parts (`{"type": "image_url", "image_url": {"url": data URL}}`
after the message's text part), for the newest `CONTEXT_IMAGE_TURNS` user turns only; an older
message says "[image]" once per image it had, so the model still knows one was there. The
character budget counts text only: an image's cost in tokens depends on the provider, not on
the size of its data URL, and capping how many turns carry images is what bounds it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from core.config import CoreSettings
from core.images import data_url
from core.personas import Persona
from storage import MessageImage, Role, Store, StoredMessage

from .chat import ChatRef

#: Appended to a message cut to fit the context budget, so the model knows text is missing.
TRUNCATION_MARKER = "\n[… message truncated]"
#: What an image of an older turn becomes: the model sees that one was there, not what it was.
IMAGE_PLACEHOLDER = "[image]"
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


def _with_images(text: str, images: Sequence[MessageImage]) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    return parts + [
        {"type": "image_url", "image_url": {"url": data_url(image)}} for image in images
    ]


def _placeholders(count: int) -> str:
    return " ".join([IMAGE_PLACEHOLDER] * count)


def build_context(
    system_prompt: str,
    history: Sequence[StoredMessage],
    *,
    group: bool,
    max_messages: int,
    max_chars: int,
    images: Mapping[int, Sequence[MessageImage]] | None = None,
) -> list[dict[str, Any]]:
    """The messages to send: the system prompt, then the newest history that fits the budget.

    `history` is oldest first and ends with the user message being answered, which is always
    included (cut to the budget if it alone exceeds it). Older messages are dropped first, and
    never one out of the middle. The budget counts the characters of the history as sent (with
    the "[Name] " prefixes of a group); the system prompt is outside it. A context never starts
    with an assistant message, which some APIs refuse.

    `images` holds the images to send, by message id; a message that had images but is not in
    it gets one `IMAGE_PLACEHOLDER` per image before its text instead. A message sent with
    images has a list of parts as its content, its text (counted in the budget) first.
    """
    images = images or {}
    kept: list[dict[str, Any]] = []
    budget = max_chars
    for message in reversed(history):
        if len(kept) >= max(max_messages, 1):
            break
        content = message.text
        attached = images.get(message.id, ()) if message.image_count else ()
        if message.image_count and not attached:
            content = "\n".join(filter(None, (_placeholders(message.image_count), content)))
        if message.role is Role.USER and group:
            content = _author_label(message) + content
        if not kept:
            content = _truncate(content, budget)
        elif len(content) > budget:
            break
        sent: str | list[dict[str, Any]] = _with_images(content, attached) if attached else content
        kept.append({"role": message.role.value, "content": sent})
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
    sees_images: Callable[[str], bool] | None = None,
    persona: Persona | None = None,
) -> tuple[list[dict[str, Any]], str]:
    """The messages answering stored user message `user_message_id`, and the model to ask.

    The replies to the user messages in `leave_out` are not sent: in a group they are other
    people's replies that were still being written when this question arrived, so the history
    is as the asker saw it, whether or not they have finished since. The images of the newest
    `context_image_turns` user messages are read from the store, and only theirs; none when
    `sees_images` says the chat's model cannot see (every image is then "[image]").
    The chat's `persona` fills in the prompt and model the chat did not set itself, before the
    operator's (`core.personas` on precedence).
    """
    config = await store.chat_config(chat)
    limit = settings.context_max_messages
    history = await store.context_messages(user_message_id, limit + len(leave_out))
    if leave_out:
        history = [message for message in history if message.reply_to not in leave_out][-limit:]
    newest_turns = [m for m in reversed(history) if m.role is Role.USER]
    persona_model = persona.model if persona is not None else None
    model = config.model or persona_model or settings.default_model
    wanted = [m.id for m in newest_turns[: settings.context_image_turns] if m.image_count]
    if wanted and sees_images is not None and not sees_images(model):
        wanted = []
    images = await store.message_images(wanted) if wanted else {}
    messages = build_context(
        config.system_prompt
        or (persona.system_prompt if persona is not None else None)
        or settings.system_prompt,
        history,
        group=group,
        max_messages=limit,
        max_chars=settings.context_max_chars,
        images=images,
    )
    return messages, model
