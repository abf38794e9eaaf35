"""A local fake Telegram Bot API server for tests and benchmarks.

It speaks `/bot{token}/{method}` over real HTTP on 127.0.0.1 so a real aiogram `Bot` (pointed at
it with `TelegramAPIServer.from_base`) runs unchanged: form, multipart and JSON bodies, real long
polling, and the limits and error texts of the real server (text length in UTF-16 code units,
"message is not modified", entity parsing errors, flood control with `retry_after`). Opt-in
`FloodLimits` apply Telegram's per-chat message limits to sends and edits together, and every
chat keeps the times of the writes it accepted and of the 429s it answered (`writes`,
`flood_refusals`, `max_writes_in_window`), so a test or benchmark can check a bot's pace.

Tests drive it from the user's side (`message`, `edited_message`, `channel_post`, and media as
the server delivers it: `photo_message`, `album`, `document_message`, `voice_message`,
`audio_message`, `video_note_message`, whose bytes the bot fetches with `getFile` and a download
from `/file/bot{token}/{file_path}`, 20 MB at most as for real bots), take the photos the bot
sends (`sendPhoto`: a multipart upload, kept byte for byte, `photo_bytes`), inject failures
(`inject_429`, `inject_parse_failure`, `delete_message`) and wait on what the bot did
(`wait_calls`, `wait_until`): every call is kept in `calls` with a monotonic timestamp and each
chat's messages keep their edit history.

`sendMessageDraft` (Bot API 9.3) is served with the documented rules: private chats only, a
non-zero `draft_id`, 0-4,096 UTF-16 units after entity parsing (empty shows "Thinking..."). Each
chat keeps its drafts in order (`drafts`); they never count as messages (`writes`): Telegram sends
them as a chat action. The Bot API names no rate for drafts; `FloodLimits` caps them at
`private_drafts` a second per chat (429 beyond). `refuse_drafts` plays an older server (404) or
one that refuses them (400); `stop_generation` presses a draft's stop button.

Webhooks (`setWebhook`, `deleteWebhook`, `getWebhookInfo`, and the delivery of updates by POST
instead of `getUpdates`, retried, round-robin over `webhooks.deliver_to`, some delivered twice)
live in `tests.fakes.telegram_webhooks`; `allow_http_webhooks` lets a test's bot listen on plain
http://127.0.0.1.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import html
import io
import itertools
import json
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from PIL import Image, UnidentifiedImageError

from tests.fakes.mime import guess_mime_type
from tests.fakes.telegram_webhooks import WEBHOOK_CONFLICT, Webhooks

HOST = "127.0.0.1"
DEFAULT_TOKEN = "123456789:TEST-token_for-parley"
BOT_ID = 123456789
BOT_USERNAME = "parley_test_bot"
BOT_NAME = "Parley"
#: Telegram's limit per message, in UTF-16 code units after entity parsing.
MAX_TEXT_LENGTH = 4096
MAX_UPDATES_PER_POLL = 100
#: Default seconds the `wait_*` helpers wait before raising TimeoutError.
WAIT_TIMEOUT = 5.0
#: How long `close()` lets aiohttp finish requests; long polls are woken before that.
SHUTDOWN_TIMEOUT = 0.1

#: Who Telegram says sent a message an anonymous admin or a linked channel posted in a group.
GROUP_ANONYMOUS_BOT = {
    "id": 1087968824,
    "is_bot": True,
    "first_name": "Group",
    "username": "GroupAnonymousBot",
}
CHANNEL_BOT = {"id": 136817688, "is_bot": True, "first_name": "Channel", "username": "Channel_Bot"}

#: The rights an administrator in the fake has (all but promoting others).
ADMIN_RIGHTS = (
    "can_manage_chat",
    "can_delete_messages",
    "can_manage_video_chats",
    "can_restrict_members",
    "can_change_info",
    "can_invite_users",
    "can_post_stories",
    "can_edit_stories",
    "can_delete_stories",
    "can_send_welcome_messages",
)
NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup are "
    "exactly the same as a current content and reply markup of the message"
)
TEXT_EMPTY = "Bad Request: message text is empty"
TEXT_TOO_LONG = "Bad Request: message is too long"
EDIT_NOT_FOUND = "Bad Request: message to edit not found"
DELETE_NOT_FOUND = "Bad Request: message to delete not found"
REPLY_NOT_FOUND = "Bad Request: message to be replied not found"
CANT_EDIT = "Bad Request: message can't be edited"
CHAT_NOT_FOUND = "Bad Request: chat not found"
#: A draft outside a private chat (the text the fake uses: the Bot API documents none).
DRAFT_NOT_PRIVATE = "Bad Request: message drafts can be sent only to private chats"
DRAFT_ID_INVALID = "Bad Request: draft_id must be non-zero"
PARSE_ERROR = "Bad Request: can't parse entities: "
#: The largest file a bot may fetch through `getFile` (the cloud Bot API's limit).
#: Inline keyboards: a button's callback data is 1 to 64 bytes; an answer's text 0 to 200
#: characters; a query is answered once (the Bot API's own wording for a second answer).
MAX_CALLBACK_DATA_BYTES = 64
MAX_CALLBACK_ANSWER_CHARS = 200
BUTTON_DATA_INVALID = "Bad Request: BUTTON_DATA_INVALID"
BUTTON_TEXT_EMPTY = "Bad Request: text buttons are unallowed in the inline keyboard"
QUERY_INVALID = "Bad Request: query is too old and response timeout expired or query ID is invalid"
CALLBACK_ANSWER_TOO_LONG = "Bad Request: MESSAGE_TOO_LONG"

MAX_DOWNLOAD_SIZE = 20 * 1024 * 1024
FILE_TOO_BIG = "Bad Request: file is too big"
INVALID_FILE_ID = "Bad Request: invalid file_id"
#: The largest photo a bot may upload with `sendPhoto`, and a caption's length (UTF-16 units).
MAX_PHOTO_UPLOAD = 10 * 1024 * 1024
MAX_CAPTION_LENGTH = 1024
CAPTION_TOO_LONG = "Bad Request: message caption is too long"
PHOTO_TOO_BIG = "Bad Request: PHOTO_SAVE_FILE_INVALID"
PHOTO_NOT_IMAGE = "Bad Request: IMAGE_PROCESS_FAILED"
PHOTO_MISSING = "Bad Request: there is no photo in the request"

CHAT_ACTIONS = frozenset(
    {
        "typing",
        "upload_photo",
        "record_video",
        "upload_video",
        "record_voice",
        "upload_voice",
        "upload_document",
        "choose_sticker",
        "find_location",
        "record_video_note",
        "upload_video_note",
    }
)
ENTITY_TYPES = frozenset(
    {
        "mention",
        "hashtag",
        "cashtag",
        "bot_command",
        "url",
        "email",
        "phone_number",
        "bold",
        "italic",
        "underline",
        "strikethrough",
        "spoiler",
        "blockquote",
        "expandable_blockquote",
        "code",
        "pre",
        "text_link",
        "text_mention",
        "custom_emoji",
        "date_time",
    }
)
#: Parameters Telegram reads as strings even when they look like JSON (`text="123"` stays text).
STRING_PARAMS = frozenset(
    {
        "text",
        "parse_mode",
        "action",
        "language_code",
        "business_connection_id",
        "caption",
        "inline_message_id",
        "url",
        "message_effect_id",
        "callback_query_id",
        "secret_token",
    }
)
_COMMAND_RE = re.compile(r"(?<![\w/])/[A-Za-z0-9_]{1,32}(?:@[A-Za-z0-9_]{3,32})?")
_MENTION_RE = re.compile(r"(?<![\w@])@[A-Za-z0-9_]{5,32}")
_BOT_COMMAND_NAME_RE = re.compile(r"^[a-z0-9_]{1,32}$")
_USER_LINK_RE = re.compile(r"tg://user\?id=(\d+)", re.IGNORECASE)


def utf16_len(text: str) -> int:
    """Length in UTF-16 code units: the unit of Telegram's limits and entity offsets."""
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


