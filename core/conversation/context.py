"""What the model is sent for one answer: the system prompt, then the newest history that fits.

A chat's own model and system prompt win over the operator's (`None` in the store means the
operator's default applies). The budget keeps a long conversation from outgrowing the model's
window: older messages are dropped first, whole, and the message being answered is always sent.
The budget is the model's context window less its output reserve (`core.models.context_window`),
in tokens as `core.content.message_tokens` counts them with the model's tokenizer where Parley
has its family's (`core.tokens`: OpenAI's), an estimate otherwise, with CONTEXT_MAX_MESSAGES
and CONTEXT_MAX_CHARS as upper bounds on top.

With `SUMMARY_MODEL` set, the turns left out are summarised (`summary.Summariser`), the
summary stored and sent in the system message, after the system prompt: room for it is kept
from the turns once turns are left out, and a summary longer than that room is cut to it.
A reply chain (a branch) is sent no summary, and makes none: the stored one covers the
conversation's newest line, which went on past the answer the branch replies to.
The summary model's call is handed back with the context (`Context.summary_call`), for the
caller to charge with the reply it was made for.

Images go as OpenAI-style content parts (`{"type": "image_url", "image_url": {"url": data URL}}`
after the message's text part), for the newest `CONTEXT_IMAGE_TURNS` user turns only; an older
message says "[image]" once per image it had, so the model still knows one was there. The
character budget counts text only: an image's cost in tokens depends on the provider, not on
the size of its data URL, and capping how many turns carry images is what bounds it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from core.config import CoreSettings
from core.content import CHARS_PER_TOKEN, IMAGE_TOKENS, MESSAGE_TOKENS, message_tokens
from core.images import data_url
from core.models import ContextWindow, context_window
from core.personas import Persona
from core.tokens import Counter, counter_for, estimate_tokens
from storage import HistorySummary, MessageImage, Role, Store, StoredMessage

from .chain import REPLY_CHAIN_MAX_TURNS, ChainTurn, as_history
from .chat import ChatRef
from .summary import SUMMARY_MAX_TOKENS, Summariser, SummaryCall

log = logging.getLogger(__name__)

#: Appended to a message cut to fit the context budget, so the model knows text is missing.
TRUNCATION_MARKER = "\n[… message truncated]"
#: What an image of an older turn becomes: the model sees that one was there, not what it was.
IMAGE_PLACEHOLDER = "[image]"
#: Brackets in a name become parentheses, so "[Name] " is the only bracketed label in a line.
_NAME_BRACKETS = str.maketrans("[]", "()")
#: Between the system prompt and the summary of the turns left out.
SUMMARY_HEADING = "Summary of the earlier conversation (its messages are not shown):\n"
#: At most this share of the prompt budget goes to the summary; the turns keep the rest.
SUMMARY_SHARE = 4
#: A system prompt (the chat's, its persona's or the operator's) takes at most this share of
#: the prompt budget (1/2), cut at its end beyond: the question keeps the other half.
SYSTEM_SHARE = 2
#: No summary is sent in less room than this many tokens: a few words would mislead.
MIN_SUMMARY_TOKENS = 16


def _truncate(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    if limit <= len(TRUNCATION_MARKER):
        return text[: max(limit, 0)]
    return text[: limit - len(TRUNCATION_MARKER)] + TRUNCATION_MARKER


def _fit(text: str, tokens: int, count: Counter) -> str:
    """`text` cut at its end (marked) to at most `tokens` by `count`: first to the characters
    the estimate gives that many tokens, then shorter while the count still says it is over
    (a tokenizer, or a script the estimate reads as denser, can)."""
    if count(text) <= tokens:
        return text
    limit = min(len(text), tokens * CHARS_PER_TOKEN)
    cut = _truncate(text, limit)
    while cut and (spent := count(cut)) > tokens:
        limit = min(limit - 1, limit * tokens // spent)
        cut = _truncate(text, max(limit, 0))
    return cut


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


@dataclass(slots=True)
class Context:
    """What one answer is sent, and how it was fitted."""

    messages: list[dict[str, Any]]
    model: str
    window: ContextWindow
    #: The prompt's estimated tokens: at most `window.prompt_budget` (bar a lone question
    #: whose images alone are more).
    tokens: int
    #: Older turns of the conversation were not sent (the window, or the upper bounds).
    cut: bool = False
    #: A summary of turns left out was sent.
    summarised: bool = False
    #: The conversation the history is from (None when none was found).
    conversation_id: int | None = None
    #: The call to the summary model this context made, to be charged with the reply's use.
    summary_call: SummaryCall | None = None


@dataclass(slots=True)
class _Selection:
    messages: list[dict[str, Any]]
    #: Index in the history of the oldest message sent.
    first: int
    tokens: int


def _select(
    history: Sequence[StoredMessage],
    *,
    group: bool,
    max_messages: int,
    max_chars: int,
    max_tokens: int | None,
    images: Mapping[int, Sequence[MessageImage]],
    count: Counter,
) -> _Selection:
    """The newest messages of `history` within the bounds; see `build_context`."""
    kept: list[dict[str, Any]] = []
    indexes: list[int] = []
    budget = max_chars
    tokens_left = max_tokens if max_tokens is not None else None
    spent = 0
    for index in range(len(history) - 1, -1, -1):
        if len(kept) >= max(max_messages, 1):
            break
        message = history[index]
        content = message.text
        attached = images.get(message.id, ()) if message.image_count else ()
        if message.image_count and not attached:
            content = "\n".join(filter(None, (_placeholders(message.image_count), content)))
        if message.role is Role.USER and group:
            content = _author_label(message) + content
        if not kept:
            content = _truncate(content, budget)
            if tokens_left is not None:
                fixed = MESSAGE_TOKENS + IMAGE_TOKENS * len(attached)
                content = _fit(content, max(tokens_left - fixed, 0), count)
        elif len(content) > budget:
            break
        sent: str | list[dict[str, Any]] = _with_images(content, attached) if attached else content
        cost = message_tokens(sent, count)
        if kept and tokens_left is not None and cost > tokens_left:
            break
        kept.append({"role": message.role.value, "content": sent})
        indexes.append(index)
        budget -= len(content)
        spent += cost
        if tokens_left is not None:
            tokens_left -= cost
    kept.reverse()
    indexes.reverse()
    while len(kept) > 1 and kept[0]["role"] == Role.ASSISTANT.value:
        spent -= message_tokens(kept.pop(0)["content"], count)
        indexes.pop(0)
    return _Selection(kept, indexes[0] if indexes else len(history), spent)


def _system(system_prompt: str, summary: str = "") -> list[dict[str, Any]]:
    """The one system message: some servers take no second one, so a summary joins it."""
    if summary:
        joined = f"{system_prompt}\n\n{SUMMARY_HEADING}{summary}" if system_prompt else ""
        return [{"role": "system", "content": joined or SUMMARY_HEADING + summary}]
    return [{"role": "system", "content": system_prompt}] if system_prompt else []


def build_context(
    system_prompt: str,
    history: Sequence[StoredMessage],
    *,
    group: bool,
    max_messages: int,
    max_chars: int,
    images: Mapping[int, Sequence[MessageImage]] | None = None,
    max_tokens: int | None = None,
    count: Counter = estimate_tokens,
) -> list[dict[str, Any]]:
    """The messages to send: the system prompt, then the newest history that fits the budget.

    `history` is oldest first and ends with the user message being answered, which is always
    included (cut to the budget if it alone exceeds it). Older messages are dropped first, and
    never one out of the middle. The character budget counts the characters of the history as
    sent (with the "[Name] " prefixes of a group); the system prompt is outside it. The token
    budget (`max_tokens`, none when None) counts everything sent, the system prompt included,
    images at `IMAGE_TOKENS` each, text by `count`. A context never starts with an assistant message, which
    some APIs refuse.

    `images` holds the images to send, by message id; a message that had images but is not in
    it gets one `IMAGE_PLACEHOLDER` per image before its text instead. A message sent with
    images has a list of parts as its content, its text (counted in the budget) first.
    """
    system = _system(system_prompt)
    if max_tokens is not None and system:
        max_tokens -= message_tokens(system_prompt, count)
    selection = _select(
        history,
        group=group,
        max_messages=max_messages,
        max_chars=max_chars,
        max_tokens=max_tokens,
        images=images or {},
        count=count,
    )
    return system + selection.messages


def _trimmed_summary(text: str, room: int, count: Counter) -> str:
    """`text` cut to what `room` tokens of a system message hold; "" when too little room."""
    room -= count(SUMMARY_HEADING) + 1
    if room < MIN_SUMMARY_TOKENS:
        return ""
    return _fit(text, room, count)


async def _updated_summary(
    store: Store,
    summariser: Summariser,
    conversation_id: int,
    left_out: Sequence[StoredMessage],
) -> tuple[HistorySummary | None, SummaryCall | None]:
    """The conversation's summary, brought up to date with the turns `left_out` it does not
    cover yet (each turn is summarised once), and the call that did it (None when none was
    made, or it failed). A failure keeps the stored summary, and is logged."""
    stored = await store.history_summary(conversation_id)
    through = stored.through if stored else 0
    new = [message for message in left_out if message.id > through]
    if not new:
        return stored, None
    call = None
    try:
        call = await summariser.summarise(stored.text if stored else "", new)
        if not call.text:
            raise ValueError(f"{summariser.model} wrote an empty summary")
        summary = HistorySummary(call.text, max(m.id for m in new), summariser.model)
        await store.save_history_summary(conversation_id, summary)
    except Exception as exc:  # the reply goes on without the new summary
        log.warning(
            "Summarising %d older messages with %s failed: %s", len(new), summariser.model, exc
        )
        return stored, call
    return summary, call


async def prepare_context(
    store: Store,
    settings: CoreSettings,
    chat: ChatRef,
    user_message_id: int,
    *,
    group: bool,
    leave_out: Collection[int] = (),
    sees_images: Callable[[str], bool] | None = None,
    window_of: Callable[[str], ContextWindow] = context_window,
    summariser: Summariser | None = None,
    branch: bool = False,
    fetched: Sequence[ChainTurn] | None = None,
    persona: Persona | None = None,
) -> Context:
    """The context answering stored user message `user_message_id`, and the model to ask.

    The replies to the user messages in `leave_out` are not sent: in a group they are other
    people's replies that were still being written when this question arrived, so the history
    is as the asker saw it, whether or not they have finished since. The images of the newest
    `context_image_turns` user messages are read from the store, and only theirs; none when
    `sees_images` says the chat's model cannot see (every image is then "[image]").
    `window_of` gives the model's window (the client's, with the providers file's entries);
    two more messages than CONTEXT_MAX_MESSAGES are read, so a cut is always seen.

    `branch`: the message replies to an older answer of the bot (`chain`): its history is that
    reply chain (`Store.branch_messages`), not the conversation's newest turns. `fetched`: the
    chain as read from the platform, when the store did not have it; the history is then
    those turns and the message. The chat's `persona` fills in the prompt and model the chat did
    not set itself, before the operator's (`core.personas` on precedence).
    """
    config = await store.chat_config(chat)
    limit = settings.context_max_messages
    read = limit + 2
    wanted_messages = read + len(leave_out)
    if fetched is not None:
        question = await store.context_messages(user_message_id, 1)
        history = as_history(fetched, question[-1]) if question else []
    elif branch:
        history = await store.branch_messages(
            user_message_id, wanted_messages, REPLY_CHAIN_MAX_TURNS
        )
    else:
        history = await store.context_messages(user_message_id, wanted_messages)
    if leave_out:
        history = [message for message in history if message.reply_to not in leave_out][-read:]
    newest_turns = [m for m in reversed(history[-limit:]) if m.role is Role.USER]
    model = config.model or (persona.model if persona else None) or settings.default_model
    wanted = [m.id for m in newest_turns[: settings.context_image_turns] if m.image_count]
    if wanted and sees_images is not None and not sees_images(model):
        wanted = []
    images = await store.message_images(wanted) if wanted else {}
    window = window_of(model)
    system_prompt = (
        config.system_prompt
        or (persona.system_prompt if persona else None)
        or settings.system_prompt
    )
    count = counter_for(model)
    if system_prompt:
        # A long prompt on a small window must not crowd out the question itself.
        prompt_room = window.prompt_budget // SYSTEM_SHARE - MESSAGE_TOKENS
        system_prompt = _fit(system_prompt, prompt_room, count)
    fixed = message_tokens(system_prompt, count) if system_prompt else 0

    def select(max_tokens: int) -> _Selection:
        return _select(
            history,
            group=group,
            max_messages=limit,
            max_chars=settings.context_max_chars,
            max_tokens=max_tokens,
            images=images,
            count=count,
        )

    budget = window.prompt_budget - fixed
    selection = select(budget)
    cut = selection.first > 0
    summary = ""
    call = None
    # The summary follows the conversation's newest line: a branch left it at an older
    # answer, so the turns it covers may be ones the branch never had.
    if cut and summariser is not None and history and not branch and fetched is None:
        room = min(budget // SUMMARY_SHARE, SUMMARY_MAX_TOKENS + MIN_SUMMARY_TOKENS)
        selection = select(budget - room)
        stored, call = await _updated_summary(
            store, summariser, history[-1].conversation_id, history[: selection.first]
        )
        if stored is not None:
            summary = _trimmed_summary(stored.text, budget - selection.tokens, count)
    system = _system(system_prompt, summary)
    tokens = selection.tokens + sum(message_tokens(m["content"], count) for m in system)
    return Context(
        system + selection.messages,
        model,
        window,
        tokens,
        cut=cut,
        summarised=bool(summary),
        conversation_id=history[-1].conversation_id if history else None,
        summary_call=call,
    )
