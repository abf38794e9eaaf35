"""What the rest of Parley may ask of a history store, independent of the database behind it.

The bots and the conversation service use only this module's types; every SQL statement stays
in a backend package (`storage.sqlite`), so a PostgreSQL backend can join without touching them.

Images a user sends are kept in the database, as blobs next to their message, not as
content-addressed files beside it. Why:
- One transaction holds a message and its images: a crash keeps both or neither, with no
  file written before its row (or a row naming a file never written) to sweep up afterwards.
- One thing to back up and move: copying or `.backup`-ing the database file (or a volume
  snapshot) takes the images with it, consistent with the history that names them.
- The PostgreSQL backend to come keeps them the same way (`bytea`), on another host or in a
  container that shares no folder with the bot; files would need a second store beside it.
- Deduplication is kept: an image is stored once under the SHA-256 of its bytes, however
  many messages carry it (the same photo forwarded twice).
The cost is a bigger database (images arrive downscaled to 2,048 px, a few hundred KB each)
and blobs passing through the WAL once more; exports write them out as files
(`bots.history`), which is where an operator wants files.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Collection, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Literal, Protocol, runtime_checkable

#: Told how long each write took, in seconds, waiting for the write lock included: how the app
#: measures database write latency without storage knowing any metrics library.
WriteObserver = Callable[[float], None]


class MessageStatus(StrEnum):
    """Where a stored message is in its life; only assistant replies pass through `streaming`."""

    COMPLETE = "complete"
    STREAMING = "streaming"
    INTERRUPTED = "interrupted"
    ERROR = "error"


class Role(StrEnum):
    USER = "user"
    ASSISTANT = "assistant"


class ChatKey(Protocol):
    """Anything that names one chat; `core.conversation.ChatRef` is the usual one."""

    @property
    def platform(self) -> str: ...

    @property
    def chat_id(self) -> str: ...

    @property
    def thread_id(self) -> str: ...


@dataclass(frozen=True, slots=True)
class ChatConfig:
    """A chat's own settings; `None` means "use the operator's default".

    The one type for them, from the store up to the bots (the conversation service hands it on
    as it is); the rules for changing them live in `core.chat_settings`."""

    model: str | None = None
    system_prompt: str | None = None
    #: Whether `/image` draws in this chat; None: yes, when the operator set IMAGE_MODEL.
    image_generation: bool | None = None
    #: The name of the persona chosen with /persona (`core.personas`); None: none.
    persona: str | None = None


@dataclass(frozen=True, slots=True)
class ChatRecord:
    id: int
    platform: str
    chat_id: str
    thread_id: str
    model: str | None
    system_prompt: str | None
    created_at: str
    #: The name its platform shows (a group's title, the other person in a private chat), as of
    #: the newest message; None for chats no message has named yet.
    title: str | None = None


@dataclass(frozen=True, slots=True)
class ChatSummary:
    """A chat (or one topic or thread of it) as `parley history list` shows it."""

    platform: str
    chat_id: str
    thread_id: str
    title: str | None
    conversations: int
    messages: int
    #: When its newest message was written or last changed (the chat's creation if none).
    last_activity: str


@dataclass(frozen=True, slots=True)
class StoreStatus:
    """What a look at a database, without changing it, tells `parley doctor`."""

    location: str
    #: False when the file is not there yet: the first `parley run` creates it.
    exists: bool
    #: The schema version it is at (0 when it does not exist yet).
    version: int
    #: The version this Parley migrates it to when it opens it.
    latest: int


@dataclass(frozen=True, slots=True)
class ConversationRecord:
    id: int
    chat: int
    created_at: str


@dataclass(slots=True)
class StoredMessage:
    """One stored message. Not frozen: a context load builds 50 of them per reply, and a frozen
    dataclass's `__init__` costs ten times as much. Treat it as read-only all the same."""

    id: int
    conversation_id: int
    role: Role
    text: str
    status: MessageStatus
    author_id: str | None = None
    author_name: str | None = None
    reply_to: int | None = None
    model: str | None = None
    provider: str | None = None
    first_token_ms: int | None = None
    total_ms: int | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    error: str | None = None
    created_at: str = ""
    updated_at: str = ""
    platform_message_ids: tuple[str, ...] = ()
    #: The token counts are the client's estimate: the provider reported no usage.
    tokens_estimated: bool = False
    #: How many images the user attached (their bytes come from `Store.message_images`, so a
    #: context load reads only those of the turns it sends).
    image_count: int = 0