class ApiError(Exception):
    """One Bot API error answer: `{"ok": false, "error_code": ..., "description": ...}`."""

    def __init__(self, code: int, description: str, parameters: dict | None = None) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.parameters = parameters

    def body(self) -> dict:
        out: dict[str, Any] = {
            "ok": False,
            "error_code": self.code,
            "description": self.description,
        }
        if self.parameters:
            out["parameters"] = self.parameters
        return out


def bad_request(description: str) -> ApiError:
    return ApiError(400, description)


def too_many_requests(retry_after: int) -> ApiError:
    return ApiError(
        429, f"Too Many Requests: retry after {retry_after}", {"retry_after": retry_after}
    )


# ---------------------------------------------------------------------------------------------
# Entity parsing: parse_mode HTML and MarkdownV2, as strict as the real server.


class _TextBuilder:
    """Output text plus entities, with offsets counted in UTF-16 code units."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.offset = 0
        self.entities: list[dict] = []

    def write(self, text: str) -> None:
        self.parts.append(text)
        self.offset += utf16_len(text)

    def close_entity(self, start: int, kind: str, **extra: Any) -> None:
        if self.offset > start:
            entity = {"type": kind, "offset": start, "length": self.offset - start}
            entity.update({k: v for k, v in extra.items() if v is not None})
            self.entities.append(entity)

    def result(self) -> tuple[str, list[dict]]:
        return "".join(self.parts), sorted(self.entities, key=lambda e: (e["offset"], -e["length"]))


_HTML_TAGS = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "tg-spoiler": "spoiler",
    "span": "spoiler",
    "a": "text_link",
    "code": "code",
    "pre": "pre",
    "blockquote": "blockquote",
    "tg-emoji": "custom_emoji",
}
_HTML_TAG_RE = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9-]*)((?:\s+[^<>]*)?)>")
_HTML_ATTR_RE = re.compile(r"""([a-zA-Z-]+)\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'>]+))""")
_HTML_ENTITY_RE = re.compile(r"&(#[0-9]{1,7}|#x[0-9a-fA-F]{1,6}|lt|gt|amp|quot);")


def _byte_offset(text: str, index: int) -> int:
    return len(text[:index].encode("utf-8"))


def parse_html(source: str) -> tuple[str, list[dict]]:
    """Telegram's HTML style: a small tag set, four named entities, every tag closed."""
    out = _TextBuilder()
    stack: list[tuple[str, int, dict]] = []
    i = 0
    while i < len(source):
        char = source[i]
        if char == "&":
            match = _HTML_ENTITY_RE.match(source, i)
            if match:
                out.write(html.unescape(match.group(0)))
                i = match.end()
                continue
            out.write(char)
            i += 1
            continue
        if char != "<":
            out.write(char)
            i += 1
            continue
        match = _HTML_TAG_RE.match(source, i)
        if not match:
            raise bad_request(
                PARSE_ERROR
                + f"Unexpected end of name token at byte offset {_byte_offset(source, i)}"
            )
        closing, name, attrs = match.group(1), match.group(2).lower(), match.group(3)
        if closing:
            if not stack:
                raise bad_request(
                    PARSE_ERROR + f"Unexpected end tag at byte offset {_byte_offset(source, i)}"
                )
            open_name, start, extra = stack.pop()
            if open_name != name:
                raise bad_request(
                    PARSE_ERROR + f"Unmatched end tag at byte offset {_byte_offset(source, i)}, "
                    f'expected "</{open_name}>", found "</{name}>"'
                )
            kind = _HTML_TAGS[open_name]
            if kind == "blockquote" and extra.pop("expandable", False):
                kind = "expandable_blockquote"
            out.close_entity(start, kind, **extra)
        else:
            if name not in _HTML_TAGS:
                raise bad_request(
                    PARSE_ERROR
                    + f'Unsupported start tag "{name}" at byte offset {_byte_offset(source, i)}'
                )
            values = {
                key.lower(): next((v for v in value if v), "")
                for key, *value in _HTML_ATTR_RE.findall(attrs)
            }
            extra: dict[str, Any] = {}
            if name == "a":
                if not values.get("href"):
                    raise bad_request(PARSE_ERROR + "Can't find href attribute of tag a")
                extra["url"] = html.unescape(values["href"])
            elif name == "span" and values.get("class") != "tg-spoiler":
                raise bad_request(
                    PARSE_ERROR + f'Tag "span" must have class "tg-spoiler" at byte offset '
                    f"{_byte_offset(source, i)}"
                )
            elif name == "blockquote" and re.search(r"\bexpandable\b", attrs):
                extra["expandable"] = True
            elif name == "code" and values.get("class", "").startswith("language-"):
                extra["language"] = values["class"].removeprefix("language-")
            elif name == "tg-emoji":
                extra["custom_emoji_id"] = values.get("emoji-id")
            stack.append((name, out.offset, extra))
        i = match.end()
    if stack:
        raise bad_request(
            PARSE_ERROR + f'Can\'t find end tag corresponding to start tag "{stack[-1][0]}"'
        )
    return _merge_code_into_pre(*out.result())


def _merge_code_into_pre(text: str, entities: list[dict]) -> tuple[str, list[dict]]:
    """`<pre><code class="language-x">` is one `pre` entity with a language, as in Telegram."""
    pres = [e for e in entities if e["type"] == "pre"]
    kept = []
    for entity in entities:
        if entity["type"] == "code":
            outer = next(
                (
                    p
                    for p in pres
                    if (p["offset"], p["length"]) == (entity["offset"], entity["length"])
                ),
                None,
            )
            if outer is not None:
                if "language" in entity:
                    outer["language"] = entity["language"]
                continue
        kept.append(entity)
    return text, kept


_MDV2_RESERVED = frozenset("_*[]()~`>#+-=|{}.!")
_MDV2_MARKS = {"*": "bold", "_": "italic", "__": "underline", "~": "strikethrough", "||": "spoiler"}


def parse_markdown_v2(source: str) -> tuple[str, list[dict]]:
    """Telegram's MarkdownV2: reserved characters must be escaped; every mark must be closed."""
    out = _TextBuilder()
    stack: list[tuple[str, int, int]] = []  # (mark, output offset, source byte offset)
    quote_start: int | None = None
    i = 0
    at_line_start = True
    while i < len(source):
        char = source[i]
        if at_line_start:
            at_line_start = False
            if char == ">":
                if quote_start is None:
                    quote_start = out.offset
                i += 1
                continue
            if quote_start is not None:
                out.close_entity(quote_start, "blockquote")
                quote_start = None
        if char == "\\":
            if i + 1 >= len(source):
                raise bad_request(
                    PARSE_ERROR + "Character '\\' is reserved and must be escaped with the "
                    "preceding '\\'"
                )
            out.write(source[i + 1])
            i += 2
            continue
        if char == "\n":
            out.write(char)
            at_line_start = True
            i += 1
            continue
        if source.startswith("```", i):
            i = _mdv2_pre(source, i, out)
            continue
        if char == "`":
            i = _mdv2_code(source, i, out)
            continue
        if char == "[":
            stack.append(("[", out.offset, _byte_offset(source, i)))
            i += 1
            continue
        if char == "]" and stack and stack[-1][0] == "[":
            _, start, _ = stack.pop()
            if not source.startswith("(", i + 1):
                raise bad_request(PARSE_ERROR + "Can't find end of a URL")
            url, i = _mdv2_url(source, i + 2)
            out.close_entity(start, "text_link", url=url)
            continue
        mark = source[i : i + 2] if source[i : i + 2] in ("__", "||") else char
        if mark in _MDV2_MARKS:
            if stack and stack[-1][0] == mark:
                _, start, _ = stack.pop()
                out.close_entity(start, _MDV2_MARKS[mark])
            elif any(entry[0] == mark for entry in stack):
                raise _unclosed(stack[-1])
            else:
                stack.append((mark, out.offset, _byte_offset(source, i)))
            i += len(mark)
            continue
        if char in _MDV2_RESERVED:
            raise bad_request(
                PARSE_ERROR + f"Character '{char}' is reserved and must be escaped with the "
                "preceding '\\'"
            )
        out.write(char)
        i += 1
    if stack:
        raise _unclosed(stack[-1])
    if quote_start is not None:
        out.close_entity(quote_start, "blockquote")
    return out.result()


