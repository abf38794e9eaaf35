"""One reply's `Surface` on Telegram: what the streaming engine's send, edit and typing mean here.

Streamed text goes out plain (but for a reasoning block, a collapsed quote), with @mentions made inert so model output never notifies anyone. A message's final text is rendered from Markdown to entities
(`render.render_markdown`); if Telegram rejects the formatting, the same text goes out plain.
Telegram's answers map to the engine's terms: flood control is `RateLimited`; a deleted message
or chat, a chat the bot may not write in, or a bot blocked by the user is `MessageGone`;
"message is not modified" is success.

In a private chat, with `STREAM_MODE=draft` (`bots.telegram.drafts`), the text so far goes out
as a draft (`sendMessageDraft`, like a streamed edit: plain but for the reasoning quote, with
a stop button) and each message is sent once, with its final text; a draft Telegram refuses
sends the chat back to edits.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar, cast

from aiogram import Bot
from aiogram.enums import ChatAction, ChatType
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramForbiddenError,
    TelegramMigrateToChat,
    TelegramNotFound,
    TelegramRetryAfter,
)
from aiogram.types import Message, MessageEntity, ReplyParameters

from bots.errors import MessageGone, RateLimited
from bots.splitting import utf16_length
from bots.telegram.chats import PLATFORM
from bots.telegram.drafts import TelegramDrafts
from bots.telegram.render import MAX_LENGTH, render_markdown, render_reasoning
from bots.write_budget import ChatBudgets, WriteBudget, WriteLimits
from core.conversation import ChatRef
from storage import UndeliveredReply

log = logging.getLogger(__name__)

T = TypeVar("T")

NOT_MODIFIED = "message is not modified"
#: Bad Request texts that mean the message can no longer be edited, the chat is gone, or the bot
#: may not write there (muted by the admins, a closed forum topic): retrying cannot help.
GONE = (
    "message to edit not found",
    "message can't be edited",
    "chat not found",
    "not enough rights",
    "TOPIC_CLOSED",
)


#: Telegram turns "@name" in any message into a mention that notifies that user. A word joiner
#: (invisible) after the "@" keeps model output readable and its mentions inert.
_MENTION = re.compile(r"(?<![\w@])@(?=[A-Za-z0-9_]{5,32}\b)")
WORD_JOINER = "\u2060"


def defuse_mentions(text: str) -> str:
    return _MENTION.sub("@" + WORD_JOINER, text) if "@" in text else text


def _shown_length(text: str) -> int:
    """Length as Telegram counts it (UTF-16), of the text as it will be sent."""
    return utf16_length(defuse_mentions(text))


#: About one write a second to a private chat.
PRIVATE_LIMITS = WriteLimits(1, 1.0)
#: Twenty writes a minute to a group; ordinary edits leave five of each minute to first and
#: final texts, so five people asking at once all see an answer begin.
GROUP_LIMITS = WriteLimits(20, 60.0, reserve=5)
#: Drafts to one private chat, counted apart from its messages. The Bot API names no rate for
#: them; five a second keeps a draft a fraction of a second behind the model, one call per
#: update when the updates come no faster, and is what the fake server enforces.
DRAFT_LIMITS = WriteLimits(5, 1.0)


@dataclass(frozen=True, slots=True)
class TelegramLimits:
    """The writes (sends and edits together) Telegram allows one chat."""

    private: WriteLimits = PRIVATE_LIMITS
    group: WriteLimits = GROUP_LIMITS
    #: Drafts to a private chat (`sendMessageDraft`).
    draft: WriteLimits = DRAFT_LIMITS


class TelegramBudgets:
    """Every chat's write budget, shared by the replies streaming into it (forum topics share
    their group's: Telegram counts per chat), and its drafts' apart; with the process's
    `drafts` (the stream mode, which the budgets of each reply come with)."""

    def __init__(self, limits: TelegramLimits, drafts: TelegramDrafts | None = None) -> None:
        self._limits = limits
        self._budgets: ChatBudgets[int] = ChatBudgets()
        self._draft_budgets: ChatBudgets[int] = ChatBudgets()
        #: None: every reply streams by edits (STREAM_MODE=edit, or a bot built without them).
        self.drafts = drafts

    def of(self, chat_id: int) -> WriteBudget:
        """Group and channel ids are negative, private chats' (a user's id) positive."""
        return self._budgets.get(
            chat_id, self._limits.group if chat_id < 0 else self._limits.private
        )

    def drafts_of(self, chat_id: int) -> WriteBudget:
        """The budget of a private chat's drafts."""
        return self._draft_budgets.get(chat_id, self._limits.draft)