@dataclass(frozen=True, slots=True)
class HistorySummary:
    """A conversation's older turns in a few lines, written by the summary model when they fell
    out of the context window: every message of the conversation up to `through` (an id)."""

    text: str
    through: int
    model: str = ""


@dataclass(frozen=True, slots=True)
class MessageImage:
    """An image a user message carries, exactly as the model is sent it: already checked,
    downscaled and re-encoded (`core.images`), so storage keeps the bytes as given.

    Two equal images are one stored image: `sha256` names it (a photo forwarded twice)."""

    data: bytes = field(repr=False)
    #: "image/jpeg" or "image/png".
    media_type: str
    width: int
    height: int

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass(frozen=True, slots=True)
class ReplyOutcome:
    """Everything known about a reply when it stops streaming, written in one transaction."""

    status: MessageStatus
    text: str
    model: str | None = None
    provider: str | None = None
    first_token_ms: int | None = None
    total_ms: int | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    #: The token counts are the client's estimate: the provider reported no usage.
    tokens_estimated: bool = False
    error: str | None = None
    #: The model's thinking, stored apart from `text` (`Store.reply_reasoning`) and never
    #: part of a context; None when it had none.
    reasoning: str | None = None


@dataclass(frozen=True, slots=True)
class UndeliveredReply:
    """A reply whose user may be looking at it cut off, with no sign of that on screen: what a
    bot needs to show them, once it is connected (`bots.repair`). `text` is the reply as stored
    (the last checkpoint, for one a crash cut); `platform_message_ids` are its messages."""

    id: int
    platform: str
    chat_id: str
    thread_id: str
    text: str
    platform_message_ids: tuple[str, ...]


#: What one generated image counts against token budgets: about what OpenAI bills a
#: 1024x1024 gpt-image-1 picture at medium quality (1,056 output tokens), rounded.
DRAWING_TOKENS = 1_000
#: What a minute of transcribed audio counts against token budgets: roughly what a minute of
#: speech comes to as text in and out (about 150 words), with room for the audio's own cost.
AUDIO_MINUTE_TOKENS = 1_000


class UsageKind(StrEnum):
    """What a model was paid for."""

    CHAT = "chat"
    TRANSCRIPTION = "transcription"
    IMAGE = "image"


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """One model call's use, as the usage ledger keeps it: who, where, which model, how much.

    Money is integer micro-dollars (1 USD = 1,000,000): sums stay exact. `cost_micros` is None
    when the model has no price (the tokens still count against token budgets). `at` is an
    aware UTC time; the day and month it falls in are UTC's."""

    kind: UsageKind
    at: datetime
    platform: str
    chat_id: str
    thread_id: str
    user_id: str
    user_name: str | None = None
    model: str | None = None
    provider: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    #: The token counts are the client's estimate: the provider reported none (or nonsense).
    estimated: bool = False
    images_in: int = 0
    audio_seconds: float = 0.0
    images_out: int = 0
    cost_micros: int | None = None
    #: The user was let in as a guest (not in *_ALLOWED_IDS): counted in the guests' pool too.
    guest: bool = False
    #: The stored reply this use belongs to, when there is one.
    message_id: int | None = None

    @property
    def tokens(self) -> int:
        """What the call counts against token budgets: its prompt and completion tokens, and
        for a drawing or a transcription, which a provider bills by the image or the minute,
        `DRAWING_TOKENS` an image and `AUDIO_MINUTE_TOKENS` a minute, so that a budget set in
        tokens alone (GUEST_DAILY_TOKENS) bounds those calls too."""
        weighed = self.images_out * DRAWING_TOKENS
        weighed += math.ceil(self.audio_seconds * AUDIO_MINUTE_TOKENS / 60)
        return self.prompt_tokens + self.completion_tokens + weighed