def _unclosed(entry: tuple[str, int, int]) -> ApiError:
    mark, _, byte_offset = entry
    name = _MDV2_MARKS.get(mark, "text_url").replace("_", " ").title().replace(" ", "")
    return bad_request(
        PARSE_ERROR + f"Can't find end of {name} entity at byte offset {byte_offset}"
    )


def _mdv2_code(source: str, i: int, out: _TextBuilder) -> int:
    start = out.offset
    j = i + 1
    while j < len(source) and source[j] != "`":
        if source[j] == "\\" and j + 1 < len(source):
            j += 1
        out.write(source[j])
        j += 1
    if j >= len(source):
        raise bad_request(
            PARSE_ERROR + f"Can't find end of Code entity at byte offset {_byte_offset(source, i)}"
        )
    out.close_entity(start, "code")
    return j + 1


def _mdv2_pre(source: str, i: int, out: _TextBuilder) -> int:
    end = source.find("```", i + 3)
    while end != -1 and source[end - 1] == "\\":
        end = source.find("```", end + 1)
    if end == -1:
        raise bad_request(
            PARSE_ERROR + f"Can't find end of Pre entity at byte offset {_byte_offset(source, i)}"
        )
    body = source[i + 3 : end]
    language = None
    first_line, newline, rest = body.partition("\n")
    if newline and first_line and " " not in first_line:
        language, body = first_line, rest
    start = out.offset
    out.write(re.sub(r"\\([`\\])", r"\1", body))
    out.close_entity(start, "pre", language=language)
    return end + 3


def _mdv2_url(source: str, i: int) -> tuple[str, int]:
    chars = []
    while i < len(source) and source[i] != ")":
        if source[i] == "\\" and i + 1 < len(source):
            i += 1
        chars.append(source[i])
        i += 1
    if i >= len(source):
        raise bad_request(PARSE_ERROR + "Can't find end of a URL")
    return "".join(chars), i + 1


def check_entities(text: str, entities: Any) -> list[dict]:
    """Validate a client's `entities` the way the server does before accepting a message."""
    if not isinstance(entities, list):
        raise bad_request(PARSE_ERROR + "entities must be an Array")
    length = utf16_len(text)
    checked = []
    for number, entity in enumerate(entities):
        if not isinstance(entity, dict) or entity.get("type") not in ENTITY_TYPES:
            raise bad_request(PARSE_ERROR + f"unsupported entity type in entity {number}")
        offset, size = entity.get("offset"), entity.get("length")
        if not isinstance(offset, int) or not isinstance(size, int) or offset < 0 or size <= 0:
            raise bad_request(PARSE_ERROR + f"wrong offset or length in entity {number}")
        if offset + size > length:
            raise bad_request(
                PARSE_ERROR + f"entity {number} ends at UTF-16 offset {offset + size} beyond the "
                f"end of the text ({length})"
            )
        if entity["type"] == "text_link" and not entity.get("url"):
            raise bad_request(PARSE_ERROR + f"text_link entity {number} has no URL")
        checked.append(_as_mention(entity))
    return checked


def _as_mention(entity: dict) -> dict:
    """A link to `tg://user?id=N` is stored as a mention of user N, as Telegram does: it notifies
    that user like an @mention would."""
    match = _USER_LINK_RE.fullmatch(str(entity.get("url") or ""))
    if entity["type"] != "text_link" or match is None:
        return dict(entity)
    mentioned = user(int(match.group(1)), f"User {match.group(1)}")
    kept = {key: value for key, value in entity.items() if key != "url"}
    return {**kept, "type": "text_mention", "user": mentioned}


def _trim(text: str, entities: list[dict]) -> tuple[str, list[dict]]:
    """Telegram strips whitespace around a message and moves the entities with the text."""
    stripped = text.strip()
    if stripped == text:
        return text, entities
    shift = utf16_len(text[: len(text) - len(text.lstrip())])
    length = utf16_len(stripped)
    kept = []
    for entity in entities:
        start = max(entity["offset"] - shift, 0)
        end = min(entity["offset"] + entity["length"] - shift, length)
        if end > start:
            kept.append({**entity, "offset": start, "length": end - start})
    return stripped, kept


def _with_detected_mentions(text: str, entities: list[dict]) -> list[dict]:
    """Telegram finds @usernames in every message, a bot's too, outside the given entities;
    each one notifies that user."""
    taken = [(e["offset"], e["offset"] + e["length"]) for e in entities]
    found = [
        mention
        for mention in _auto_entities(text)
        if mention["type"] == "mention"
        and not any(
            start < mention["offset"] + mention["length"] and mention["offset"] < end
            for start, end in taken
        )
    ]
    return sorted(entities + found, key=lambda e: e["offset"]) if found else entities


def _auto_entities(text: str) -> list[dict]:
    """The entities Telegram adds to a user's message: commands and @mentions."""
    found = []
    for pattern, kind in ((_COMMAND_RE, "bot_command"), (_MENTION_RE, "mention")):
        for match in pattern.finditer(text):
            found.append(
                {
                    "type": kind,
                    "offset": utf16_len(text[: match.start()]),
                    "length": utf16_len(match.group(0)),
                }
            )
    return sorted(found, key=lambda e: e["offset"])


# ---------------------------------------------------------------------------------------------
# State.


@dataclass(frozen=True)
class FloodLimits:
    """Telegram's documented per-chat limits on the bot's messages: about 20 a minute in a group
    and one a second in a private chat. Sends and edits count together, as they do on Telegram;
    a write over the limit gets 429 with `retry_after` and is not counted."""

    group_writes: int = 20
    group_window: float = 60.0
    private_writes: int = 1
    private_window: float = 1.0
    #: Drafts to one private chat, apart from its messages (see the module docstring).
    private_drafts: int = 5
    draft_window: float = 1.0

    def __post_init__(self) -> None:
        if min(self.group_writes, self.private_writes, self.private_drafts) < 1:
            raise ValueError("a flood limit allows at least one write per window")

    def for_chat(self, chat_id: int) -> tuple[int, float]:
        """(writes, window in seconds) for a chat: groups, supergroups and channels have
        negative ids on Telegram, people positive ones."""
        if chat_id < 0:
            return self.group_writes, self.group_window
        return self.private_writes, self.private_window


def _is_counted_write(method: str) -> bool:
    """A method that puts or changes a message in a chat (send*, edit*). A chat action
    (typing...) is not a message and does not count toward Telegram's message limits."""
    name = method.lower()
    return name.startswith(("send", "edit")) and name not in ("sendchataction", "sendmessagedraft")


@dataclass
class Call:
    """One request the bot made, with what the fake answered."""

    method: str
    params: dict
    at: float
    ok: bool = True
    error: str | None = None
    result: Any = None
    #: False while the fake is still answering (a long poll in progress).
    done: bool = False


@dataclass
class StoredMessage:
    message_id: int
    sender: dict
    text: str | None
    entities: list[dict]
    date: int
    thread_id: int | None = None
    reply_to: int | None = None
    #: Every (text, entities, monotonic time) the message had, the first one included.
    history: list[tuple[str | None, list[dict], float]] = field(default_factory=list)
    raw: dict = field(default_factory=dict)
    deleted: bool = False


@dataclass(frozen=True)
class Draft:
    """One `sendMessageDraft` the fake accepted."""

    draft_id: int
    text: str
    entities: list[dict]
    thread_id: int | None
    can_stop: bool
    at: float