class TelegramSurface:
    """Sends and edits one reply in one chat (and forum topic), each message replying to the
    one before: the first to the user's message (`answering`), or to a message of the bot's
    when a reply is taken up again (start-up repair, `bots.repair`)."""

    max_length = MAX_LENGTH
    length = staticmethod(_shown_length)

    def __init__(
        self,
        bot: Bot,
        chat_id: int,
        *,
        thread_id: int | None,
        reply_to: int,
        budget: WriteBudget,
        drafts: TelegramDrafts | None = None,
        draft_budget: WriteBudget | None = None,
    ) -> None:
        """`drafts` and `draft_budget` (both, or neither): the reply may stream as drafts, in
        a private chat, while `drafts` allows it there."""
        self.budget = budget
        self._bot = bot
        self._chat_id = chat_id
        self._thread_id = thread_id
        self._reply_to = reply_to
        #: What each message shows, if it has no formatting, as Telegram stored it (trimmed).
        self._plain: dict[int, str | None] = {}
        self._drafts = drafts
        self.draft_budget = draft_budget if draft_budget is not None else budget
        self._can_draft = drafts is not None and draft_budget is not None
        #: The draft of the message being written; a new one for each message.
        self._draft_id = drafts.new_id() if drafts is not None else 0

    @classmethod
    def answering(cls, bot: Bot, request: Message, budgets: TelegramBudgets) -> TelegramSurface:
        """The surface of the answer to `request`, in its chat and forum topic."""
        chat_id = request.chat.id
        drafts = budgets.drafts if request.chat.type == ChatType.PRIVATE else None
        return cls(
            bot,
            chat_id,
            thread_id=request.message_thread_id if request.is_topic_message else None,
            reply_to=request.message_id,
            budget=budgets.of(chat_id),
            drafts=drafts,
            draft_budget=budgets.drafts_of(chat_id) if drafts is not None else None,
        )

    @property
    def drafting(self) -> bool:
        """The text so far goes out as drafts (see the module docstring)."""
        return self._can_draft and self._drafts is not None and self._drafts.allowed(self._chat_id)

    async def draft(self, text: str) -> bool:
        """Show `text` as the draft of the message being written, with a stop button; False
        when Telegram refused drafts here (the chat streams by edits from now on). A reasoning
        block shows as the collapsed quote an edit would show (`render.render_reasoning`),
        the answer under it plain, as streamed edits leave it until the final text."""
        assert self._drafts is not None
        text = defuse_mentions(text)

        async def send(body: str, entities: list[MessageEntity] | None) -> bool:
            return await self._bot.send_message_draft(
                self._chat_id,
                self._draft_id,
                text=body,
                message_thread_id=self._thread_id,
                entities=entities,
                parse_mode=None,
                can_stop=True,
            )

        rendered = render_reasoning(text, final=False)
        try:
            if rendered is not None:
                try:
                    await send(*rendered)
                except TelegramBadRequest as exc:  # the quote refused: the text still shows
                    if _is_gone(exc):
                        raise
                    log.info("Telegram rejected a draft's quote (%s); sending it plain", exc)
                    await send(text, None)
            else:
                await send(text, None)
        except TelegramRetryAfter as exc:
            raise RateLimited(exc.retry_after) from exc
        except TelegramForbiddenError as exc:  # blocked by the user
            raise MessageGone(exc.message) from exc
        except TelegramBadRequest as exc:
            if _is_gone(exc):
                raise MessageGone(exc.message) from exc
            self._drafts.refused(self._chat_id, exc.message)  # not for this chat
            return False
        except TelegramNotFound as exc:  # a server without the method
            self._drafts.refused(self._chat_id, exc.message)
            return False
        self._drafts.opened(self._chat_id, self._draft_id, self._chat_ref())
        return True

    def _chat_ref(self) -> ChatRef:
        """The conversation this reply belongs to, as `bots.telegram.chats.chat_ref` names it."""
        thread = str(self._thread_id) if self._thread_id else ""
        return ChatRef(PLATFORM, str(self._chat_id), thread)

    @classmethod
    def resuming(
        cls, bot: Bot, budgets: TelegramBudgets, reply: UndeliveredReply
    ) -> TelegramSurface:
        """The surface of a stored reply, taken up at its last message (`bots.repair`)."""
        chat_id = int(reply.chat_id)
        return cls(
            bot,
            chat_id,
            thread_id=int(reply.thread_id) if reply.thread_id else None,
            reply_to=int(reply.platform_message_ids[-1]),
            budget=budgets.of(chat_id),
        )

    async def send(self, text: str, *, final: bool) -> int:
        """Post a message replying to the user's message, or to the reply's previous part."""
        text = defuse_mentions(text)

        async def send(body: str, entities: list[MessageEntity] | None) -> Message:
            return await self._bot.send_message(
                self._chat_id,
                body,
                entities=entities,
                message_thread_id=self._thread_id,
                reply_parameters=ReplyParameters(
                    message_id=self._reply_to, allow_sending_without_reply=True
                ),
            )

        sent = await _deliver(send, text, _rendered(text, final))
        self._remember(sent)
        self._reply_to = sent.message_id
        if self._drafts is not None:  # the draft became this message: the next has its own
            self._drafts.closed(self._chat_id, self._draft_id)
            self._draft_id = self._drafts.new_id()
        return sent.message_id

    async def edit(self, handle: object, text: str, *, final: bool) -> None:
        message_id = cast(int, handle)
        text = defuse_mentions(text)
        rendered = _rendered(text, final)
        if self._unchanged(message_id, text, rendered):
            return

        async def edit(body: str, entities: list[MessageEntity] | None) -> Message | bool:
            return await self._bot.edit_message_text(
                text=body, chat_id=self._chat_id, message_id=message_id, entities=entities
            )

        try:
            edited = await _deliver(edit, text, rendered)
        except TelegramBadRequest as exc:
            if NOT_MODIFIED not in exc.message:
                raise
            return
        if isinstance(edited, Message):
            self._remember(edited)

    async def typing(self) -> None:
        await self._bot.send_chat_action(
            self._chat_id, ChatAction.TYPING, message_thread_id=self._thread_id
        )

    def _remember(self, message: Message) -> None:
        self._plain[message.message_id] = None if message.entities else message.text

    def _unchanged(
        self, message_id: int, text: str, rendered: tuple[str, list[MessageEntity]] | None
    ) -> bool:
        """Telegram would answer "message is not modified" (it trims whitespace, so "Hi " after
        "Hi" is no change): a call saved from the flood-control budget."""
        if rendered is not None and rendered[1]:
            return False
        body = rendered[0] if rendered is not None else text
        return self._plain.get(message_id) == body.strip()