@dataclass(frozen=True, slots=True)
class InboxEntry:
    """An update taken into the inbox (m013) and not handled yet: its id and its body as the
    platform sent it (JSON text)."""

    update_id: int
    body: str


@dataclass(frozen=True, slots=True)
class UpdateRef:
    """One inbox row: a platform's update, by the id the platform gave it."""

    platform: str
    update_id: int


#: The inbox update the current task handles, set by the bot that fed it (`bots.inbox`). The
#: user message `Store.add_user_message` stores under it is recorded on the update's row in the
#: same transaction, and stored only once however often the update is handled (a replica taking
#: over a dead one's chat handles again what that one had not answered); the reply row
#: `Store.start_reply` opens under it marks the row done in the same transaction. So a replica
#: dying before its reply started leaves the update to the chat's next owner, which answers it
#: without storing the message twice, and one dying after leaves a reply the sweep marks.
#: A context variable, not a parameter: it reaches the store through the dispatcher, the
#: handler and the conversation service's reply task (each task copies its creator's context)
#: without any of them knowing of it.
HANDLING: ContextVar[UpdateRef | None] = ContextVar("parley_handling_update", default=None)


#: Told of an update another replica (or this one) took into the inbox: its platform and chat.
ArrivalListener = Callable[[str, str], None]


class ChatLocks(Protocol):
    """Which replica feeds which chat's inbox to its dispatcher: one at a time per chat, so a
    chat's updates are answered in order whichever replica received them. PostgreSQL's only
    (`storage.postgres.coordination`); with SQLite, one process, there is nothing to share.

    A lock lives as long as the session holding it: a replica that dies loses its chats, and
    a live one takes them over."""

    @property
    def alive(self) -> bool:
        """False once the session was lost: every lock with it. `reconnect` to go on."""
        ...

    async def take(self, platform: str, chat_key: str) -> bool:
        """Try to become the chat's feeder, without waiting: True when this replica is now."""
        ...

    async def release(self, platform: str, chat_key: str) -> None:
        """Stop being the chat's feeder (the chat is idle here, or this replica stops); when
        the chat has updates waiting, every replica is told, as of a new one."""
        ...

    async def reconnect(self) -> None:
        """A new session after one was lost (no locks held); raises `StorageError` while the
        database cannot be reached."""
        ...

    async def close(self) -> None:
        """End the session: every lock still held is released."""
        ...


UsageScope = Literal["user", "chat", "guests"]
UsagePeriod = Literal["day", "month"]
#: Every guest's use of the bot, on any platform, is summed under this key.
ALL_GUESTS = "all"


@dataclass(frozen=True, slots=True)
class UsageKey:
    """A running total the ledger keeps: one user's, one chat's or the guests', for the current
    UTC day or month. Keys: user "platform:user_id", chat "platform:chat_id:thread_id", guests
    `ALL_GUESTS` (all platforms) or "platform" (one platform's guests)."""

    scope: UsageScope
    key: str
    period: UsagePeriod

    @staticmethod
    def user(platform: str, user_id: str, period: UsagePeriod) -> UsageKey:
        return UsageKey("user", f"{platform}:{user_id}", period)

    @staticmethod
    def chat(chat: ChatKey, period: UsagePeriod) -> UsageKey:
        return UsageKey("chat", f"{chat.platform}:{chat.chat_id}:{chat.thread_id}", period)

    @staticmethod
    def guests(period: UsagePeriod, platform: str = ALL_GUESTS) -> UsageKey:
        return UsageKey("guests", platform, period)


@dataclass(frozen=True, slots=True)
class Totals:
    """A running total: tokens (prompt + completion) and cost in micro-dollars."""

    tokens: int = 0
    cost_micros: int = 0


UsageGrouping = Literal["user", "chat", "model", "day"]