@dataclass
class FakeChat:
    id: int
    type: str  # private | group | supergroup | channel
    title: str | None = None
    first_name: str | None = None
    username: str | None = None
    is_forum: bool = False
    admins: set[int] = field(default_factory=set)
    creator: int | None = None
    members: dict[int, dict] = field(default_factory=dict)
    messages: dict[int, StoredMessage] = field(default_factory=dict)
    next_message_id: int = 1
    last_edit_at: float = -math.inf
    #: Monotonic times at which the fake accepted a send or edit in this chat, in order.
    writes: list[float] = field(default_factory=list)
    #: Monotonic times at which a send or edit in this chat was answered 429, whatever the cause.
    refusals: list[float] = field(default_factory=list)
    #: Every draft the fake accepted in this chat, in order.
    drafts: list[Draft] = field(default_factory=list)
    #: Drafts answered 429 (`FloodLimits.private_drafts`).
    draft_refusals: int = 0

    def as_dict(self) -> dict:
        out: dict[str, Any] = {"id": self.id, "type": self.type}
        for key in ("title", "first_name", "username"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        if self.is_forum:
            out["is_forum"] = True
        return out

    def bot_messages(self) -> list[StoredMessage]:
        """The bot's live messages in order of sending."""
        return [m for m in self.messages.values() if m.sender["id"] == BOT_ID and not m.deleted]


@dataclass
class CallbackQuery:
    """A button press, and how the bot answered it (`answerCallbackQuery`)."""

    id: str
    data: str
    answered: bool = False
    text: str | None = None
    show_alert: bool = False


def _checked_markup(params: dict) -> dict | None:
    """The message's inline keyboard as Telegram keeps it, or the error it answers with."""
    markup = params.get("reply_markup")
    if not isinstance(markup, dict) or "inline_keyboard" not in markup:
        return None
    for row in markup["inline_keyboard"]:
        for button in row:
            if not button.get("text"):
                raise bad_request("Bad Request: text must be non-empty")
            data = button.get("callback_data")
            if data is None and not button.get("url"):
                raise bad_request(BUTTON_TEXT_EMPTY)
            if data is not None and not 1 <= len(data.encode()) <= MAX_CALLBACK_DATA_BYTES:
                raise bad_request(BUTTON_DATA_INVALID)
    return markup


@dataclass
class StoredFile:
    """A file a user sent, kept as Telegram keeps it: the bot sees its `file_id` in the message
    and learns its `file_path` from `getFile`, the first call choosing it as the server does."""

    file_id: str
    file_unique_id: str
    data: bytes
    #: Telegram's folder for the kind of file: photos, documents, voice, music, video_notes.
    folder: str
    #: The extension the download path ends with (".jpg", ".oga"...), or "".
    suffix: str
    file_path: str | None = None

    def as_file(self) -> dict:
        """The `File` object `getFile` answers with."""
        out: dict[str, Any] = {
            "file_id": self.file_id,
            "file_unique_id": self.file_unique_id,
            "file_size": len(self.data),
        }
        if self.file_path is not None:
            out["file_path"] = self.file_path
        return out


def user(
    user_id: int, first_name: str = "User", *, username: str | None = None, is_bot: bool = False
) -> dict:
    """A Telegram `User` object as updates carry it."""
    out: dict[str, Any] = {"id": user_id, "is_bot": is_bot, "first_name": first_name}
    if username:
        out["username"] = username
    return out


class FakeTelegramAPI:
    """The server, its state and the test controls. Use `async with FakeTelegramAPI() as tg`."""

    def __init__(
        self,
        token: str = DEFAULT_TOKEN,
        *,
        bot_username: str = BOT_USERNAME,
        edit_interval: float = 0.0,
        flood_limits: FloodLimits | None = None,
        port: int = 0,
        allow_http_webhooks: bool = False,
    ) -> None:
        """`edit_interval`: flood control, the least seconds between two edits in one chat
        (0 disables it); a faster edit gets a 429 with the remaining wait as `retry_after`.
        `flood_limits`: Telegram's per-chat limits on sends and edits together (None: none).
        `port`: where to listen (0: any free port); `base_url` is known before `start()`.
        `allow_http_webhooks`: take a plain http:// webhook on any port, as a self-hosted Bot API
        server does (the cloud API wants HTTPS on 443, 80, 88 or 8443), so a test's bot can
        listen on 127.0.0.1."""
        self.token = token
        self.bot = user(BOT_ID, BOT_NAME, username=bot_username, is_bot=True)
        self.bot["can_join_groups"] = True
        self.bot["can_read_all_group_messages"] = False
        self.bot["supports_inline_queries"] = False
        self.edit_interval = edit_interval
        self.flood_limits = flood_limits
        self.calls: list[Call] = []
        self.chats: dict[int, FakeChat] = {}
        self.commands: list[dict] = []
        self.updates: list[dict] = []
        #: Update types the bot asked for (`allowed_updates`, remembered as Telegram does).
        self.allowed_updates: frozenset[str] = frozenset()
        self._update_ids = itertools.count(1)
        self._confirmed = 0
        self._poll_generation = 0
        self._injected: dict[str, list[ApiError]] = {}
        self._injected_parse: dict[str, int] = {}
        self._outage: tuple[ApiError, frozenset[str] | None, int | None] | None = None
        #: Files users sent, by `file_id`, and those `getFile` gave a path, by `file_path`.
        self.files: dict[str, StoredFile] = {}
        self._file_paths: dict[str, StoredFile] = {}
        #: The `file_path` of every download the fake served, in order.
        self.downloads: list[str] = []
        self._file_numbers = itertools.count(1)
        self._path_numbers = itertools.count()
        self._media_groups = itertools.count(13_580_000_000_000_001)
        #: Button presses sent to the bot, by callback query id: the answer, once given.
        self.callback_queries: dict[str, CallbackQuery] = {}
        self._query_ids = itertools.count(4_000_000_000_000_000_001)
        self._changed = asyncio.Condition()
        self._closing = False
        self._runner: web.AppRunner | None = None
        #: The webhook, once the bot set one, and its deliveries (`tests.fakes.telegram_webhooks`).
        self.webhooks = Webhooks(self, allow_http=allow_http_webhooks)
        self.port = port
        self.base_url = f"http://{HOST}:{port}" if port else ""

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> str:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._handle)
        app.router.add_get("/file/bot{token}/{file_path:.+}", self._download)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT)
        await self._runner.setup()
        site = web.TCPSite(self._runner, HOST, self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://{HOST}:{self.port}"
        self.webhooks.start()
        return self.base_url

    async def close(self) -> None:
        self._closing = True
        await self._notify()
        await self.webhooks.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def go_away(self) -> None:
        """The server becomes unreachable, as in an outage: the port is closed and requests in
        progress (a long poll) are cut. Everything Telegram keeps survives (`come_back`)."""
        await self.webhooks.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def come_back(self) -> None:
        """Serve again on the same port, with the chats and pending updates kept meanwhile:
        updates sent during the outage (`message`) are delivered now, as on Telegram."""
        await self.start()

    async def __aenter__(self) -> FakeTelegramAPI:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # -- the user's side --------------------------------------------------------------------

    def private_chat(self, sender: dict) -> FakeChat:
        return self._chat(
            sender["id"],
            "private",
            first_name=sender["first_name"],
            username=sender.get("username"),
        )

    def group(self, chat_id: int = -1001, title: str = "Group") -> FakeChat:
        return self._chat(chat_id, "group", title=title)

    def supergroup(
        self, chat_id: int = -1001000000001, title: str = "Supergroup", *, forum: bool = False
    ) -> FakeChat:
        return self._chat(chat_id, "supergroup", title=title, is_forum=forum)

    def channel(self, chat_id: int = -1001999999999, title: str = "Channel") -> FakeChat:
        return self._chat(chat_id, "channel", title=title)

    def _chat(self, chat_id: int, kind: str, **info: Any) -> FakeChat:
        chat = self.chats.get(chat_id)
        if chat is None:
            chat = self.chats[chat_id] = FakeChat(chat_id, kind, **info)
        return chat

    def set_admins(
        self, chat: FakeChat, admin_ids: list[int], *, creator: int | None = None
    ) -> None:
        chat.admins = set(admin_ids)
        chat.creator = creator

    def open_topic(self, chat: FakeChat, creator: dict, name: str = "Topic") -> int:
        """Create a forum topic; returns its `message_thread_id` (the service message's id)."""
        service = self._store(
            chat,
            creator,
            None,
            extra={
                "forum_topic_created": {"name": name, "icon_color": 7322096},
                "is_topic_message": True,
            },
        )
        service.thread_id = service.message_id
        service.raw["message_thread_id"] = service.message_id
        return service.message_id

    async def message(
        self,
        chat: FakeChat,
        sender: dict | None,
        text: str | None = None,
        *,
        reply_to: int | None = None,
        thread_id: int | None = None,
        entities: list[dict] | None = None,
        forward_from: dict | None = None,
        sender_chat: FakeChat | None = None,
        photo: bool = False,
        sticker: bool = False,
        caption: str | None = None,
    ) -> dict:
        """Queue a `message` update as a user (or a bot, or a channel) sends it; returns it.
        `photo` and `sticker` are placeholders whose files `getFile` does not know: a photo the
        bot downloads comes from `photo_message`."""
        extra: dict[str, Any] = {}
        if sender_chat is not None:
            extra["sender_chat"] = sender_chat.as_dict()
            sender = CHANNEL_BOT if sender_chat.type == "channel" else GROUP_ANONYMOUS_BOT
        if forward_from is not None:
            extra["forward_origin"] = {
                "type": "user",
                "sender_user": forward_from,
                "date": int(time.time()) - 60,
            }
        if photo:
            extra["photo"] = [
                {"file_id": "photo-small", "file_unique_id": "ps", "width": 90, "height": 90},
                {"file_id": "photo-big", "file_unique_id": "pb", "width": 800, "height": 800},
            ]
        if sticker:
            extra["sticker"] = {
                "file_id": "sticker",
                "file_unique_id": "st",
                "type": "regular",
                "width": 512,
                "height": 512,
                "is_animated": False,
                "is_video": False,
                "emoji": "👍",
            }
        if caption is not None:
            extra["caption"] = caption
            extra["caption_entities"] = _auto_entities(caption)
        assert sender is not None, "a message needs a sender or a sender_chat"
        if entities is None and text is not None:
            entities = _auto_entities(text)
        return await self._user_message(
            chat, sender, text, entities or [], extra, reply_to=reply_to, thread_id=thread_id
        )

    async def _user_message(
        self,
        chat: FakeChat,
        sender: dict,
        text: str | None,
        entities: list[dict],
        extra: dict[str, Any],
        *,
        reply_to: int | None,
        thread_id: int | None,
    ) -> dict:
        """Store a user's message in its topic, as a reply if it is one, and queue it."""
        if thread_id is not None:
            extra["message_thread_id"] = thread_id
            extra["is_topic_message"] = True
        stored = self._store(chat, sender, text, entities=entities, extra=extra)
        stored.thread_id = thread_id
        # In a forum topic a message that replies to nothing replies to the topic's first message.
        target = reply_to if reply_to is not None else thread_id
        if target is not None and target in chat.messages:
            stored.reply_to = reply_to
            stored.raw["reply_to_message"] = chat.messages[target].raw
        return await self._push({"message": stored.raw})

    # -- media from the user's side ---------------------------------------------------------

    async def photo_message(
        self,
        chat: FakeChat,
        sender: dict,
        sizes: Sequence[tuple[int, int, bytes]],
        *,
        caption: str | None = None,
        caption_entities: list[dict] | None = None,
        reply_to: int | None = None,
        thread_id: int | None = None,
        media_group_id: str | None = None,
    ) -> dict:
        """A photo as Telegram delivers it: one `PhotoSize` per (width, height, bytes) in
        `sizes`, smallest first, each a file of its own. `caption_entities` defaults to the
        commands and mentions found in `caption`; `media_group_id` makes it part of an album."""
        if not sizes:
            raise ValueError("a photo has at least one size")
        photo = [
            {**self._add_file(data, "photos", ".jpg"), "width": width, "height": height}
            for width, height, data in sizes
        ]
        return await self._media_message(
            chat,
            sender,
            {"photo": photo},
            caption=caption,
            caption_entities=caption_entities,
            reply_to=reply_to,
            thread_id=thread_id,
            media_group_id=media_group_id,
        )

    async def album(
        self,
        chat: FakeChat,
        sender: dict,
        photos: Sequence[Sequence[tuple[int, int, bytes]]],
        *,
        caption: str | None = None,
        reply_to: int | None = None,
        thread_id: int | None = None,
    ) -> list[dict]:
        """Photos sent together: one message each, sharing a `media_group_id`, delivered as
        separate updates (the bot must group them); the caption rides on the first one."""
        if not 2 <= len(photos) <= 10:
            raise ValueError("an album holds 2 to 10 items")
        group_id = str(next(self._media_groups))
        return [
            await self.photo_message(
                chat,
                sender,
                sizes,
                caption=caption if index == 0 else None,
                reply_to=reply_to,
                thread_id=thread_id,
                media_group_id=group_id,
            )
            for index, sizes in enumerate(photos)
        ]

    async def document_message(
        self,
        chat: FakeChat,
        sender: dict,
        data: bytes,
        *,
        file_name: str,
        mime_type: str | None = None,
        caption: str | None = None,
        caption_entities: list[dict] | None = None,
        reply_to: int | None = None,
        thread_id: int | None = None,
        media_group_id: str | None = None,
    ) -> dict:
        """A file sent as a document (an image sent "as a file", a .txt, .md, .json...);
        `mime_type` defaults to what a client reports for `file_name`."""
        suffix = _suffix(file_name)
        document = {
            **self._add_file(data, "documents", suffix),
            "file_name": file_name,
            "mime_type": mime_type or guess_mime_type(file_name),
        }
        return await self._media_message(
            chat,
            sender,
            {"document": document},
            caption=caption,
            caption_entities=caption_entities,
            reply_to=reply_to,
            thread_id=thread_id,
            media_group_id=media_group_id,
        )

    async def voice_message(
        self,
        chat: FakeChat,
        sender: dict,
        data: bytes,
        *,
        duration: int,
        mime_type: str = "audio/ogg",
        caption: str | None = None,
        reply_to: int | None = None,
        thread_id: int | None = None,
    ) -> dict:
        """A voice note: OGG/Opus as Telegram's apps record it, `duration` in whole seconds."""
        voice = {
            **self._add_file(data, "voice", ".oga"),
            "duration": duration,
            "mime_type": mime_type,
        }
        return await self._media_message(
            chat, sender, {"voice": voice}, caption=caption, reply_to=reply_to, thread_id=thread_id
        )

    async def audio_message(
        self,
        chat: FakeChat,
        sender: dict,
        data: bytes,
        *,
        duration: int,
        file_name: str = "audio.mp3",
        mime_type: str | None = None,
        title: str | None = None,
        performer: str | None = None,
        caption: str | None = None,
        reply_to: int | None = None,
        thread_id: int | None = None,
    ) -> dict:
        """A music file (Telegram's `audio`: what its player plays, not a voice note)."""
        audio = {
            **self._add_file(data, "music", _suffix(file_name)),
            "duration": duration,
            "file_name": file_name,
            "mime_type": mime_type or guess_mime_type(file_name),
        }
        audio.update({k: v for k, v in (("title", title), ("performer", performer)) if v})
        return await self._media_message(
            chat, sender, {"audio": audio}, caption=caption, reply_to=reply_to, thread_id=thread_id
        )

    async def video_note_message(
        self,
        chat: FakeChat,
        sender: dict,
        data: bytes,
        *,
        duration: int,
        length: int = 384,
        reply_to: int | None = None,
        thread_id: int | None = None,
    ) -> dict:
        """A round video message (MP4, `length` pixels square); it never has a caption."""
        video_note = {
            **self._add_file(data, "video_notes", ".mp4"),
            "length": length,
            "duration": duration,
        }
        return await self._media_message(
            chat, sender, {"video_note": video_note}, reply_to=reply_to, thread_id=thread_id
        )

    async def _media_message(
        self,
        chat: FakeChat,
        sender: dict,
        media: dict[str, Any],
        *,
        caption: str | None = None,
        caption_entities: list[dict] | None = None,
        reply_to: int | None = None,
        thread_id: int | None = None,
        media_group_id: str | None = None,
    ) -> dict:
        extra = dict(media)
        if media_group_id is not None:
            extra["media_group_id"] = media_group_id
        if caption:
            extra["caption"] = caption
            entities = _auto_entities(caption) if caption_entities is None else caption_entities
            if entities:
                extra["caption_entities"] = check_entities(caption, entities)
        return await self._user_message(
            chat, sender, None, [], extra, reply_to=reply_to, thread_id=thread_id
        )

    def _add_file(self, data: bytes, folder: str, suffix: str) -> dict:
        """Keep a file the user sent; returns the fields every file object in a message has."""
        number = next(self._file_numbers)
        stored = StoredFile(f"{folder}-file-{number}", f"unique-{number}", data, folder, suffix)
        self.files[stored.file_id] = stored
        return {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_size": len(data),
        }

    async def edited_message(self, chat: FakeChat, message_id: int, text: str) -> dict:
        """The user edits an earlier message: an `edited_message` update."""
        stored = chat.messages[message_id]
        stored.text = text
        stored.entities = _auto_entities(text)
        stored.raw.update(text=text, edit_date=int(time.time()))
        stored.raw.pop("entities", None)
        if stored.entities:
            stored.raw["entities"] = stored.entities
        return await self._push({"edited_message": stored.raw})

    async def press_button(
        self, chat: FakeChat, message_id: int, sender: dict, data: str
    ) -> CallbackQuery:
        """`sender` presses the inline button carrying `data` under the bot's message: a
        `callback_query` update, as Telegram sends it. The button must be there."""
        stored = chat.messages[message_id]
        buttons = [
            button
            for row in stored.raw.get("reply_markup", {}).get("inline_keyboard", [])
            for button in row
        ]
        assert any(b.get("callback_data") == data for b in buttons), (
            f"no button {data!r} under message {message_id}: {buttons}"
        )
        query = CallbackQuery(str(next(self._query_ids)), data)
        self.callback_queries[query.id] = query
        await self._push(
            {
                "callback_query": {
                    "id": query.id,
                    "from": sender,
                    "message": stored.raw,
                    "chat_instance": str(-chat.id),
                    "data": data,
                }
            }
        )
        return query

    def keyboard(self, chat: FakeChat, message_id: int) -> list[tuple[str, str]]:
        """The (text, callback data) of each inline button under a message, in order."""
        rows = chat.messages[message_id].raw.get("reply_markup", {}).get("inline_keyboard", [])
        return [(b["text"], b.get("callback_data", "")) for row in rows for b in row]

    async def channel_post(self, chat: FakeChat, text: str) -> dict:
        stored = self._store(chat, None, text, extra={"sender_chat": chat.as_dict()})
        return await self._push({"channel_post": stored.raw})

    async def delete_message(self, chat: FakeChat, message_id: int) -> None:
        """Someone deletes a message: later edits of it fail as on the real server."""
        chat.messages[message_id].deleted = True
        await self._notify()

    def _store(
        self,
        chat: FakeChat,
        sender: dict | None,
        text: str | None,
        *,
        entities: list[dict] | None = None,
        extra: dict | None = None,
    ) -> StoredMessage:
        message_id = chat.next_message_id
        chat.next_message_id += 1
        now = int(time.time())
        raw: dict[str, Any] = {"message_id": message_id, "date": now, "chat": chat.as_dict()}
        if sender is not None:
            raw["from"] = sender
            if not sender.get("is_bot") or sender["id"] == BOT_ID:
                chat.members.setdefault(sender["id"], sender)
        if text is not None:
            raw["text"] = text
            if entities:
                raw["entities"] = entities
        raw.update(extra or {})
        stored = StoredMessage(
            message_id,
            sender or {"id": 0},
            text,
            entities or [],
            now,
            raw=raw,
            history=[(text, entities or [], time.monotonic())],
        )
        chat.messages[message_id] = stored
        return stored

    async def _push(self, body: dict) -> dict:
        update = {"update_id": next(self._update_ids), **body}
        self.updates.append(update)
        await self._notify()
        return next(iter(body.values()))

    # -- failure injection ------------------------------------------------------------------

    def inject_429(self, method: str, count: int = 1, retry_after: int = 1) -> None:
        """The next `count` calls of `method` get flood control with this `retry_after`."""
        self.inject_error(method, too_many_requests(retry_after), count)

    def refuse_drafts(self, error: ApiError | None = None) -> None:
        """Every `sendMessageDraft` from now on fails with `error`; by default a 404, as from a
        server older than Bot API 9.3."""
        refusal = error or ApiError(404, "Not Found")

        async def refused(params: dict) -> Any:
            raise refusal

        self._api_sendmessagedraft = refused  # type: ignore[method-assign]

    async def stop_generation(
        self, chat: FakeChat, draft_id: int, thread_id: int | None = None
    ) -> dict:
        """The user presses the stop button under draft `draft_id`."""
        body: dict[str, Any] = {"chat": chat.as_dict(), "draft_id": draft_id}
        if thread_id is not None:
            body["message_thread_id"] = thread_id
        return await self._push({"stopped_message_generation": body})

    def inject_error(self, method: str, error: ApiError, count: int = 1) -> None:
        """The next `count` calls of `method` fail with `error` (e.g. `ApiError(502, ...)`)."""
        self._injected.setdefault(method.lower(), []).extend([error] * count)

    def hold(self, *methods: str) -> asyncio.Event:
        """Calls of `methods` wait unanswered until the returned event is set: a Bot API slow
        to answer, e.g. to keep the bot from connecting while a test looks at it."""
        release = asyncio.Event()
        for method in methods:
            name = f"_api_{method.lower()}"
            answer = getattr(self, name)

            async def held(params: dict, answer: Callable[[dict], Any] = answer) -> Any:
                await release.wait()
                return await answer(params)

            setattr(self, name, held)
        return release

    def inject_parse_failure(self, method: str, count: int = 1) -> None:
        """The next `count` calls of `method` that carry formatting are rejected as unparsable."""
        key = method.lower()
        self._injected_parse[key] = self._injected_parse.get(key, 0) + count

    def start_outage(
        self,
        code: int = 502,
        description: str = "Bad Gateway",
        *,
        methods: tuple[str, ...] | None = None,
        chat_id: int | None = None,
    ) -> None:
        """Until `end_outage`, every call fails with `code`, as when the Bot API is down behind
        its proxy (a long poll already waiting carries on); or only calls of `methods`, or
        only those about chat `chat_id`."""
        names = None if methods is None else frozenset(m.lower() for m in methods)
        self._outage = (ApiError(code, description), names, chat_id)

    def end_outage(self) -> None:
        self._outage = None

    # -- the bot's pace ---------------------------------------------------------------------

    def writes(self, chat_id: int) -> list[float]:
        """Monotonic times of the sends and edits the fake accepted in this chat."""
        chat = self.chats.get(chat_id)
        return list(chat.writes) if chat else []

    def flood_refusals(self, chat_id: int) -> int:
        """How many sends and edits in this chat were answered 429 (flood limits,
        `edit_interval` or `inject_429`)."""
        chat = self.chats.get(chat_id)
        return len(chat.refusals) if chat else 0

    def max_writes_in_window(self, chat_id: int, window: float) -> int:
        """The most accepted writes in this chat within any `window` seconds (two writes exactly
        `window` apart are not in the same window, as for the flood limits)."""
        times = self.writes(chat_id)
        return max(
            (bisect.bisect_left(times, start + window) - i for i, start in enumerate(times)),
            default=0,
        )

    def _admit_write(self, chat: FakeChat) -> None:
        """Count a send or edit that is about to succeed, or refuse it with 429 when the chat's
        flood limit is reached; `retry_after` is the whole seconds until the window has room."""
        now = time.monotonic()
        if self.flood_limits is not None:
            limit, window = self.flood_limits.for_chat(chat.id)
            if len(chat.writes) >= limit and now - chat.writes[-limit] < window:
                raise too_many_requests(max(1, math.ceil(chat.writes[-limit] + window - now)))
        chat.writes.append(now)

    # -- waiting ----------------------------------------------------------------------------

    async def wait_until(
        self,
        predicate: Callable[[], Any],
        timeout: float = WAIT_TIMEOUT,
    ) -> Any:
        """Wait until `predicate()` is truthy (checked after every call and update); returns it."""
        result = None

        def check() -> bool:
            nonlocal result
            result = predicate()
            return bool(result)

        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(check), timeout)
        return result

    async def wait_calls(
        self,
        method: str,
        count: int = 1,
        *,
        timeout: float = WAIT_TIMEOUT,
        ok: bool | None = True,
    ) -> list[Call]:
        """Wait for `count` answered calls of `method`: successful ones (`ok=True`), failed ones
        (`ok=False`) or any, including calls still in progress (`ok=None`)."""
        await self.wait_until(lambda: len(self.calls_of(method, ok=ok)) >= count, timeout)
        return self.calls_of(method, ok=ok)

    def calls_of(self, method: str, *, ok: bool | None = True) -> list[Call]:
        key = method.lower()
        return [
            c
            for c in self.calls
            if c.method.lower() == key and (ok is None or (c.done and c.ok == ok))
        ]

    # -- HTTP -------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return web.json_response(
                {"ok": False, "error_code": 401, "description": "Unauthorized"}, status=401
            )
        method = request.match_info["method"]
        params = await _read_params(request)
        call = Call(method, params, time.monotonic())
        self.calls.append(call)
        await self._notify()
        handler = getattr(self, f"_api_{method.lower()}", None)
        try:
            if handler is None:
                raise ApiError(404, "Not Found")
            self._check_injected(method.lower(), params)
            result = await handler(params)
        except ApiError as exc:
            if exc.code == 429 and _is_counted_write(method):
                self._note_refusal(params)
            call.ok, call.error, call.done = False, exc.description, True
            await self._notify()
            return web.json_response(exc.body(), status=exc.code)
        call.result, call.done = result, True
        await self._notify()
        return web.json_response({"ok": True, "result": result})

    async def _download(self, request: web.Request) -> web.Response:
        """A file's bytes at the path `getFile` gave, as Telegram's file server sends them."""
        if request.match_info["token"] != self.token:
            return web.json_response(
                {"ok": False, "error_code": 401, "description": "Unauthorized"}, status=401
            )
        file_path = request.match_info["file_path"]
        stored = self._file_paths.get(file_path)
        if stored is None:
            return web.json_response(
                {"ok": False, "error_code": 404, "description": "Not Found"}, status=404
            )
        self.downloads.append(file_path)
        await self._notify()
        return web.Response(body=stored.data, content_type="application/octet-stream")

    def _check_injected(self, method: str, params: dict) -> None:
        if self._outage is not None:
            error, methods, chat_id = self._outage
            if (methods is None or method in methods) and chat_id in (None, params.get("chat_id")):
                raise error
        pending = self._injected.get(method)
        if pending:
            raise pending.pop(0)
        formatted = params.get("entities") or params.get("parse_mode")
        if formatted and self._injected_parse.get(method, 0) > 0:
            self._injected_parse[method] -= 1
            raise bad_request(
                PARSE_ERROR + "Can't find end of the entity starting at byte offset 0"
            )

    def _note_refusal(self, params: dict) -> None:
        chat = self._find_chat(params)
        if chat is not None:
            chat.refusals.append(time.monotonic())

    def _find_chat(self, params: dict) -> FakeChat | None:
        chat_id = params.get("chat_id")
        if isinstance(chat_id, str) and re.fullmatch(r"-?\d+", chat_id):
            chat_id = int(chat_id)
        return self.chats.get(chat_id)  # type: ignore[arg-type]

    def _get_chat(self, params: dict) -> FakeChat:
        chat = self._find_chat(params)
        if chat is None:
            raise bad_request(CHAT_NOT_FOUND)
        return chat

    # -- methods ----------------------------------------------------------------------------

    async def _api_getme(self, params: dict) -> dict:
        return self.bot

    async def _api_deletewebhook(self, params: dict) -> bool:
        return self.webhooks.remove(params)

    async def _api_setwebhook(self, params: dict) -> bool:
        result = self.webhooks.set(params)
        await self._notify()  # deliveries start
        return result

    async def _api_getwebhookinfo(self, params: dict) -> dict:
        return self.webhooks.info()

    async def _api_setmycommands(self, params: dict) -> bool:
        commands = params.get("commands")
        if not isinstance(commands, list) or len(commands) > 100:
            raise bad_request("Bad Request: commands must be an Array of at most 100 BotCommand")
        for command in commands:
            if not _BOT_COMMAND_NAME_RE.match(str(command.get("command", ""))):
                raise bad_request("Bad Request: BOT_COMMAND_INVALID")
            if not 1 <= len(str(command.get("description", ""))) <= 256:
                raise bad_request("Bad Request: BOT_COMMAND_DESCRIPTION_INVALID")
        self.commands = commands
        return True

    async def _api_getupdates(self, params: dict) -> list[dict]:
        if self.webhooks.setting is not None:
            raise ApiError(409, WEBHOOK_CONFLICT)
        offset = int(params.get("offset") or 0)
        limit = min(max(int(params.get("limit") or MAX_UPDATES_PER_POLL), 1), MAX_UPDATES_PER_POLL)
        timeout = max(float(params.get("timeout") or 0), 0.0)
        if offset:
            self._confirmed = max(self._confirmed, offset - 1)
        self._poll_generation += 1
        generation = self._poll_generation
        await self._notify()  # an older poll still waiting now ends with 409 Conflict

        allowed = params.get("allowed_updates")
        if isinstance(allowed, list) and allowed:
            self.allowed_updates = frozenset(allowed)

        def pending() -> list[dict]:
            return [
                u
                for u in self.updates
                if u["update_id"] > self._confirmed
                and u["update_id"] not in self.webhooks.delivered
                and (not self.allowed_updates or self.allowed_updates & u.keys())
            ][:limit]

        def ready() -> bool:
            return bool(pending()) or self._closing or self._poll_generation != generation

        async with self._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait_for(ready), timeout)
        if self._poll_generation != generation:
            raise ApiError(
                409,
                "Conflict: terminated by other getUpdates request; make sure that only one bot "
                "instance is running",
            )
        return [] if self._closing else pending()

    async def _api_sendchataction(self, params: dict) -> bool:
        self._get_chat(params)
        if params.get("action") not in CHAT_ACTIONS:
            raise bad_request("Bad Request: wrong parameter action in request")
        return True

    async def _api_sendmessage(self, params: dict) -> dict:
        chat = self._get_chat(params)
        text, entities = _message_content(params)
        return self._send(chat, params, text, entities, {})

    async def _api_sendmessagedraft(self, params: dict) -> bool:
        """A draft, with the documented rules (see the module docstring)."""
        chat = self._get_chat(params)
        if chat.type != "private":
            raise bad_request(DRAFT_NOT_PRIVATE)
        draft_id = params.get("draft_id")
        if not isinstance(draft_id, int) or draft_id == 0:
            raise bad_request(DRAFT_ID_INVALID)
        text, entities = _formatted(params, "text", "entities")
        if utf16_len(text) > MAX_TEXT_LENGTH:
            raise bad_request(TEXT_TOO_LONG)
        now = time.monotonic()
        if self.flood_limits is not None:
            limit, window = self.flood_limits.private_drafts, self.flood_limits.draft_window
            times = [d.at for d in chat.drafts]
            if len(times) >= limit and now - times[-limit] < window:
                chat.draft_refusals += 1
                raise too_many_requests(max(1, math.ceil(times[-limit] + window - now)))
        thread_id = params.get("message_thread_id")
        chat.drafts.append(
            Draft(draft_id, text, entities, thread_id, bool(params.get("can_stop")), now)
        )
        return True

    async def _api_sendphoto(self, params: dict) -> dict:
        """A photo upload as the server takes it: the file part the `photo` field names
        (`attach://<part>`) or a part called `photo`, an image of at most 10 MB, and a caption
        of at most 1,024 characters. The bytes are kept as a file the bot could fetch again."""
        chat = self._get_chat(params)
        caption, entities = _caption_content(params)
        data = _uploaded(params, "photo")
        if len(data) > MAX_PHOTO_UPLOAD:
            raise bad_request(PHOTO_TOO_BIG)
        try:
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
        except (UnidentifiedImageError, OSError):
            raise bad_request(PHOTO_NOT_IMAGE) from None
        photo = [{**self._add_file(data, "photos", ".jpg"), "width": width, "height": height}]
        extra: dict[str, Any] = {"photo": photo}
        if caption:
            extra["caption"] = caption
            if entities:
                extra["caption_entities"] = entities
        return self._send(chat, params, None, [], extra)

    def _send(
        self, chat: FakeChat, params: dict, text: str | None, entities: list[dict], extra: dict
    ) -> dict:
        """Store a message the bot sends, in its topic and as a reply when it asks to be one."""
        reply_to = None
        reply = params.get("reply_parameters") or {}
        if isinstance(reply, dict) and reply.get("message_id"):
            target = chat.messages.get(int(reply["message_id"]))
            if target is not None and not target.deleted:
                reply_to = target.message_id
            elif not reply.get("allow_sending_without_reply"):
                raise bad_request(REPLY_NOT_FOUND)
        thread_id = params.get("message_thread_id")
        if thread_id:
            if not chat.is_forum:
                raise bad_request("Bad Request: message thread not found")
            extra = {**extra, "message_thread_id": thread_id, "is_topic_message": True}
        markup = _checked_markup(params)
        if markup is not None:
            extra = {**extra, "reply_markup": markup}
        self._admit_write(chat)
        stored = self._store(chat, self.bot, text, entities=entities, extra=extra)
        stored.thread_id = thread_id
        if reply_to is not None:
            stored.reply_to = reply_to
            stored.raw["reply_to_message"] = chat.messages[reply_to].raw
        return stored.raw

    def photo_bytes(self, message: StoredMessage) -> bytes:
        """The bytes of the photo in `message` (its largest size), as uploaded."""
        return self.files[message.raw["photo"][-1]["file_id"]].data

    async def _api_editmessagetext(self, params: dict) -> dict:
        chat = self._get_chat(params)
        stored = chat.messages.get(int(params.get("message_id") or 0))
        if stored is None or stored.deleted:
            raise bad_request(EDIT_NOT_FOUND)
        if stored.sender["id"] != BOT_ID or stored.text is None:
            raise bad_request(CANT_EDIT)
        text, entities = _message_content(params)
        markup = _checked_markup(params)
        if (text, _normal(entities), markup) == (
            stored.text,
            _normal(stored.entities),
            stored.raw.get("reply_markup"),
        ):
            raise bad_request(NOT_MODIFIED)
        now = time.monotonic()
        wait = chat.last_edit_at + self.edit_interval - now
        if self.edit_interval > 0 and wait > 0:
            raise too_many_requests(max(1, math.ceil(wait)))
        self._admit_write(chat)
        chat.last_edit_at = now
        stored.text, stored.entities = text, entities
        stored.history.append((text, entities, now))
        stored.raw = {**stored.raw, "text": text, "edit_date": int(time.time())}
        stored.raw.pop("entities", None)
        if entities:
            stored.raw["entities"] = entities
        # An edit without a keyboard takes the message's away, as Telegram does.
        stored.raw.pop("reply_markup", None)
        if markup is not None:
            stored.raw["reply_markup"] = markup
        return stored.raw

    async def _api_answercallbackquery(self, params: dict) -> bool:
        query = self.callback_queries.get(str(params.get("callback_query_id") or ""))
        if query is None or query.answered:
            raise bad_request(QUERY_INVALID)
        text = params.get("text")
        if text is not None and len(text) > MAX_CALLBACK_ANSWER_CHARS:
            raise bad_request(CALLBACK_ANSWER_TOO_LONG)
        query.answered, query.text = True, text
        query.show_alert = bool(params.get("show_alert"))
        return True

    async def _api_deletemessage(self, params: dict) -> bool:
        chat = self._get_chat(params)
        stored = chat.messages.get(int(params.get("message_id") or 0))
        if stored is None or stored.deleted:
            raise bad_request(DELETE_NOT_FOUND)
        stored.deleted = True
        return True

    async def _api_getfile(self, params: dict) -> dict:
        stored = self.files.get(str(params.get("file_id") or ""))
        if stored is None:
            raise bad_request(INVALID_FILE_ID)
        if len(stored.data) > MAX_DOWNLOAD_SIZE:
            raise bad_request(FILE_TOO_BIG)
        if stored.file_path is None:
            number = next(self._path_numbers)
            stored.file_path = f"{stored.folder}/file_{number}{stored.suffix}"
            self._file_paths[stored.file_path] = stored
        return stored.as_file()

    async def _api_getchatmember(self, params: dict) -> dict:
        chat = self._get_chat(params)
        user_id = int(params.get("user_id") or 0)
        return self._member(chat, user_id)

    async def _api_getchatadministrators(self, params: dict) -> list[dict]:
        chat = self._get_chat(params)
        ids = sorted(chat.admins | ({chat.creator} if chat.creator else set()))
        return [self._member(chat, user_id) for user_id in ids]

    def _member(self, chat: FakeChat, user_id: int) -> dict:
        person = chat.members.get(user_id) or user(user_id, f"User {user_id}")
        if user_id == chat.creator or (chat.type == "private" and user_id == chat.id):
            return {"status": "creator", "user": person, "is_anonymous": False}
        if user_id in chat.admins:
            rights = dict.fromkeys(ADMIN_RIGHTS, True)
            return {
                "status": "administrator",
                "user": person,
                "can_be_edited": False,
                "is_anonymous": False,
                "can_promote_members": False,
                **rights,
            }
        if user_id in chat.members:
            return {"status": "member", "user": person}
        return {"status": "left", "user": person}


