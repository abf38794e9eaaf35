"""The conversation service every bot uses: history in, streamed reply out, everything saved.

Why it owns the per-chat queue: a chat's messages must be answered in arrival order, one at a
time (each reply becomes context for the next), while different chats run concurrently. So
`reply()` registers the message synchronously, in the order the adapter received it, and a
background task per message does the work: store the user message at once, wait for the
chat's previous reply to finish, then stream. The consumer only reads deltas; a slow or
vanished consumer never holds the chat up.

Every state change is written as it happens: the user message before the model is called, the
reply row when streaming starts, its text every `CHECKPOINT_SECONDS`, and its outcome at the
end. A process killed mid-reply leaves the row `streaming`; `recover()` at start-up marks it
`interrupted`, keeping the text of the last checkpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from core.client import AsyncClient
from core.config import CoreSettings
from storage import (
    MessageStatus,
    ReplyOutcome,
    Role,
    StorageError,
    Store,
    StoredMessage,
)

log = logging.getLogger(__name__)

#: Longest a streaming reply goes unsaved; a crash loses at most this much of its text.
CHECKPOINT_SECONDS = 2.0
#: Waits before each further try of a reply's final save (a lock held by another process, a
#: disk briefly full); after them the row stays 'streaming' until the next start's recover().
FINAL_SAVE_RETRY_DELAYS = (1.0, 3.0)
#: Stored error reasons are cut to this length; the full error goes to the log.
ERROR_REASON_MAX_CHARS = 300
#: Appended to a message cut to fit the context budget, so the model knows text is missing.
TRUNCATION_MARKER = "\n[… message truncated]"
#: Brackets in a name become parentheses, so "[Name] " is the only bracketed label in a line.
_NAME_BRACKETS = str.maketrans("[]", "()")


@dataclass(frozen=True, slots=True)
class ChatRef:
    """One chat as a platform names it; a forum topic or Discord thread has its own history."""

    platform: str
    chat_id: str
    thread_id: str = ""


@dataclass(frozen=True, slots=True)
class Author:
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class ChatSettings:
    """The chat's own settings; `None` means the operator's default applies."""

    model: str | None
    system_prompt: str | None


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


def _reason(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text[:ERROR_REASON_MAX_CHARS]


async def _first_of(*events: asyncio.Event) -> None:
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


class Reply:
    """One answer in the making: an async iterator of text deltas (`async for delta in reply`).

    It can be iterated once. Leaving the iteration early (`break`, `aclose()`, the consuming
    task being cancelled) interrupts the reply and keeps its partial text as `interrupted`.
    """

    def __init__(self, chat: ChatRef) -> None:
        self.chat = chat
        #: DB id of the assistant row, set once streaming starts.
        self.message_id: int | None = None
        #: DB id of the user message this answers, set once it is stored.
        self.user_message_id: int | None = None
        #: 'streaming' while queued or streaming, then 'complete', 'interrupted' or 'error'.
        self.status: MessageStatus = MessageStatus.STREAMING
        self.model: str | None = None
        self.provider: str | None = None
        #: Why the reply failed (status 'error'); re-raised to the consumer.
        self.error: BaseException | None = None
        self._parts: list[str] = []
        self._deltas: asyncio.Queue[str | None] = asyncio.Queue()
        self._iterated = False
        self._user_stored = asyncio.Event()
        self._abandoned = asyncio.Event()
        self._finished = asyncio.Event()
        self._turn_over = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._cancellable = False
        self._stop_requested = False

    @property
    def text(self) -> str:
        """The text so far."""
        return "".join(self._parts)

    def __aiter__(self) -> AsyncIterator[str]:
        if self._iterated:
            raise RuntimeError("A Reply can be iterated only once.")
        self._iterated = True
        return self._deltas_until_end()

    async def _deltas_until_end(self) -> AsyncIterator[str]:
        # A fresh generator, not referenced by the Reply: when the consumer breaks out, it is
        # collected at once and the event loop's async-generator hook runs its `finally`.
        finished = False
        try:
            while (delta := await self._deltas.get()) is not None:
                yield delta
            finished = True
        finally:
            if not finished:
                await self.aclose()
        if self.error is not None:
            raise self.error

    async def wait(self) -> MessageStatus:
        """Wait until the reply's outcome is stored; return its status."""
        await self._finished.wait()
        return self.status

    async def aclose(self) -> None:
        """The consumer gave up: stop the reply, keep the partial text as 'interrupted'."""
        if self._finished.is_set():
            return
        self._abandoned.set()
        self._request_stop()
        await self._finished.wait()

    def _request_stop(self) -> bool:
        """Cancel the streaming if it is under way; True if it was."""
        if not self._cancellable or self._task is None:
            return False
        if not self._stop_requested:
            self._stop_requested = True
            self._task.cancel()
        return True

    def _add(self, piece: str) -> None:
        self._parts.append(piece)
        self._deltas.put_nowait(piece)

    def _finish(self, status: MessageStatus, error: BaseException | None = None) -> None:
        self.status = status
        self.error = error
        self._deltas.put_nowait(None)
        self._finished.set()