@dataclass(frozen=True, slots=True)
class UsageRow:
    """One line of a usage report: a user, chat, model or day, and what it used."""

    key: str
    #: What a person reads for the key: the user's or chat's name, the model, the date.
    label: str
    #: Model calls recorded (chat replies, transcriptions, drawings).
    calls: int
    prompt_tokens: int
    completion_tokens: int
    cost_micros: int
    #: Share of the tokens that were estimated, 0.0 to 1.0.
    estimated_share: float
    #: Calls whose model had no price (their cost is not in `cost_micros`).
    unpriced: int = 0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class BudgetOverride:
    """A budget an admin set for one user or chat (/budget), in place of the operator's: `key`
    as in `UsageKey`, `name` a budget's name ("daily_tokens"), `value` tokens or micro-dollars."""

    scope: Literal["user", "chat"]
    key: str
    name: str
    value: int


def period_start(at: datetime, period: UsagePeriod) -> str:
    """The UTC day ("2026-12-01") or month ("2026-12") `at` falls in: the totals' period key."""
    return at.astimezone(UTC).strftime("%Y-%m-%d" if period == "day" else "%Y-%m")


class Store(Protocol):
    """Per-chat history. Every method that changes state is one transaction.

    Messages of a conversation are ordered by turn: a user message opens a turn and the reply
    that answers it (`reply_to`) sorts right after it, even when later user messages were
    stored while the reply was still queued.
    """

    @property
    def location(self) -> str:
        """Where the data lives, for error messages and exports (a file path for SQLite)."""
        ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise `StorageError` unless the database answers a trivial query (health checks)."""
        ...

    # Chats and their settings.
    async def chat_config(self, chat: ChatKey) -> ChatConfig: ...

    async def set_chat_model(self, chat: ChatKey, model: str | None) -> None: ...

    async def set_chat_system_prompt(self, chat: ChatKey, prompt: str | None) -> None: ...

    async def set_chat_image_generation(self, chat: ChatKey, enabled: bool | None) -> None: ...

    async def set_chat_persona(self, chat: ChatKey, persona: str | None) -> None: ...

    async def new_conversation(self, chat: ChatKey) -> int: ...

    # Usage: a ledger row per model call, and running totals per user, chat and guests.
    async def record_usage(self, record: UsageRecord) -> None:
        """Add `record` to the ledger and to the day and month totals of its user, chat and (for
        a guest) the guests' pools, in one transaction: a budget check reads a total, never
        the ledger."""
        ...

    async def usage_totals(self, keys: Sequence[UsageKey], now: datetime) -> dict[UsageKey, Totals]:
        """Each key's total for the UTC day or month `now` falls in (zeros when none)."""
        ...

    async def usage_report(
        self,
        since: datetime | None,
        by: UsageGrouping,
        *,
        limit: int | None = None,
        platform: str | None = None,
        chat_id: str | None = None,
        user_id: str | None = None,
    ) -> list[UsageRow]:
        """The ledger since `since` (everything when None), grouped `by`, most costly first
        (then most tokens); at most `limit` rows. `platform`, `chat_id` (all its threads) and
        `user_id` keep only that platform's, chat's or user's calls: a group admin's /stats
        shows their chat, and /usage marks a user's own estimated figures."""
        ...

    # Budgets an admin set per user or chat.
    async def set_budget_override(
        self, scope: Literal["user", "chat"], key: str, name: str, value: int | None
    ) -> None:
        """Set one user's or chat's budget `name` to `value` (> 0); None removes the override,
        so the operator's setting applies again."""
        ...

    async def budget_overrides(self) -> list[BudgetOverride]:
        """Every override set: few, as admins set them one by one; read once at start-up."""
        ...

    async def current_conversation(self, chat: ChatKey) -> int | None: ...

    # Writing a turn. A user message's id names its turn and, through it, its conversation.
    async def add_user_message(
        self,
        chat: ChatKey,
        *,
        author_id: str,
        author_name: str,
        text: str,
        platform_message_id: str | None = None,
        chat_title: str | None = None,
        images: Sequence[MessageImage] = (),
        parent: int | None = None,
    ) -> int:
        """Store a user message in the chat's current conversation; return its id.

        `chat_title`, when given, becomes the chat's title (chats get renamed, so the newest
        message's says what the chat is called now). `images` are stored with the message in
        the same transaction, in their order: a crash keeps both or neither. Under `HANDLING`,
        an update whose message was stored already gives that message's id, storing nothing. `parent`: the
        stored reply the message answers by replying to it, which makes it a branch
        (`branch_messages`); None: it follows the conversation's newest turn."""
        ...

    async def start_reply(self, reply_to: int, model: str | None) -> int:
        """Create the row answering user message `reply_to`, status `streaming`; return its id.
        Under `HANDLING`, the update is marked done in the same transaction."""
        ...

    async def save_partial_reply(self, message_id: int, text: str) -> None:
        """Checkpoint a streaming reply's text so a crash loses at most the last few seconds."""
        ...

    async def finish_reply(self, message_id: int, outcome: ReplyOutcome) -> None:
        """Write the reply's outcome, its reasoning (if any) apart from its text, in one
        transaction."""
        ...

    async def reply_reasoning(self, message_id: int) -> str | None:
        """The reasoning stored with a reply, None if it had none."""
        ...

    async def set_platform_message_ids(
        self, message_id: int, ids: Sequence[str], *, delivery_pending: bool = False
    ) -> None:
        """Replace the platform messages that carry this message (idempotent).

        `delivery_pending`: the platform has not confirmed yet that the user sees the reply's
        final text, or the line saying it was interrupted. A reply left so by a crash is found
        by `undelivered_replies` at the next start.
        """
        ...

    async def interrupt_reply(self, message_id: int) -> None:
        """A reply the model finished but the user got only part of: `complete` becomes
        `interrupted` (any other status stays)."""
        ...

    async def interrupt_streaming(self, platform: str | None = None) -> int:
        """Mark rows left `streaming` by a crash as `interrupted`; return how many.

        So too a `complete` reply still `delivery_pending`: the process ended before its
        text reached the user. `platform` limits it to that platform's chats, so `parley chat`
        starting up does not touch the replies a running bot process is streaming right now.
        Replies named for a replica whose lease is alive (`heartbeat`) are another running
        replica's: left alone.
        """
        ...

    async def undelivered_replies(self, platform: str) -> list[UndeliveredReply]:
        """The platform's replies still `delivery_pending`, oldest first. Meant for start-up,
        after `interrupt_streaming` and before the bot answers anything: later, it would
        also list the replies being delivered right then. Live replicas' replies are left
        out, as `interrupt_streaming` leaves them alone."""
        ...

    # Several replicas on one database (m013; `bots.replica`, `bots.inbox`).
    def serve_as(self, replica: str) -> None:
        """From now on every reply row this store starts (`start_reply`) names `replica` as
        the one writing it, so that its lease (`heartbeat`) says whether it is still alive."""
        ...

    async def heartbeat(self, replica: str, lease_seconds: float) -> None:
        """Renew `replica`'s lease: it counts as alive for `lease_seconds` from now (the
        database's clock, shared by every replica). The first call registers it."""
        ...

    async def leave(self, replica: str) -> None:
        """`replica` stopped cleanly (its replies saved): forget its lease."""
        ...

    async def interrupt_orphaned(self) -> int:
        """The lease sweep a live replica runs: replies named for a replica whose lease ran out
        (`streaming`, or `complete` but undelivered) become `interrupted`; return how many.
        Each row is claimed by one sweeper (`FOR UPDATE SKIP LOCKED` on PostgreSQL), so two
        survivors never both count it. Also forgets expired leases and handled inbox rows
        older than a day (a platform retries an update within that)."""
        ...

    async def inbox_add(self, platform: str, update_id: int, chat_key: str, body: str) -> bool:
        """Take an update in, durably: True when it is new, False when it was there already
        (delivered twice). Committed when this returns; on PostgreSQL the replicas are told
        (NOTIFY) in the same transaction."""
        ...

    async def inbox_pending(self, platform: str, chat_key: str) -> list[InboxEntry]:
        """The chat's updates not handled yet, in update id order."""
        ...

    async def inbox_chats(self, platform: str) -> list[str]:
        """The chats with updates not handled yet."""
        ...

    async def inbox_done(self, platform: str, update_id: int) -> None:
        """The update was handled (its body is dropped; its id is kept against a late second
        delivery)."""
        ...

    # Reading.
    async def context_messages(self, up_to: int, limit: int) -> list[StoredMessage]:
        """The newest `limit` messages fit to send as context for user message `up_to`.

        Oldest first, from `up_to`'s conversation: the earlier turns and `up_to` itself (not a
        reply to it). Rows in `error` or `streaming` and empty replies are left out.
        """
        ...

    async def branch_messages(self, up_to: int, limit: int, max_turns: int) -> list[StoredMessage]:
        """The newest `limit` messages fit to send as context for user message `up_to`, a
        branch: oldest first, the turns its chain of `parent`s leads through (at most
        `max_turns` of them), ending with `up_to`. A chain that ends at a message without a
        parent (or whose parent was deleted) goes on with the history before that message,
        as `context_messages` gives it; one cut by `max_turns` does not. Rows are kept as
        `context_messages` keeps them; [] when `up_to` is no stored user message."""
        ...

    async def find_message(self, chat: ChatKey, platform_message_id: str) -> StoredMessage | None:
        """The newest message of `chat` (any of its conversations) that platform message
        `platform_message_id` carries; None when none does (deleted, or never stored)."""
        ...

    async def message_images(self, message_ids: Collection[int]) -> dict[int, list[MessageImage]]:
        """The images of these messages, each message's in the order they were sent; messages
        without images are absent. For the newest turns of a context and for exports."""
        ...

    async def history_summary(self, conversation_id: int) -> HistorySummary | None:
        """The summary of the conversation's older turns, None before any was written."""
        ...

    async def save_history_summary(self, conversation_id: int, summary: HistorySummary) -> None:
        """Keep `summary` as the conversation's one summary, replacing the previous one."""
        ...

    async def find_chats(self, chat_id: str, platform: str | None = None) -> list[ChatRecord]: ...

    async def list_chats(self, platform: str | None = None) -> list[ChatSummary]:
        """Every chat (each topic or thread apart), the most recently active first."""
        ...

    async def conversations(self, chat: int) -> list[ConversationRecord]: ...

    async def conversation_messages(self, conversation_id: int) -> list[StoredMessage]: ...