def _rendered(text: str, final: bool) -> tuple[str, list[MessageEntity]] | None:
    """Text and entities to send, or None for the plain text: a reasoning block is a collapsed
    quote on every edit; the rest is Markdown rendered once final."""
    with_reasoning = render_reasoning(text, final=final)
    if with_reasoning is not None:
        return with_reasoning
    return render_markdown(text) if final else None


async def _deliver(
    call: Callable[[str, list[MessageEntity] | None], Awaitable[T]],
    text: str,
    rendered: tuple[str, list[MessageEntity]] | None,
) -> T:
    """Make `call` with the rendered text if any (falling back to plain), mapping errors."""
    try:
        if rendered is not None:
            try:
                return await call(*rendered)
            except TelegramBadRequest as exc:
                if NOT_MODIFIED in exc.message or _is_gone(exc):
                    raise
                log.info("Telegram rejected the formatting (%s); sending plain text", exc.message)
        return await call(text, None)
    except TelegramRetryAfter as exc:
        raise RateLimited(exc.retry_after) from exc
    except TelegramForbiddenError as exc:  # blocked by the user, removed from the group
        raise MessageGone(exc.message) from exc
    except TelegramMigrateToChat as exc:  # the group became a supergroup with a new id
        raise MessageGone(exc.message) from exc
    except TelegramBadRequest as exc:
        if _is_gone(exc):
            raise MessageGone(exc.message) from exc
        raise


def _is_gone(exc: TelegramBadRequest) -> bool:
    return any(text in exc.message for text in GONE)