class ConversationService:
    """Answers chat messages with the core, keeping every chat's history in the store."""

    def __init__(
        self,
        store: Store,
        client: AsyncClient,
        settings: CoreSettings,
        *,
        checkpoint_seconds: float = CHECKPOINT_SECONDS,
    ) -> None:
        self._store = store
        self._client = client
        self._settings = settings
        self._checkpoint_seconds = checkpoint_seconds
        self._tails: dict[ChatRef, Reply] = {}
        self._active: dict[ChatRef, Reply] = {}
        self._running: dict[asyncio.Task[None], Reply] = {}

    async def recover(self, platform: str | None = None) -> int:
        """At start-up: replies a crash left 'streaming' become 'interrupted'; return how many.

        `platform` limits it to one platform's chats (the console leaves the bots' alone).
        """
        count = await self._store.interrupt_streaming(platform)
        if count:
            log.warning(
                "Marked %d reply(ies) left streaming by a previous run as interrupted.", count
            )
        return count

    def reply(
        self,
        chat: ChatRef,
        author: Author,
        text: str,
        *,
        group: bool = False,
        platform_message_id: str | None = None,
    ) -> Reply:
        """Queue an answer to `text`; the user message is stored at once, before the model runs.

        Raises ValueError for an empty text, which adapters should answer themselves.
        """
        if not text.strip():
            raise ValueError("Cannot answer an empty message.")
        reply = Reply(chat)
        previous = self._tails.get(chat)
        self._tails[chat] = reply
        task = asyncio.create_task(
            self._run(reply, previous, author, text, group, platform_message_id),
            name=f"reply {chat.platform}:{chat.chat_id}:{chat.thread_id}",
        )
        reply._task = task
        self._running[task] = reply
        task.add_done_callback(self._running.pop)
        return reply

    async def stop(self, chat: ChatRef) -> bool:
        """Cancel the chat's reply in flight, keeping its partial text; True if there was one."""
        reply = self._active.get(chat)
        if reply is None or not reply._request_stop():
            return False
        await reply._finished.wait()
        return True

    async def reset(self, chat: ChatRef) -> None:
        """Start a new conversation; the old one stays in the history.

        Messages received before the reset belong to the old one, even those whose task has
        not stored them yet: wait for the newest to be stored first.
        """
        newest = self._tails.get(chat)
        if newest is not None:
            await newest._user_stored.wait()
        await self._store.new_conversation(chat)

    async def get_settings(self, chat: ChatRef) -> ChatSettings:
        config = await self._store.chat_config(chat)
        return ChatSettings(model=config.model, system_prompt=config.system_prompt)

    async def set_model(self, chat: ChatRef, model: str | None) -> None:
        """Set the chat's model; None (or blank) goes back to the operator's default."""
        await self._store.set_chat_model(chat, (model or "").strip() or None)

    async def set_system_prompt(self, chat: ChatRef, prompt: str | None) -> None:
        """Set the chat's system prompt; None (or blank) goes back to the operator's default."""
        await self._store.set_chat_system_prompt(chat, (prompt or "").strip() or None)

    async def record_platform_ids(self, message_id: int, ids: list[str]) -> None:
        """The platform messages that carry a stored message (replaces earlier ones)."""
        await self._store.set_platform_message_ids(message_id, ids)

    async def history(self, chat: ChatRef) -> list[StoredMessage]:
        """The messages of the chat's current conversation, in turn order."""
        conversation = await self._store.current_conversation(chat)
        if conversation is None:
            return []
        return await self._store.conversation_messages(conversation)

    async def aclose(self) -> None:
        """Stop every reply (partial text kept as 'interrupted') and wait for all to be saved."""
        for reply in list(self._running.values()):
            reply._abandoned.set()
            reply._request_stop()
        while self._running:
            await asyncio.gather(*self._running, return_exceptions=True)

    # The work behind one reply.

    async def _run(
        self,
        reply: Reply,
        previous: Reply | None,
        author: Author,
        text: str,
        group: bool,
        platform_message_id: str | None,
    ) -> None:
        chat = reply.chat
        try:
            user_message_id = await self._store_user_message(
                reply, previous, author, text, platform_message_id
            )
            if user_message_id is None:
                return
            if previous is not None:
                await _first_of(previous._turn_over, reply._abandoned)
            if reply._abandoned.is_set():
                reply._finish(MessageStatus.INTERRUPTED)
                return
            self._active[chat] = reply
            try:
                await self._stream(reply, user_message_id, group)
            finally:
                del self._active[chat]
        finally:
            if not reply._finished.is_set():  # only when cancelled from outside
                reply._finish(MessageStatus.INTERRUPTED)
            try:
                if previous is not None:  # a turn never ends before the one queued before it
                    await previous._turn_over.wait()
            finally:
                reply._turn_over.set()
                if self._tails.get(chat) is reply:
                    del self._tails[chat]

    async def _store_user_message(
        self,
        reply: Reply,
        previous: Reply | None,
        author: Author,
        text: str,
        platform_message_id: str | None,
    ) -> int | None:
        """Store the message, after the one received before it; its id, or None on failure."""
        try:
            if previous is not None:
                await previous._user_stored.wait()
            reply.user_message_id = await self._store.add_user_message(
                reply.chat,
                author_id=author.id,
                author_name=author.name,
                text=text,
                platform_message_id=platform_message_id,
            )
        except StorageError as exc:
            log.error("Could not store a message of %s: %s", reply.chat, exc)
            reply._finish(MessageStatus.ERROR, exc)
            return None
        finally:
            reply._user_stored.set()
        return reply.user_message_id

    async def _stream(self, reply: Reply, user_message_id: int, group: bool) -> None:
        status = MessageStatus.COMPLETE
        error: BaseException | None = None
        usage: Any = None
        started = first_token = None
        outside_cancel = False
        reply._cancellable = True
        try:
            messages, reply.model = await self._prepare(reply.chat, user_message_id, group)
            await self._open_row(reply, user_message_id)
            started = last_save = time.monotonic()
            stream = self._client.chat.completions.create(messages, model=reply.model, stream=True)
            async with contextlib.aclosing(stream):
                async for chunk in stream:
                    reply.provider = chunk.provider or reply.provider
                    reply.model = chunk.model or reply.model
                    usage = chunk.usage or usage
                    piece = chunk.choices[0].delta.content
                    if not piece:
                        continue
                    if first_token is None:
                        first_token = time.monotonic()
                    reply._add(piece)
                    if time.monotonic() - last_save >= self._checkpoint_seconds:
                        await self._checkpoint(reply)
                        last_save = time.monotonic()
        except asyncio.CancelledError:
            status = MessageStatus.INTERRUPTED
            outside_cancel = not reply._stop_requested
            if not outside_cancel:
                asyncio.current_task().uncancel()  # type: ignore[union-attr]
        except Exception as exc:
            status, error = MessageStatus.ERROR, exc
            log.warning("Reply in %s failed: %s", reply.chat, _reason(exc))
        finally:
            reply._cancellable = False
        if reply.message_id is not None:
            await self._save_outcome(reply, status, error, usage, started, first_token)
        reply._finish(status, error)
        if outside_cancel:
            raise asyncio.CancelledError

    async def _prepare(
        self, chat: ChatRef, user_message_id: int, group: bool
    ) -> tuple[list[dict[str, str]], str]:
        config = await self._store.chat_config(chat)
        history = await self._store.context_messages(
            user_message_id, self._settings.context_max_messages
        )
        messages = build_context(
            config.system_prompt or self._settings.system_prompt,
            history,
            group=group,
            max_messages=self._settings.context_max_messages,
            max_chars=self._settings.context_max_chars,
        )
        return messages, config.model or self._settings.default_model

    async def _open_row(self, reply: Reply, user_message_id: int) -> None:
        """Create the reply's row; a stop arriving meanwhile still learns the row's id."""
        insert = asyncio.ensure_future(self._store.start_reply(user_message_id, reply.model))
        try:
            reply.message_id = await asyncio.shield(insert)
        except asyncio.CancelledError:
            with contextlib.suppress(StorageError):
                reply.message_id = await insert
            raise

    async def _checkpoint(self, reply: Reply) -> None:
        assert reply.message_id is not None
        try:
            await self._store.save_partial_reply(reply.message_id, reply.text)
        except StorageError as exc:  # the final save tries again; the user still gets the text
            log.warning("Could not checkpoint reply %s: %s", reply.message_id, exc)

    async def _save_outcome(
        self,
        reply: Reply,
        status: MessageStatus,
        error: BaseException | None,
        usage: Any,
        started: float | None,
        first_token: float | None,
    ) -> None:
        assert reply.message_id is not None
        now = time.monotonic()
        outcome = ReplyOutcome(
            status=status,
            text=reply.text,
            model=reply.model,
            provider=reply.provider,
            first_token_ms=_ms(started, first_token),
            total_ms=_ms(started, now),
            prompt_tokens=getattr(usage, "prompt_tokens", None),
            completion_tokens=getattr(usage, "completion_tokens", None),
            total_tokens=getattr(usage, "total_tokens", None),
            error=_reason(error) if error is not None else None,
        )
        for delay in (*FINAL_SAVE_RETRY_DELAYS, None):
            try:
                await self._store.finish_reply(reply.message_id, outcome)
                return
            except StorageError as exc:
                if delay is None:  # the user has the text; recover() fixes the row at start-up
                    log.error("Could not save reply %s: %s", reply.message_id, exc)
                    return
                log.warning("Saving reply %s failed (%s); retrying", reply.message_id, exc)
                await asyncio.sleep(delay)


def _ms(start: float | None, end: float | None) -> int | None:
    if start is None or end is None:
        return None
    return round((end - start) * 1000)


__all__ = ["Author", "ChatRef", "ChatSettings", "ConversationService", "Reply", "build_context"]