def _suffix(file_name: str) -> str:
    """The extension Telegram keeps in a document's download path ("" when there is none)."""
    stem, dot, extension = file_name.rpartition(".")
    return f".{extension.lower()}" if dot and stem and extension.isalnum() else ""


def _normal(entities: list[dict]) -> list[tuple]:
    return sorted(tuple(sorted(e.items())) for e in entities)


def _caption_content(params: dict) -> tuple[str, list[dict]]:
    """A media caption, parsed as a message's text is; it may be empty, and 1,024 long."""
    caption, entities = _formatted(params, "caption", "caption_entities")
    if utf16_len(caption) > MAX_CAPTION_LENGTH:
        raise bad_request(CAPTION_TOO_LONG)
    return caption, entities


def _uploaded(params: dict, name: str) -> bytes:
    """The bytes of the file parameter `name`: the part `attach://<part>` names, or a part
    called `name` itself. (A `file_id` or URL of a file already on Telegram: not served.)"""
    value = params.get(name)
    if isinstance(value, str) and value.startswith("attach://"):
        value = params.get(value.removeprefix("attach://"))
    if not isinstance(value, web.FileField):
        raise bad_request(PHOTO_MISSING)
    return value.file.read()


def _message_content(params: dict) -> tuple[str, list[dict]]:
    """Parse text with its formatting as the server does, then apply the length limits."""
    text, entities = _formatted(params, "text", "entities")
    if not text:
        raise bad_request(TEXT_EMPTY)
    if utf16_len(text) > MAX_TEXT_LENGTH:
        raise bad_request(TEXT_TOO_LONG)
    return text, entities