#: The table a trigger keeps from `messages.platform_ids` (m011, on both engines): loading a
#: copy of it skips the rows the trigger already wrote.
DERIVED_TABLE = "platform_messages"

#: A table's rows as the database gives them: ints, floats, text, bytes and None only.
Row = tuple[object, ...]


@runtime_checkable
class TableCopy(Protocol):
    """Whole tables in and out, for `parley history copy` moving a database between engines.
    Both stores implement it beside `Store`; it is no part of what the bots use.

    Rows come and go verbatim (same ids), which works because both engines keep the same
    columns in the same order with the same kinds of values (`storage.postgres.migrations`)."""

    async def tables(self) -> dict[str, list[str]]:
        """Every table of the schema (the version bookkeeping aside) and its columns, in order."""
        ...

    async def table_rows(self, table: str, columns: Sequence[str]) -> list[Row]:
        """Every row of `table`, those columns, in no particular order."""
        ...

    async def load_tables(self, tables: Sequence[tuple[str, Sequence[str], Sequence[Row]]]) -> None:
        """Insert each table's rows, in the order given, in one transaction; rows a trigger has
        already derived (`platform_messages`) are skipped, not duplicated. Numbering goes on
        after the highest id loaded."""
        ...

    def as_stored(self, value: object) -> object:
        """`value` as this database keeps it (PostgreSQL turns NUL into U+FFFD)."""
        ...