def _formatted(params: dict, field: str, entities_field: str) -> tuple[str, list[dict]]:
    """`params[field]` with its formatting (`entities_field` or `parse_mode`), trimmed, with the
    mentions the server finds itself."""
    text = params.get(field)
    if text is None:
        text = ""
    if not isinstance(text, str):
        text = json.dumps(text)
    entities_param = params.get(entities_field)
    parse_mode = (params.get("parse_mode") or "").lower()
    if entities_param:
        entities = check_entities(text, entities_param)
    elif parse_mode == "html":
        text, entities = parse_html(text)
    elif parse_mode == "markdownv2":
        text, entities = parse_markdown_v2(text)
    elif parse_mode:
        raise bad_request(f"Bad Request: unsupported parse_mode {params.get('parse_mode')}")
    else:
        entities = []
    text, entities = _trim(text, entities)
    return text, _with_detected_mentions(text, entities)


async def _read_params(request: web.Request) -> dict:
    """Query string, then a JSON, urlencoded or multipart body, decoded as Telegram does."""
    raw: dict[str, Any] = dict(request.query)
    if request.can_read_body:
        if request.content_type == "application/json":
            body = await request.json()
            if isinstance(body, dict):
                return {**raw, **body}
        else:
            form = await request.post()
            raw.update({k: v for k, v in form.items() if isinstance(v, str | web.FileField)})
    return {key: _decode(key, value) for key, value in raw.items()}


def _decode(key: str, value: Any) -> Any:
    if key in STRING_PARAMS or not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value
