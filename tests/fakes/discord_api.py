"""A fake Discord (REST API v10 + gateway) on 127.0.0.1 that a real discord.py client talks to.

Why a fake server and not mocks: the adapter's behaviour that matters (which requests discord.py
sends, what it does with a 429, a 404 on a deleted message, a 4014 close) only shows when the real
library runs over real HTTP and a real WebSocket. The fake keeps Discord's rules that bite bots:

- JSON bodies only with the exact `Content-Type: application/json` (400, code 50109, otherwise),
  except where Discord takes file uploads (a channel message, an interaction follow-up): there
  `multipart/form-data` as discord.py sends it (`payload_json` plus `files[n]` parts), at most
  10 MiB of files per request, a bot's limit in a server without boosts (413, 40005 "Request
  entity too large"); the files are kept with the message (`Message.files`) and served from the
  CDN like a user's attachments;
- message content at most 2,000 characters (400, 50035 "Invalid Form Body"), no empty
  messages (400, 50006), unknown messages 404 (10008), no sending where the bot lacks
  SEND_MESSAGES (403, 50013) or to a user who closed their DMs (403, 50007), no editing
  another author's message (403, 50005);
- 429s injected by tests carry Discord's headers (X-RateLimit-*, Retry-After, `Via`, which
  discord.py needs to tell a rate limit from a Cloudflare ban) and JSON body;
- gateway: HELLO, IDENTIFY with privileged-intent checks (close 4014 when the Developer Portal
  switch is off), READY, GUILD_CREATE, heartbeat ACK, RESUME; transport compression
  `zlib-stream` when the client asks for it (discord.py does unless zstandard is installed);
  without the MESSAGE_CONTENT intent, guild messages arrive with empty content, as on Discord;
- who a message pings follows `allowed_mentions` as Discord applies it (`Message.pings`);
- an interaction answered (or deferred) more than 3 s after it was sent is unknown (404, 10062),
  as Discord forgets it; follow-ups after a deferral are accepted later.

- opt-in `channel_bucket=(limit, seconds)`: sending and editing messages in one channel share
  one rate-limit bucket (Discord's is 5 per 5 s). As Discord's, it is a fixed window: it opens
  with the first write after the last one closed and refills `seconds` later. Every answer's
  X-RateLimit-* headers report its state, so discord.py waits before it would go over; a request over
  the limit gets 429 and is not counted. `writes`, `rate_limit_refusals` and
  `max_writes_in_window` tell a test or benchmark how fast the bot wrote to a channel.

- attachments users send (`Attachment`, `push_voice_message`) are served from the fake's own
  CDN: `url` and `proxy_url` are signed as Discord's (`ex`, `is`, `hm`; a URL without a valid
  signature is 404 "This content is no longer available."), so discord.py's
  `Attachment.read()` fetches the exact bytes; a voice message carries the message flag
  IS_VOICE_MESSAGE and the attachment's `duration_secs` and `waveform`.

- threads started from a message (`POST .../messages/{id}/threads`): the thread's id is the
  message's, its name 1 to 100 characters and its archive duration one of Discord's four (400,
  50035), one thread per message (400, 160004), only in text and announcement channels (400,
  50024), only with Create Public Threads (403, 50013; `deny_threads` takes it away in a
  channel); THREAD_CREATE reaches the clients before the answer.

- sharding: a second guild (`SECOND_GUILD_ID`, channel `SECOND_GENERAL_ID`) lands on another
  shard than the first for a count of 2 or 4. IDENTIFY's `shard: [id, count]` is checked (close
  4010 "Invalid shard" unless 0 <= id < count); a session gets READY (with its `shard`) and
  GUILD_CREATE for its own guilds only, and guild events (MESSAGE_CREATE, INTERACTION_CREATE,
  THREAD_CREATE, MESSAGE_DELETE) only when `(guild_id >> 22) % count` is its shard; DMs go to
  shard 0, as on Discord. A session whose guilds exceed `max_guilds_per_shard` (Discord's
  2,500; lower it in a test) is closed with 4011 "Sharding required", and `GET /gateway/bot`
  recommends enough `shards` for it.

Not emulated: the other routes' buckets (every other 2xx says its bucket has room), the media
proxy's resizing, the second guild's own roles and permissions (it has an @everyone role only,
and permission checks read the first guild's), permissions beyond the one read-only channel and
`deny_threads`, session start limits and `max_concurrency`.

Tests drive it through `push_message`, `push_dm`, `push_interaction`, `delete_message`,
`rate_limit`, `fail`, `expire_attachment_urls`, `closed_dms` and `reconnect_clients` (op 7, then RESUME), and wait with `wait_for(predicate)` (an `asyncio.Condition`, woken by every
request and gateway event; never a sleep). Every request is kept in `calls` with a monotonic
timestamp. Point discord.py at it with `api_base` and `gateway_url`.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import datetime as dt
import email.parser
import email.policy
import hashlib
import hmac
import itertools
import json
import math
import re
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import WSMsgType, web

from tests.fakes.mime import guess_mime_type

T = TypeVar("T")

API_PREFIX = "/api/v10"
GATEWAY_PATH = "/gateway"
TOKEN = "fake-discord-token"
DEFAULT_TIMEOUT = 10.0
MAX_CONTENT = 2000
#: Bytes of files one request may upload: a bot's limit in a server without boosts.
MAX_UPLOAD_BYTES = 10 * 1024 * 1024
#: Seconds a bot has to answer (or defer) an interaction; later, Discord has forgotten it.
INTERACTION_DEADLINE = 3.0
HEARTBEAT_INTERVAL_MS = 41_250

# Fixed ids of the fixture guild; snowflakes made at run time are larger.
APP_ID = 1_000_000_000_000_000_001
BOT_ID = APP_ID
OWNER_ID = 1_000_000_000_000_000_002
GUILD_ID = 1_000_000_000_000_000_010
#: A second guild, one shard step (1 << 22) from the first: with 2 shards the first guild is
#: on shard 1 and this one on shard 0 (with 4: 1 and 2).
SECOND_GUILD_ID = GUILD_ID + (1 << 22)
SECOND_GENERAL_ID = 1_000_000_000_000_000_040
ADMIN_ROLE_ID = 1_000_000_000_000_000_011
BOT_ROLE_ID = 1_000_000_000_000_000_012
GENERAL_ID = 1_000_000_000_000_000_020
RANDOM_ID = 1_000_000_000_000_000_021
READONLY_ID = 1_000_000_000_000_000_022
THREAD_ID = 1_000_000_000_000_000_023
ALICE_ID = 1_000_000_000_000_000_030  # has the admin role (Manage Server)
BOB_ID = 1_000_000_000_000_000_031
OTHER_BOT_ID = 1_000_000_000_000_000_032

# Permission and intent bits (Discord's documented values).
VIEW_CHANNEL = 1 << 10
SEND_MESSAGES = 1 << 11
READ_MESSAGE_HISTORY = 1 << 16
MENTION_EVERYONE = 1 << 17
USE_APPLICATION_COMMANDS = 1 << 31
SEND_MESSAGES_IN_THREADS = 1 << 38
CREATE_PUBLIC_THREADS = 1 << 35
MANAGE_GUILD = 1 << 5
EVERYONE_PERMISSIONS = (
    VIEW_CHANNEL | SEND_MESSAGES | READ_MESSAGE_HISTORY | USE_APPLICATION_COMMANDS
    | SEND_MESSAGES_IN_THREADS | CREATE_PUBLIC_THREADS
)  # fmt: skip
#: Guilds one gateway session may carry before Discord requires sharding (close 4011).
MAX_GUILDS_PER_SHARD = 2500
#: Discord's limits on a thread's name, and the archive durations it takes (minutes).
THREAD_NAME_LENGTHS = range(1, 101)
ARCHIVE_DURATIONS = frozenset({60, 1440, 4320, 10080})
#: Application flags (`GET /oauth2/applications/@me`) saying the Message Content intent is on:
#: the first for verified bots, the second for bots in under 100 servers.
GATEWAY_MESSAGE_CONTENT = 1 << 18
GATEWAY_MESSAGE_CONTENT_LIMITED = 1 << 19
#: Message flag of a voice message (`Message.flags.voice` in discord.py).
IS_VOICE_MESSAGE = 1 << 13
#: Where the fake's CDN serves attachments (`url`), and its media proxy (`proxy_url`).
CDN_PATH = "/attachments"
MEDIA_PROXY_PATH = "/media/attachments"
#: How long a signed attachment URL stays valid (Discord's are about a day).
ATTACHMENT_URL_LIFETIME = 24 * 3600
CONTENT_GONE = "This content is no longer available."
PRIVILEGED_INTENTS = {
    "guild_members": 1 << 1,
    "guild_presences": 1 << 8,
    "message_content": 1 << 15,
}

_DISCORD_EPOCH_MS = 1_420_070_400_000
#: The routes that share a channel's message bucket: creating and editing messages.
_MESSAGE_WRITES = frozenset(
    {
        ("POST", API_PREFIX + "/channels/{channel_id}/messages"),
        ("PATCH", API_PREFIX + "/channels/{channel_id}/messages/{message_id}"),
    }
)
#: The routes that take file uploads (multipart/form-data): a message, an interaction follow-up.
_UPLOADS = frozenset(
    {
        ("POST", API_PREFIX + "/channels/{channel_id}/messages"),
        ("POST", API_PREFIX + "/webhooks/{app_id}/{token}"),
    }
)
#: The bucket hash both routes report, so discord.py knows they share one limit.
_MESSAGE_BUCKET = hashlib.md5(b"channel message writes").hexdigest()[:16]
_MENTION = re.compile(r"<@(!?|&)(\d+)>")
_COMMAND_NAME = re.compile(r"^[-_\w]{1,32}$")


class _Reject(Exception):
    """An API error answer: raised anywhere in a handler, turned into Discord's JSON."""

    def __init__(self, status: int, code: int, message: str, errors: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.errors = status, code, message, errors


def _invalid_form(field_name: str, code: str, message: str) -> _Reject:
    errors = {field_name: {"_errors": [{"code": code, "message": message}]}}
    return _Reject(400, 50035, "Invalid Form Body", errors)


@dataclass
class Call:
    """One HTTP request as the fake saw it, with the answer it gave."""

    method: str
    path: str  # without the /api/v10 prefix
    query: dict[str, str]
    content_type: str | None
    body: Any  # the JSON body; of a multipart upload, its `payload_json`
    at: float  # time.monotonic() when the request arrived
    status: int = 0
    files: list[UploadedFile] = field(default_factory=list)  # a multipart upload's files

    def is_(self, method: str, pattern: str) -> bool:
        """True for a request with this method whose path matches `pattern` (a full regex)."""
        return self.method == method and re.fullmatch(pattern, self.path) is not None


@dataclass(frozen=True)
class Pings:
    """Who a message notifies under Discord's `allowed_mentions` rules."""

    everyone: bool = False
    users: frozenset[int] = frozenset()
    roles: frozenset[int] = frozenset()

    def __bool__(self) -> bool:
        return self.everyone or bool(self.users) or bool(self.roles)


@dataclass(frozen=True)
class UploadedFile:
    """A file the bot uploaded with a message (a `files[n]` part), as it arrived."""

    filename: str
    content_type: str | None
    data: bytes


@dataclass
class Message:
    """A message as the fake stores it; `payload()` is what Discord would send for it."""

    id: int
    channel_id: int
    guild_id: int | None
    author_id: int
    content: str
    reference_id: int | None = None
    #: Attachment payloads: those of `Attachment`s the fake serves, or raw dicts sent as given.
    attachments: list[dict] = field(default_factory=list)
    flags: int = 0
    sticker_items: list[dict] = field(default_factory=list)
    allowed_mentions: dict | None = None
    pings: Pings = Pings()
    edits: list[str] = field(default_factory=list)  # every content set by PATCH, in order
    #: The files the bot uploaded with the message, in order.
    files: list[UploadedFile] = field(default_factory=list)
    interaction_id: int | None = None
    #: time.monotonic() when the fake stored the message, then when it applied each edit.
    created_at: float = field(default_factory=time.monotonic)
    edit_times: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class Attachment:
    """A file a user attaches to a message; `push_message` gives it an id and CDN URLs.

    `content_type` defaults to the type for `filename` (text ones with `charset=utf-8`, as
    Discord labels them); an image needs its `width` and `height`, which Discord always sends.
    `duration_secs` and `waveform` (raw bytes, one amplitude per sample, 256 at most) make it
    the recording of a voice message: see `push_voice_message`.
    """

    filename: str
    data: bytes
    content_type: str | None = None
    width: int | None = None
    height: int | None = None
    duration_secs: float | None = None
    waveform: bytes | None = None
    description: str | None = None

    def kind(self) -> str:
        """The `content_type` Discord reports for the file."""
        if self.content_type is not None:
            return self.content_type
        guessed = guess_mime_type(self.filename)
        return f"{guessed}; charset=utf-8" if guessed.startswith("text/") else guessed


@dataclass
class _StoredFile:
    channel_id: int
    filename: str
    data: bytes
    content_type: str


@dataclass
class Interaction:
    """A slash-command use pushed by a test, with the bot's answers to it."""

    id: int
    token: str
    name: str
    channel_id: int
    user_id: int
    callback: dict | None = None
    response_message_id: int | None = None
    followups: list[int] = field(default_factory=list)
    #: 2: a command run; 4: an autocomplete request (answered with choices, callback type 8).
    kind: int = 2
    #: The choices an autocomplete request was answered with.
    choices: list[dict] | None = None
    #: time.monotonic() when the interaction was sent to the bot.
    created_at: float = field(default_factory=time.monotonic)


@dataclass
class _Session:
    ws: web.WebSocketResponse
    compressor: Any  # zlib compressobj or None
    intents: int = 0
    seq: int = 0
    identified: bool = False
    session_id: str = ""
    shard: tuple[int, int] | None = None  # (id, count) from IDENTIFY; None: unsharded

    def receives(self, guild_id: int | None) -> bool:
        """Whether Discord sends this session the events of `guild_id` (None: a DM)."""
        if self.shard is None:
            return True
        shard, count = self.shard
        return shard == (0 if guild_id is None else shard_of(guild_id, count))


def shard_of(guild_id: int, shard_count: int) -> int:
    """The shard whose session Discord sends a guild's events to."""
    return (guild_id >> 22) % shard_count


class FakeDiscord:
    """One fake Discord with two guilds; use as `async with FakeDiscord() as fake:`."""

    def __init__(
        self,
        *,
        token: str = TOKEN,
        enabled_intents: Sequence[str] = ("message_content",),
        channel_bucket: tuple[int, float] | None = None,
        port: int = 0,
    ) -> None:
        """`channel_bucket`: (requests, seconds) that creating and editing messages in one
        channel may spend together, as Discord's per-channel bucket (None: unlimited).
        `port`: where to listen (0: any free port); `api_base` is known before it starts."""
        self.token = token
        self.channel_bucket = channel_bucket
        #: Per channel, monotonic times of the message writes the bucket let through.
        self._writes: dict[int, list[float]] = {}
        #: Per channel, the bucket's open window: when it opened and the writes it let through.
        self._windows: dict[int, tuple[float, int]] = {}
        #: Per channel, how many message writes were answered 429 (bucket or `rate_limit`).
        self._refusals: dict[int, int] = {}
        #: The Developer Portal's privileged-intent switches that are on.
        self.enabled_intents = set(enabled_intents)
        #: The application's flags, if a test sets them; else `application_flags()` derives them.
        self.flags: int | None = None
        self.calls: list[Call] = []
        self.messages: dict[int, Message] = {}
        self.interactions: dict[int, Interaction] = {}
        self.commands: dict[int | None, list[dict]] = {}  # guild id (None = global) -> commands
        self.identify_payloads: list[dict] = []
        #: Users who closed their DMs: the bot's messages to them get 403 (50007).
        self.closed_dms: set[int] = set()
        self.gateway_closes: list[int] = []  # close codes the fake sent
        self.gateway_queries: list[dict[str, str]] = []  # query of each gateway connection
        #: Guilds one session may carry before IDENTIFY is closed with 4011.
        self.max_guilds_per_shard = MAX_GUILDS_PER_SHARD
        self.guild_names: dict[int, str] = {
            GUILD_ID: "Parley test guild",
            SECOND_GUILD_ID: "Parley second guild",
        }
        self.users: dict[int, dict] = {
            BOT_ID: _user(BOT_ID, "Parley", bot=True),
            OWNER_ID: _user(OWNER_ID, "owner"),
            ALICE_ID: _user(ALICE_ID, "alice", global_name="Alice"),
            BOB_ID: _user(BOB_ID, "bob", global_name="Bob"),
            OTHER_BOT_ID: _user(OTHER_BOT_ID, "otherbot", bot=True),
        }
        self.member_roles: dict[int, list[int]] = {
            BOT_ID: [BOT_ROLE_ID],
            OWNER_ID: [],
            ALICE_ID: [ADMIN_ROLE_ID],
            BOB_ID: [],
            OTHER_BOT_ID: [],
        }
        self.roles = [
            _role(GUILD_ID, "@everyone", EVERYONE_PERMISSIONS, position=0),
            _role(ADMIN_ROLE_ID, "admin", MANAGE_GUILD, position=2),
            _role(BOT_ROLE_ID, "Parley", MENTION_EVERYONE, position=1, bot_id=BOT_ID),
        ]
        self.channels: dict[int, dict] = {
            GENERAL_ID: _text_channel(GENERAL_ID, "general", 0),
            RANDOM_ID: _text_channel(RANDOM_ID, "random", 1),
            READONLY_ID: _text_channel(
                READONLY_ID,
                "announcements",
                2,
                overwrites=[
                    {"id": str(GUILD_ID), "type": 0, "allow": "0", "deny": str(SEND_MESSAGES)}
                ],
            ),
            THREAD_ID: _thread(THREAD_ID, GENERAL_ID, "a thread"),
            SECOND_GENERAL_ID: _text_channel(
                SECOND_GENERAL_ID, "general", 0, guild_id=SECOND_GUILD_ID
            ),
        }
        self._ids = itertools.count(1)
        self._sessions: list[_Session] = []
        self._resumable: dict[str, _Session] = {}  # by session id, from READY on
        self.resumed = 0  # successful RESUMEs
        self._rate_limits: list[list] = []  # [method, pattern, retry_after, remaining times]
        self._failures: list[list] = []  # [method, pattern, status, remaining times]
        #: The requests being answered, by `id()` of their aiohttp request.
        self._serving: dict[int, Call] = {}
        #: Files users attached, by attachment id, served at their CDN URLs.
        self.files: dict[int, _StoredFile] = {}
        self._url_key = f"fake-cdn-{id(self)}".encode()
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.port = port

    # ------------------------------------------------------------------ lifecycle

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}{API_PREFIX}"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}{GATEWAY_PATH}"

    async def __aenter__(self) -> FakeDiscord:
        await self.start()
        return self

    async def start(self) -> None:
        """Listen on `port` (a free one when 0), serving the REST API and the gateway."""
        # Above aiohttp's default 1 MiB: uploads are refused by Discord's limit, with its answer.
        app = web.Application(middlewares=[self._middleware], client_max_size=2 * MAX_UPLOAD_BYTES)
        app.router.add_get(GATEWAY_PATH, self._gateway)
        for prefix in (CDN_PATH, MEDIA_PROXY_PATH):
            app.router.add_get(prefix + "/{channel_id}/{attachment_id}/{filename}", self._cdn)
        routes = [
            ("GET", "/users/@me", self._get_me),
            ("GET", "/oauth2/applications/@me", self._get_application),
            ("GET", "/gateway", self._get_gateway),
            ("GET", "/gateway/bot", self._get_gateway_bot),
            ("POST", "/users/@me/channels", self._create_dm),
            ("GET", "/channels/{channel_id}", self._get_channel),
            ("POST", "/channels/{channel_id}/messages", self._create_message),
            ("GET", "/channels/{channel_id}/messages/{message_id}", self._get_message),
            ("PATCH", "/channels/{channel_id}/messages/{message_id}", self._edit_message),
            ("DELETE", "/channels/{channel_id}/messages/{message_id}", self._delete_message),
            ("POST", "/channels/{channel_id}/messages/{message_id}/threads", self._start_thread),
            ("POST", "/channels/{channel_id}/typing", self._typing),
            ("GET", "/applications/{app_id}/commands", self._get_commands),
            ("PUT", "/applications/{app_id}/commands", self._put_commands),
            ("GET", "/applications/{app_id}/guilds/{guild_id}/commands", self._get_commands),
            ("PUT", "/applications/{app_id}/guilds/{guild_id}/commands", self._put_commands),
            ("POST", "/interactions/{interaction_id}/{token}/callback", self._callback),
            ("POST", "/webhooks/{app_id}/{token}", self._followup),
            ("GET", "/webhooks/{app_id}/{token}/messages/{message_id}", self._get_webhook_msg),
            ("PATCH", "/webhooks/{app_id}/{token}/messages/{message_id}", self._edit_webhook_msg),
        ]
        for method, path, handler in routes:
            app.router.add_route(method, API_PREFIX + path, handler)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def __aexit__(self, *exc_info: object) -> None:
        for session in list(self._sessions):
            await session.ws.close(code=1001)
        if self._runner is not None:
            await self._runner.cleanup()

    async def go_away(self) -> None:
        """Discord becomes unreachable, as in an outage: gateway connections drop (1001, going
        away) and the port closes. Sessions stay resumable and the guild's state is kept."""
        await self.__aexit__()
        self._runner = None

    async def come_back(self) -> None:
        """Serve again on the same port: a client's RESUME of its old session succeeds."""
        await self.start()

    # ------------------------------------------------------------------ test controls

    async def wait_for(self, predicate: Callable[[], T], within: float = DEFAULT_TIMEOUT) -> T:
        """Wait until `predicate()` is truthy (re-checked after every request and event)."""
        async with self._changed:
            return await asyncio.wait_for(self._changed.wait_for(predicate), within)

    @property
    def connected(self) -> int:
        """How many gateway sessions are open and identified."""
        return sum(session.identified for session in self._sessions)

    async def wait_connected(self, within: float = DEFAULT_TIMEOUT) -> None:
        """Wait until a client has identified and received READY and GUILD_CREATE."""
        await self.wait_for(lambda: self.connected, within)

    def calls_to(self, method: str, pattern: str) -> list[Call]:
        return [c for c in self.calls if c.is_(method, pattern)]

    def bot_messages(self, channel_id: int | None = None) -> list[Message]:
        """Messages the bot created (through REST or an interaction), oldest first."""
        return [
            m
            for m in self.messages.values()
            if m.author_id == BOT_ID and channel_id in (None, m.channel_id)
        ]

    def writes(self, channel_id: int) -> list[float]:
        """Monotonic times of the message creates and edits let through in this channel."""
        return list(self._writes.get(channel_id, []))

    def rate_limit_refusals(self, channel_id: int) -> int:
        """How many message creates and edits in this channel were answered 429."""
        return self._refusals.get(channel_id, 0)

    def max_writes_in_window(self, channel_id: int, window: float) -> int:
        """The most message writes in this channel within any `window` seconds (two writes
        exactly `window` apart are not in the same window, as for the bucket)."""
        times = self.writes(channel_id)
        return max(
            (bisect.bisect_left(times, start + window) - i for i, start in enumerate(times)),
            default=0,
        )

    def rate_limit(self, method: str, pattern: str, *, retry_after: float, times: int = 1) -> None:
        """Answer the next `times` matching requests with a 429 (per-route, not global)."""
        self._rate_limits.append([method, pattern, retry_after, times])

    def fail(self, method: str, pattern: str, *, status: int = 503, times: int = 1) -> None:
        """Answer the next `times` matching requests with this server error (Discord's JSON
        body), as Discord's edge does in an incident; discord.py raises a 503 at once."""
        self._failures.append([method, pattern, status, times])

    async def delete_message(self, message_id: int) -> None:
        """Delete a message as a moderator would: later edits of it get 404 Unknown Message."""
        message = self.messages.pop(message_id)
        await self._dispatch(
            "MESSAGE_DELETE",
            _without_none(
                {
                    "id": str(message_id),
                    "channel_id": str(message.channel_id),
                    "guild_id": _s(message.guild_id),
                }
            ),
        )

    async def reconnect_clients(self) -> None:
        """Ask every client to reconnect (op 7 RECONNECT), as Discord does before maintenance."""
        for session in list(self._sessions):
            await self._send(session, {"op": 7, "d": None})

    def deny_threads(self, channel_id: int) -> None:
        """Take Create Public Threads from everyone in `channel_id`, as a server admin would.
        No CHANNEL_UPDATE follows: a bot connected already has it in its cache only from
        its next connection on, so until then the API's 403 is what tells it."""
        channel = self.channels[channel_id]
        overwrites = channel.setdefault("permission_overwrites", [])
        overwrites.append(
            {"id": str(GUILD_ID), "type": 0, "allow": "0", "deny": str(CREATE_PUBLIC_THREADS)}
        )

    def add_member(self, user_id: int, name: str) -> None:
        """A person joins the guild (no roles); call it before the client connects, so the
        guild the client receives lists them."""
        self.users[user_id] = _user(user_id, name.lower(), global_name=name)
        self.member_roles[user_id] = []

    def dm_channel_id(self, user_id: int) -> int:
        """The id of the DM channel between the bot and `user_id` (created on first use)."""
        for channel in self.channels.values():
            if channel["type"] == 1 and int(channel["recipients"][0]["id"]) == user_id:
                return int(channel["id"])
        channel_id = self._snowflake()
        self.channels[channel_id] = {
            "id": str(channel_id),
            "type": 1,
            "last_message_id": None,
            "recipients": [self.users[user_id]],
        }
        return channel_id

    async def push_message(
        self,
        content: str = "",
        *,
        author: int = BOB_ID,
        channel: int = GENERAL_ID,
        reply_to: int | None = None,
        ping_reply: bool = True,
        attachments: Sequence[Attachment | dict] = (),
        sticker_items: Sequence[dict] = (),
        flags: int = 0,
        offline: bool = False,
    ) -> Message:
        """A user posts a message: stored, then sent to connected clients as MESSAGE_CREATE
        (`offline`: not sent, as one written while the bot was away: only the REST API has it).

        Mentions in `content` (`<@id>`, `<@&id>`, `@everyone`) are resolved as Discord does;
        a reply pings the replied-to author unless `ping_reply` is off (the "@ ON" toggle).
        Each `Attachment` is stored and served at its URLs; a dict is sent as given.
        """
        guild_id = _channel_guild(self.channels[channel])
        replied = self.messages.get(reply_to) if reply_to else None
        message = Message(
            id=self._snowflake(),
            channel_id=channel,
            guild_id=guild_id,
            author_id=author,
            content=content,
            reference_id=reply_to,
            attachments=[
                self._add_file(channel, a) if isinstance(a, Attachment) else a for a in attachments
            ],
            sticker_items=list(sticker_items),
            flags=flags,
        )
        allowed = None if ping_reply else {"parse": ["users", "roles"], "replied_user": False}
        message.pings = self._pings(content, allowed, replied, may_ping_everyone=False)
        self.messages[message.id] = message
        if not offline:
            await self._dispatch("MESSAGE_CREATE", self._message_payload(message))
        return message

    async def push_voice_message(
        self,
        data: bytes,
        *,
        duration_secs: float,
        waveform: bytes = bytes(range(0, 256, 4)),
        author: int = BOB_ID,
        channel: int = GENERAL_ID,
        reply_to: int | None = None,
    ) -> Message:
        """A voice message as Discord's apps send one: no text, one OGG/Opus recording named
        `voice-message.ogg` with its duration and waveform, and the IS_VOICE_MESSAGE flag."""
        recording = Attachment(
            "voice-message.ogg",
            data,
            content_type="audio/ogg",
            duration_secs=duration_secs,
            waveform=waveform,
        )
        return await self.push_message(
            author=author,
            channel=channel,
            reply_to=reply_to,
            attachments=[recording],
            flags=IS_VOICE_MESSAGE,
        )

    def _add_file(self, channel_id: int, attachment: Attachment) -> dict:
        """Keep an attachment's bytes for the CDN; returns its payload as Discord sends it."""
        kind = attachment.kind()
        has_size = attachment.width is not None and attachment.height is not None
        if kind.startswith("image/") and not has_size:
            raise ValueError(f"{attachment.filename}: Discord sends an image's width and height")
        is_voice = (attachment.duration_secs is None, attachment.waveform is None)
        if is_voice not in ((True, True), (False, False)):
            raise ValueError("a voice recording has both duration_secs and a waveform")
        payload = self._serve(channel_id, attachment.filename, attachment.data, kind)
        if has_size:
            payload.update(width=attachment.width, height=attachment.height)
        if attachment.waveform is not None:
            payload.update(
                duration_secs=attachment.duration_secs,
                waveform=base64.b64encode(attachment.waveform).decode(),
            )
        if attachment.description is not None:
            payload["description"] = attachment.description
        return payload

    def _serve(self, channel_id: int, filename: str, data: bytes, kind: str) -> dict[str, Any]:
        """Keep a file for the CDN; its attachment payload (without what only some files have)."""
        attachment_id = self._snowflake()
        # Discord keeps letters, digits, dots, dashes and underscores; the rest becomes "_".
        filename = re.sub(r"[^A-Za-z0-9._-]", "_", filename)
        self.files[attachment_id] = _StoredFile(channel_id, filename, data, kind)
        where = f"/{channel_id}/{attachment_id}/{filename}"
        return {
            "id": str(attachment_id),
            "filename": filename,
            "size": len(data),
            "url": self._signed_url(CDN_PATH + where),
            "proxy_url": self._signed_url(MEDIA_PROXY_PATH + where),
            "content_type": kind,
        }

    def _attach_uploads(self, message: Message, files: list[UploadedFile]) -> None:
        """The bot's uploaded files become the message's attachments, served like a user's."""
        message.files = list(files)
        message.attachments = [
            self._serve(
                message.channel_id,
                upload.filename,
                upload.data,
                guess_mime_type(upload.filename),
            )
            for upload in files
        ]

    def expire_attachment_urls(self) -> None:
        """Every attachment URL handed out so far stops working (404 "This content is no longer
        available."), as Discord's do when their signature expires; new messages get new ones."""
        self._url_key += b"+"

    def _signed_url(self, path: str) -> str:
        """An attachment URL with Discord's signature: expiry (`ex`) and issue (`is`) times in
        hex, and `hm`, a MAC over the path and both times."""
        issued = int(time.time())
        expires = issued + ATTACHMENT_URL_LIFETIME
        query = f"ex={expires:x}&is={issued:x}"
        return f"http://127.0.0.1:{self.port}{path}?{query}&hm={self._mac(path, query)}&"

    def _mac(self, path: str, query: str) -> str:
        return hmac.new(self._url_key, f"{path}?{query}".encode(), hashlib.sha256).hexdigest()

    async def push_dm(self, content: str, *, author: int = BOB_ID, **kwargs: Any) -> Message:
        return await self.push_message(
            content, author=author, channel=self.dm_channel_id(author), **kwargs
        )

    async def push_interaction(
        self,
        name: str,
        options: dict[str, Any] | None = None,
        *,
        user: int = BOB_ID,
        channel: int = GENERAL_ID,
        focused: str | None = None,
    ) -> Interaction:
        """A user runs slash command `name` (string options only), as INTERACTION_CREATE.

        With `focused` (an option's name), the user is still typing that option: an
        APPLICATION_COMMAND_AUTOCOMPLETE request, whose answer `wait_choices` returns."""
        command = next(
            (c for cmds in self.commands.values() for c in cmds if c["name"] == name), None
        )
        if command is None:
            raise AssertionError(f"/{name} was never synced; synced: {self.commands}")
        interaction = Interaction(
            id=self._snowflake(),
            token=f"itoken-{next(self._ids)}",
            name=name,
            channel_id=channel,
            user_id=user,
            kind=2 if focused is None else 4,
        )
        if focused is not None:
            declared = {option["name"]: option for option in command.get("options", [])}
            if not declared.get(focused, {}).get("autocomplete"):
                raise AssertionError(f"/{name} has no autocomplete option {focused!r}")
        self.interactions[interaction.id] = interaction
        channel_data = self.channels[channel]
        in_guild = channel_data["type"] != 1
        payload: dict[str, Any] = {
            "id": str(interaction.id),
            "application_id": str(APP_ID),
            "type": interaction.kind,
            "token": interaction.token,
            "version": 1,
            "data": {
                "id": command["id"],
                "name": name,
                "type": 1,
                "options": [
                    {"name": key, "type": 3, "value": value}
                    | ({"focused": True} if key == focused else {})
                    for key, value in (options or {}).items()
                ],
            },
            "channel_id": str(channel),
            "channel": channel_data,
            "app_permissions": str(self._permissions(BOT_ID)),
            "locale": "en-US",
            "entitlements": [],
            "attachment_size_limit": 10 * 1024 * 1024,
            "context": 0 if in_guild else 1,
            "authorizing_integration_owners": {"0": str(_channel_guild(channel_data) or GUILD_ID)},
        }
        if in_guild:
            member = self._member(user)
            member["permissions"] = str(self._permissions(user))
            payload.update(
                guild_id=str(_channel_guild(channel_data)), guild_locale="en-US", member=member
            )
        else:
            payload["user"] = self.users[user]
        await self._dispatch("INTERACTION_CREATE", payload)
        return interaction

    async def wait_choices(
        self, interaction: Interaction, within: float = DEFAULT_TIMEOUT
    ) -> list[dict]:
        """Wait for the bot's answer to an autocomplete request: its choices."""
        return await self.wait_for(lambda: interaction.choices, within)

    async def wait_answered(self, interaction: Interaction, within: float = DEFAULT_TIMEOUT) -> str:
        """Wait for the bot's visible answer to `interaction` and return its text."""

        def answer() -> str | None:
            ids = [interaction.response_message_id, *interaction.followups]
            # A deferred answer's own message stays empty ("thinking…"); its follow-ups speak.
            texts = [self.messages[i].content for i in ids if i in self.messages]
            return "\n".join(text for text in texts if text) or None

        return await self.wait_for(answer, within)

    # ------------------------------------------------------------------ HTTP plumbing

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Callable) -> web.StreamResponse:
        if request.path == GATEWAY_PATH:
            return await handler(request)
        if request.path.startswith((CDN_PATH + "/", MEDIA_PROXY_PATH + "/")):
            return await self._cdn_middleware(request, handler)
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _json_response({"message": "Request entity too large", "code": 40005}, 413)
        call = Call(
            method=request.method,
            path=request.path.removeprefix(API_PREFIX),
            query=dict(request.query),
            content_type=request.headers.get("Content-Type"),
            body=None,
            at=time.monotonic(),
        )
        self.calls.append(call)
        self._serving[id(request)] = call
        try:
            if raw:
                if _route_of(request) in _UPLOADS and (call.content_type or "").startswith(
                    "multipart/form-data"
                ):
                    call.body, call.files = _read_upload(call.content_type or "", raw)
                elif call.content_type != "application/json":
                    raise _Reject(400, 50109, "The request body contains invalid JSON.")
                else:
                    try:
                        call.body = json.loads(raw)
                    except ValueError:
                        raise _Reject(
                            400, 50109, "The request body contains invalid JSON."
                        ) from None
            needs_auth = not call.path.startswith(("/interactions/", "/webhooks/"))
            if needs_auth and request.headers.get("Authorization") != f"Bot {self.token}":
                raise _Reject(401, 0, "401: Unauthorized")
            if request.match_info.http_exception is not None:
                raise _Reject(
                    request.match_info.http_exception.status,
                    0,
                    f"{request.match_info.http_exception.status}: Not Found",
                )
            failure = self._take_failure(call)
            if failure is not None:
                raise _Reject(failure, 0, f"{failure}: Service Unavailable")
            channel_id = _written_channel(request)
            limited = self._take_rate_limit(call)
            if limited is None and channel_id is not None:
                limited = self._admit_write(channel_id, call.at)
            if limited is not None:
                response = self._too_many_requests(request, limited)
                if channel_id is not None:
                    self._refusals[channel_id] = self._refusals.get(channel_id, 0) + 1
                    if self.channel_bucket is not None:
                        self._add_channel_headers(response, channel_id, call.at)
            else:
                response = await handler(request)
                if channel_id is not None and self.channel_bucket is not None:
                    self._add_channel_headers(response, channel_id, call.at)
                else:
                    self._add_bucket_headers(request, response, remaining=1)
        except _Reject as exc:
            body = {"message": exc.message, "code": exc.code}
            if exc.errors:
                body["errors"] = exc.errors
            response = _json_response(body, status=exc.status)
        finally:
            del self._serving[id(request)]
        call.status = response.status
        await self._notify()
        return response

    def _call(self, request: web.Request) -> Call:
        """The request being served, as the middleware recorded it (body parsed)."""
        return self._serving[id(request)]

    async def _cdn_middleware(self, request: web.Request, handler: Callable) -> web.StreamResponse:
        """The CDN is not the API: no token, no rate-limit headers, plain-text errors; its
        requests are kept in `calls` and `fail` applies to them too."""
        call = Call(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            content_type=None,
            body=None,
            at=time.monotonic(),
        )
        self.calls.append(call)
        failure = self._take_failure(call)
        if failure is not None:
            response: web.StreamResponse = web.Response(status=failure, text="upstream error")
        else:
            response = await handler(request)
        call.status = response.status
        await self._notify()
        return response

    async def _cdn(self, request: web.Request) -> web.Response:
        """An attachment's bytes, if the URL is one the fake signed and it has not expired."""
        stored = self.files.get(int(request.match_info["attachment_id"]))
        query = f"ex={request.query.get('ex', '')}&is={request.query.get('is', '')}"
        signed = hmac.compare_digest(request.query.get("hm", ""), self._mac(request.path, query))
        if (
            stored is None
            or not signed
            or request.match_info["channel_id"] != str(stored.channel_id)
            or request.match_info["filename"] != stored.filename
            or int(request.query["ex"], 16) < time.time()
        ):
            return web.Response(status=404, text=CONTENT_GONE)
        return web.Response(body=stored.data, headers={"Content-Type": stored.content_type})

    def _admit_write(self, channel_id: int, now: float) -> float | None:
        """Count a message write in its channel's bucket; or, when the bucket is full, the
        seconds until it refills (the 429's `retry_after`)."""
        if self.channel_bucket is not None:
            limit, per = self.channel_bucket
            opened, used = self._window(channel_id, now)
            if used >= limit:
                return opened + per - now
            self._windows[channel_id] = (opened, used + 1)
        self._writes.setdefault(channel_id, []).append(now)
        return None

    def _window(self, channel_id: int, now: float) -> tuple[float, int]:
        """The channel bucket's window at `now`: a closed one gives way to a fresh one."""
        assert self.channel_bucket is not None
        opened, used = self._windows.get(channel_id, (now, 0))
        if now - opened >= self.channel_bucket[1]:
            return now, 0
        return opened, used

    def _add_channel_headers(
        self, response: web.StreamResponse, channel_id: int, now: float
    ) -> None:
        """The channel bucket's real state: requests left in its window, and the seconds until
        it refills (discord.py takes the whole limit as available then, which is true)."""
        assert self.channel_bucket is not None
        limit, per = self.channel_bucket
        opened, used = self._window(channel_id, now)
        reset_after = opened + per - now if used else 0.0
        response.headers.update(
            {
                "X-RateLimit-Limit": str(limit),
                "X-RateLimit-Remaining": str(max(limit - used, 0)),
                "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
                "X-RateLimit-Reset-After": f"{reset_after:.3f}",
                "X-RateLimit-Bucket": _MESSAGE_BUCKET,
                "Via": "1.1 google",
            }
        )

    def _take_failure(self, call: Call) -> int | None:
        for entry in self._failures:
            method, pattern, status, times = entry
            if times > 0 and call.is_(method, pattern):
                entry[3] -= 1
                return status
        return None

    def _take_rate_limit(self, call: Call) -> float | None:
        for entry in self._rate_limits:
            method, pattern, retry_after, times = entry
            if times > 0 and call.is_(method, pattern):
                entry[3] -= 1
                return retry_after
        return None

    def _too_many_requests(self, request: web.Request, retry_after: float) -> web.Response:
        body = {
            "message": "You are being rate limited.",
            "retry_after": retry_after,
            "global": False,
        }
        response = _json_response(body, status=429)
        self._add_bucket_headers(request, response, remaining=0, reset_after=retry_after)
        response.headers["Retry-After"] = str(math.ceil(retry_after))
        response.headers["X-RateLimit-Scope"] = "user"
        return response

    @staticmethod
    def _add_bucket_headers(
        request: web.Request,
        response: web.StreamResponse,
        *,
        remaining: int,
        reset_after: float = 1.0,
    ) -> None:
        route = request.match_info.route.resource
        template = route.canonical if route is not None else request.path
        bucket = hashlib.md5(f"{request.method} {template}".encode()).hexdigest()[:16]
        response.headers.update(
            {
                "X-RateLimit-Limit": "5",
                "X-RateLimit-Remaining": str(remaining),
                "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
                "X-RateLimit-Reset-After": f"{reset_after:.3f}",
                "X-RateLimit-Bucket": bucket,
                "Via": "1.1 google",
            }
        )

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def _snowflake(self) -> int:
        now_ms = int(time.time() * 1000) - _DISCORD_EPOCH_MS
        return (now_ms << 22) | (next(self._ids) & 0x3FFFFF)

    # ------------------------------------------------------------------ REST handlers

    async def _get_me(self, request: web.Request) -> web.Response:
        return _json_response(self.users[BOT_ID])

    async def _get_application(self, request: web.Request) -> web.Response:
        return _json_response(
            {
                "id": str(APP_ID),
                "name": "Parley",
                "description": "",
                "icon": None,
                "bot_public": True,
                "bot_require_code_grant": False,
                "owner": self.users[OWNER_ID],
                "verify_key": "0" * 64,
                "flags": self.application_flags(),
            }
        )

    def application_flags(self) -> int:
        """The flags `GET /oauth2/applications/@me` reports: `flags` if a test set it, else the
        Message Content switch as Discord shows it for a bot in under 100 servers."""
        if self.flags is not None:
            return self.flags
        on = "message_content" in self.enabled_intents
        return GATEWAY_MESSAGE_CONTENT_LIMITED if on else 0

    async def _get_gateway(self, request: web.Request) -> web.Response:
        return _json_response({"url": self.gateway_url})

    async def _get_gateway_bot(self, request: web.Request) -> web.Response:
        limit = {"total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1}
        shards = max(1, math.ceil(len(self.guild_names) / self.max_guilds_per_shard))
        return _json_response(
            {"url": self.gateway_url, "shards": shards, "session_start_limit": limit}
        )

    async def _create_dm(self, request: web.Request) -> web.Response:
        user_id = int((_body(self._call(request))).get("recipient_id", 0))
        if user_id not in self.users:
            raise _Reject(400, 50007, "Cannot send messages to this user")
        return _json_response(self.channels[self.dm_channel_id(user_id)])

    def _channel(self, request: web.Request) -> dict:
        channel = self.channels.get(int(request.match_info["channel_id"]))
        if channel is None:
            raise _Reject(404, 10003, "Unknown Channel")
        return channel

    def _stored(self, request: web.Request) -> Message:
        message = self.messages.get(int(request.match_info["message_id"]))
        if message is None or str(message.channel_id) != request.match_info["channel_id"]:
            raise _Reject(404, 10008, "Unknown Message")
        return message

    async def _get_channel(self, request: web.Request) -> web.Response:
        return _json_response(self._channel(request))

    async def _create_message(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        channel_id = int(channel["id"])
        self._check_can_send(channel)
        if channel["type"] == 1 and int(channel["recipients"][0]["id"]) in self.closed_dms:
            raise _Reject(403, 50007, "Cannot send messages to this user")
        body = _body(self._call(request))
        files = self._call(request).files
        content = _checked_content(body, editing=False, files=len(files))
        reference = body.get("message_reference") or {}
        replied = None
        if reference.get("message_id") is not None:
            replied = self.messages.get(int(reference["message_id"]))
            if replied is None and reference.get("fail_if_not_exists", True):
                raise _invalid_form(
                    "message_reference", "MESSAGE_REFERENCE_UNKNOWN_MESSAGE", "Unknown message"
                )
        message = Message(
            id=self._snowflake(),
            channel_id=channel_id,
            guild_id=_channel_guild(channel),
            author_id=BOT_ID,
            content=content,
            reference_id=replied.id if replied else None,
            allowed_mentions=body.get("allowed_mentions"),
        )
        message.pings = self._pings(content, message.allowed_mentions, replied)
        self._attach_uploads(message, files)
        self.messages[message.id] = message
        payload = self._message_payload(message)
        await self._dispatch("MESSAGE_CREATE", payload)
        return _json_response(payload)

    async def _start_thread(self, request: web.Request) -> web.Response:
        """Start Thread from Message: a public thread whose id is the message's, announced to
        clients (THREAD_CREATE) before the answer, as Discord does."""
        channel = self._channel(request)
        message = self._stored(request)
        if channel["type"] not in (0, 5):  # threads in text and announcement channels only
            raise _Reject(400, 50024, "Cannot execute action on this channel type")
        denied = any(
            int(o["deny"]) & CREATE_PUBLIC_THREADS and int(o["id"]) in (GUILD_ID, BOT_ID)
            for o in channel.get("permission_overwrites", [])
        )
        if denied or not self._permissions(BOT_ID) & CREATE_PUBLIC_THREADS:
            raise _Reject(403, 50013, "Missing Permissions")
        if message.id in self.channels:
            raise _Reject(400, 160004, "A thread has already been created for this message")
        body = _body(self._call(request))
        name = body.get("name")
        if not isinstance(name, str) or len(name) not in THREAD_NAME_LENGTHS:
            raise _invalid_form(
                "name", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length."
            )
        duration = body.get("auto_archive_duration", 1440)
        if duration not in ARCHIVE_DURATIONS:
            raise _invalid_form(
                "auto_archive_duration",
                "BASE_TYPE_CHOICES",
                "Value must be one of (60, 1440, 4320, 10080).",
            )
        thread = _thread(
            message.id, int(channel["id"]), name, owner_id=BOT_ID, guild_id=_channel_guild(channel)
        )
        thread["thread_metadata"]["auto_archive_duration"] = duration
        thread["member"] = {
            "id": str(message.id),
            "user_id": str(BOT_ID),
            "flags": 1,
            "join_timestamp": dt.datetime.now(dt.UTC).isoformat(),
        }
        self.channels[message.id] = thread
        await self._dispatch("THREAD_CREATE", {**thread, "newly_created": True})
        return _json_response(thread)

    async def _get_message(self, request: web.Request) -> web.Response:
        return _json_response(self._message_payload(self._stored(request)))

    async def _edit_message(self, request: web.Request) -> web.Response:
        self._channel(request)
        message = self._stored(request)
        if message.author_id != BOT_ID:
            raise _Reject(403, 50005, "Cannot edit a message authored by another user")
        return _json_response(await self._apply_edit(message, _body(self._call(request))))

    async def _delete_message(self, request: web.Request) -> web.Response:
        self._channel(request)
        await self.delete_message(self._stored(request).id)
        return web.Response(status=204)

    async def _typing(self, request: web.Request) -> web.Response:
        self._check_can_send(self._channel(request))
        return web.Response(status=204)

    async def _get_commands(self, request: web.Request) -> web.Response:
        return _json_response(self.commands.get(_guild_of(request), []))

    async def _put_commands(self, request: web.Request) -> web.Response:
        if request.match_info["app_id"] != str(APP_ID):
            raise _Reject(
                403, 20012, "You are not authorized to perform this action on this application"
            )
        body = self._call(request).body
        if not isinstance(body, list):
            raise _invalid_form("_errors", "LIST_TYPE_CONVERT", "Must be an array.")
        guild_id = _guild_of(request)
        known = {c["name"]: c["id"] for cmds in self.commands.values() for c in cmds}
        stored = []
        for index, command in enumerate(body):
            name, description = command.get("name", ""), command.get("description", "")
            if not _COMMAND_NAME.match(name) or name != name.lower():
                raise _invalid_form(str(index), "APPLICATION_COMMAND_INVALID_NAME", "Invalid name")
            if not 1 <= len(description) <= 100:
                raise _invalid_form(str(index), "BASE_TYPE_BAD_LENGTH", "Must be 1-100 in length.")
            stored.append(
                {
                    "type": 1,
                    "options": [],
                    "default_member_permissions": None,
                    "nsfw": False,
                    **command,
                    "id": known.get(name, str(self._snowflake())),
                    "application_id": str(APP_ID),
                    "version": str(self._snowflake()),
                    **({"guild_id": str(guild_id)} if guild_id else {}),
                }
            )
        self.commands[guild_id] = stored
        return _json_response(stored)

    async def _callback(self, request: web.Request) -> web.Response:
        interaction = self.interactions.get(int(request.match_info["interaction_id"]))
        if interaction is None or interaction.token != request.match_info["token"]:
            raise _Reject(404, 10062, "Unknown interaction")
        if time.monotonic() - interaction.created_at > INTERACTION_DEADLINE:
            raise _Reject(404, 10062, "Unknown interaction")
        if interaction.callback is not None:
            raise _Reject(400, 40060, "Interaction has already been acknowledged.")
        body = _body(self._call(request))
        kind = body.get("type")
        if interaction.kind == 4:
            interaction.callback = body
            interaction.choices = _checked_choices(body)
            return web.Response(status=204)
        if kind not in (4, 5):
            raise _invalid_form(
                "type", "BASE_TYPE_CHOICES", f"Value must be one of (4, 5); got {kind}."
            )
        data = body.get("data") or {}
        interaction.callback = body
        content = _checked_content(data, editing=False) if kind == 4 else ""
        message = self._interaction_message(interaction, content, data.get("allowed_mentions"))
        interaction.response_message_id = message.id
        result: dict[str, Any] = {
            "interaction": {
                "id": str(interaction.id),
                "type": 2,
                "response_message_id": str(message.id),
                "response_message_loading": kind == 5,
                "response_message_ephemeral": bool(data.get("flags", 0) & 64),
            },
        }
        if request.query.get("with_response") in ("1", "true", "True"):
            result["resource"] = {"type": kind, "message": self._message_payload(message)}
            return _json_response(result)
        return web.Response(status=204)

    def _interaction_for(self, request: web.Request) -> Interaction:
        token = request.match_info["token"]
        for interaction in self.interactions.values():
            if interaction.token == token and request.match_info["app_id"] == str(APP_ID):
                return interaction
        raise _Reject(404, 10015, "Unknown Webhook")

    async def _followup(self, request: web.Request) -> web.Response:
        interaction = self._interaction_for(request)
        if interaction.callback is None:
            raise _Reject(404, 10015, "Unknown Webhook")
        body = _body(self._call(request))
        files = self._call(request).files
        message = self._interaction_message(
            interaction,
            _checked_content(body, editing=False, files=len(files)),
            body.get("allowed_mentions"),
        )
        self._attach_uploads(message, files)
        interaction.followups.append(message.id)
        return _json_response(self._message_payload(message))

    def _webhook_message(self, request: web.Request) -> Message:
        interaction = self._interaction_for(request)
        wanted = request.match_info["message_id"]
        message_id = interaction.response_message_id if wanted == "@original" else int(wanted)
        if message_id not in self.messages:
            raise _Reject(404, 10008, "Unknown Message")
        return self.messages[message_id]

    async def _get_webhook_msg(self, request: web.Request) -> web.Response:
        return _json_response(self._message_payload(self._webhook_message(request)))

    async def _edit_webhook_msg(self, request: web.Request) -> web.Response:
        message = self._webhook_message(request)
        return _json_response(await self._apply_edit(message, _body(self._call(request))))

    # ------------------------------------------------------------------ model helpers

    async def _apply_edit(self, message: Message, body: dict) -> dict:
        if "content" in body:
            content = _checked_content(body, editing=True)
            if not content and not message.attachments:
                raise _Reject(400, 50006, "Cannot send an empty message")
            message.content = content
            message.edits.append(content)
            message.edit_times.append(time.monotonic())
        if "allowed_mentions" in body:
            message.allowed_mentions = body["allowed_mentions"]
        replied = self.messages.get(message.reference_id) if message.reference_id else None
        message.pings = self._pings(message.content, message.allowed_mentions, replied)
        payload = self._message_payload(message)
        payload["edited_timestamp"] = dt.datetime.now(dt.UTC).isoformat()
        await self._dispatch("MESSAGE_UPDATE", payload)
        return payload

    def _interaction_message(
        self, interaction: Interaction, content: str, allowed_mentions: dict | None
    ) -> Message:
        channel = self.channels[interaction.channel_id]
        message = Message(
            id=self._snowflake(),
            channel_id=interaction.channel_id,
            guild_id=_channel_guild(channel),
            author_id=BOT_ID,
            content=content,
            allowed_mentions=allowed_mentions,
            interaction_id=interaction.id,
        )
        message.pings = self._pings(content, allowed_mentions, None)
        self.messages[message.id] = message
        return message

    def _check_can_send(self, channel: dict) -> None:
        denied = any(
            int(o["deny"]) & SEND_MESSAGES and int(o["id"]) in (GUILD_ID, BOT_ID, BOT_ROLE_ID)
            for o in channel.get("permission_overwrites", [])
        )
        if denied:
            raise _Reject(403, 50013, "Missing Permissions")

    def _permissions(self, user_id: int) -> int:
        value = 0
        for role in self.roles:
            if int(role["id"]) == GUILD_ID or int(role["id"]) in self.member_roles.get(user_id, []):
                value |= int(role["permissions"])
        return value

    def _pings(
        self,
        content: str,
        allowed: dict | None,
        replied: Message | None,
        *,
        may_ping_everyone: bool | None = None,
    ) -> Pings:
        """Who `content` notifies, applying `allowed_mentions` the way Discord documents it."""
        if may_ping_everyone is None:
            may_ping_everyone = bool(self._permissions(BOT_ID) & MENTION_EVERYONE)
        parse = (
            set(allowed.get("parse", [])) if allowed is not None else {"everyone", "users", "roles"}
        )
        listed_users = {int(u) for u in (allowed or {}).get("users", [])}
        listed_roles = {int(r) for r in (allowed or {}).get("roles", [])}
        users, roles = set(), set()
        for kind, ident in _MENTION.findall(content):
            target = roles if kind == "&" else users
            allowed_ids, allowed_kind = (
                (listed_roles, "roles") if kind == "&" else (listed_users, "users")
            )
            if allowed_kind in parse or int(ident) in allowed_ids:
                target.add(int(ident))
        if replied is not None and (allowed is None or allowed.get("replied_user", False)):
            users.add(replied.author_id)
        everyone = (
            may_ping_everyone
            and "everyone" in parse
            and ("@everyone" in content or "@here" in content)
        )
        return Pings(everyone=everyone, users=frozenset(users), roles=frozenset(roles))

    def _member(self, user_id: int) -> dict:
        return {
            "user": self.users[user_id],
            "nick": None,
            "roles": [str(r) for r in self.member_roles.get(user_id, [])],
            "joined_at": "2024-01-01T00:00:00+00:00",
            "deaf": False,
            "mute": False,
            "flags": 0,
        }

    def _partial_member(self, user_id: int) -> dict:
        """A member as nested in a message (Discord leaves the user out there)."""
        member = self._member(user_id)
        del member["user"]
        return member

    def _message_payload(self, message: Message, *, nested: bool = False) -> dict:
        """The message as Discord sends it; a reply carries the message it replies to
        (`referenced_message`), one level deep: that one's own is left out (`nested`)."""
        pings = message.pings
        payload: dict[str, Any] = {
            "id": str(message.id),
            "channel_id": str(message.channel_id),
            "author": self.users[message.author_id],
            "content": message.content,
            "timestamp": dt.datetime.now(dt.UTC).isoformat(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": pings.everyone,
            "mentions": [
                {**self.users[u], "member": self._partial_member(u)}
                if message.guild_id
                else self.users[u]
                for u in sorted(pings.users)
                if u in self.users
            ],
            "mention_roles": [str(r) for r in sorted(pings.roles)],
            "attachments": message.attachments,
            "embeds": [],
            "pinned": False,
            "type": 19 if message.reference_id else 0,
            "flags": message.flags,
            "components": [],
        }
        if message.sticker_items:
            payload["sticker_items"] = message.sticker_items
        if message.guild_id is not None:
            payload.update(
                guild_id=str(message.guild_id), member=self._partial_member(message.author_id)
            )
        if message.reference_id is not None:
            replied = self.messages.get(message.reference_id)
            payload["message_reference"] = _without_none(
                {
                    "type": 0,
                    "message_id": str(message.reference_id),
                    "channel_id": str(message.channel_id),
                    "guild_id": _s(message.guild_id),
                }
            )
            if not nested:
                payload["referenced_message"] = (
                    self._message_payload(replied, nested=True) if replied else None
                )
        return payload

    # ------------------------------------------------------------------ gateway

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        self.gateway_queries.append(dict(request.query))
        compress = request.query.get("compress")
        if compress not in (None, "zlib-stream"):
            raise web.HTTPBadRequest(text=f"the fake speaks zlib-stream only, not {compress}")
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        session = _Session(ws, zlib.compressobj() if compress else None)
        self._sessions.append(session)
        try:
            await self._send(
                session, {"op": 10, "d": {"heartbeat_interval": HEARTBEAT_INTERVAL_MS}}
            )
            async for frame in ws:
                if frame.type is not WSMsgType.TEXT:
                    continue
                await self._on_gateway_payload(session, json.loads(frame.data))
        finally:
            self._sessions.remove(session)
            await self._notify()
        return ws

    async def _on_gateway_payload(self, session: _Session, payload: dict) -> None:
        op, data = payload.get("op"), payload.get("d")
        if op == 1:
            await self._send(session, {"op": 11})
        elif op == 2:
            await self._identify(session, data)
        elif op == 6:
            await self._resume(session, data)

    async def _resume(self, session: _Session, data: dict) -> None:
        """Continue a closed session (same intents and sequence); unknown ones are invalid."""
        old = self._resumable.pop(data.get("session_id", ""), None)
        if old is None or data.get("token") != self.token:
            await self._send(session, {"op": 9, "d": False})
            return
        old.identified = False  # its socket may still be closing: it gets no more events
        session.intents, session.seq, session.session_id = old.intents, old.seq, old.session_id
        session.shard = old.shard
        self._resumable[session.session_id] = session
        await self._send_dispatch(session, "RESUMED", {})
        session.identified = True
        self.resumed += 1
        await self._notify()

    async def _identify(self, session: _Session, data: dict) -> None:
        self.identify_payloads.append(data)
        if data.get("token") != self.token:
            await self._close(session, 4004, "Authentication failed.")
            return
        session.intents = int(data.get("intents", 0))
        session.session_id = f"session-{next(self._ids)}"
        for name, bit in PRIVILEGED_INTENTS.items():
            if session.intents & bit and name not in self.enabled_intents:
                await self._close(session, 4014, "Disallowed intent(s).")
                return
        shard = data.get("shard")
        if shard is not None:
            if not _valid_shard(shard):
                await self._close(session, 4010, "Invalid shard.")
                return
            session.shard = (shard[0], shard[1])
        guilds = [guild for guild in self.guild_names if session.receives(guild)]
        if len(guilds) > self.max_guilds_per_shard:
            await self._close(session, 4011, "Sharding required.")
            return
        ready = {
            "v": 10,
            "user": self.users[BOT_ID],
            "guilds": [{"id": str(guild), "unavailable": True} for guild in guilds],
            "session_id": session.session_id,
            "resume_gateway_url": self.gateway_url,
            "application": {"id": str(APP_ID), "flags": 1 << 19},
            "private_channels": [],
            "relationships": [],
        }
        if session.shard is not None:
            ready["shard"] = list(session.shard)
        self._resumable[session.session_id] = session
        await self._send_dispatch(session, "READY", ready)
        for guild in guilds:
            await self._send_dispatch(session, "GUILD_CREATE", self._guild_payload(guild))
        session.identified = True
        await self._notify()

    async def _close(self, session: _Session, code: int, reason: str) -> None:
        self.gateway_closes.append(code)
        await session.ws.close(code=code, message=reason.encode())

    async def _dispatch(self, event: str, data: dict) -> None:
        """Send a gateway event to the sessions that get it: those of its guild's shard."""
        guild = int(data["guild_id"]) if data.get("guild_id") else None
        for session in list(self._sessions):
            if session.identified and session.receives(guild):
                await self._send_dispatch(session, event, self._as_seen_by(session, event, data))
        await self._notify()

    def _as_seen_by(self, session: _Session, event: str, data: dict) -> dict:
        """Without MESSAGE_CONTENT, guild messages that do not mention the bot arrive empty."""
        if session.intents & PRIVILEGED_INTENTS["message_content"] or event != "MESSAGE_CREATE":
            return data
        is_dm = "guild_id" not in data
        mentions_bot = any(int(u["id"]) == BOT_ID for u in data["mentions"])
        if is_dm or mentions_bot or int(data["author"]["id"]) == BOT_ID:
            return data
        return {**data, "content": "", "embeds": [], "attachments": [], "components": []}

    async def _send_dispatch(self, session: _Session, event: str, data: dict) -> None:
        session.seq += 1
        await self._send(session, {"op": 0, "t": event, "s": session.seq, "d": data})

    async def _send(self, session: _Session, payload: dict) -> None:
        text = json.dumps(payload)
        if session.ws.closed:
            return
        if session.compressor is None:
            await session.ws.send_str(text)
        else:
            data = session.compressor.compress(text.encode()) + session.compressor.flush(
                zlib.Z_SYNC_FLUSH
            )
            await session.ws.send_bytes(data)

    def _guild_payload(self, guild_id: int = GUILD_ID) -> dict:
        """GUILD_CREATE of one guild: its channels and threads; the first guild's roles and
        members, the second's @everyone alone and the bot and the two users without roles."""
        channels = [
            c for c in self.channels.values() if c["type"] == 0 and _channel_guild(c) == guild_id
        ]
        threads = [
            c for c in self.channels.values() if c["type"] == 11 and _channel_guild(c) == guild_id
        ]
        if guild_id == GUILD_ID:
            roles, members = self.roles, [self._member(u) for u in self.member_roles]
        else:
            roles = [_role(guild_id, "@everyone", EVERYONE_PERMISSIONS, position=0)]
            members = [{**self._member(u), "roles": []} for u in (BOT_ID, ALICE_ID, BOB_ID)]
        return {
            "id": str(guild_id),
            "name": self.guild_names[guild_id],
            "icon": None,
            "owner_id": str(OWNER_ID),
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "premium_tier": 0,
            "preferred_locale": "en-US",
            "features": [],
            "roles": roles,
            "emojis": [],
            "stickers": [],
            "channels": channels,
            "threads": threads,
            "members": members,
            "member_count": len(members),
            "voice_states": [],
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
            "large": False,
            "unavailable": False,
            "joined_at": "2024-01-01T00:00:00+00:00",
        }


# ---------------------------------------------------------------------- payload builders


def _json_response(data: Any, status: int = 200) -> web.Response:
    """JSON with Discord's exact `Content-Type` (discord.py only parses `application/json`)."""
    return web.Response(
        body=json.dumps(data).encode(), status=status, content_type="application/json"
    )


def _route_of(request: web.Request) -> tuple[str, str | None]:
    """The request's method and route template (`/channels/{channel_id}/messages`, ...)."""
    resource = request.match_info.route.resource
    return request.method, resource.canonical if resource is not None else None


def _written_channel(request: web.Request) -> int | None:
    """The channel a message create or edit goes to; None for every other request."""
    if _route_of(request) not in _MESSAGE_WRITES:
        return None
    return int(request.match_info["channel_id"])


def _read_upload(content_type: str, raw: bytes) -> tuple[dict, list[UploadedFile]]:
    """A multipart upload as discord.py sends one: the JSON in `payload_json`, the files in
    `files[0]`, `files[1]`, ... Over `MAX_UPLOAD_BYTES` of files: 413, as Discord answers."""
    parsed = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + raw
    )
    if not parsed.is_multipart():
        raise _Reject(400, 50109, "The request body contains invalid JSON.")
    payload: Any = None
    files = []
    for part in parsed.iter_parts():
        name = part.get_param("name", header="content-disposition")
        data = part.get_payload(decode=True) or b""
        if name == "payload_json":
            try:
                payload = json.loads(data)
            except ValueError:
                raise _Reject(400, 50109, "The request body contains invalid JSON.") from None
        elif isinstance(name, str) and re.fullmatch(r"files\[\d+\]", name):
            filename = part.get_filename()
            if not filename:
                raise _invalid_form(name, "BASE_TYPE_REQUIRED", "This field is required")
            files.append(UploadedFile(filename, part.get_content_type(), data))
    if sum(len(f.data) for f in files) > MAX_UPLOAD_BYTES:
        raise _Reject(413, 40005, "Request entity too large")
    if not isinstance(payload, dict):
        raise _invalid_form("payload_json", "DICT_TYPE_CONVERT", "Only dictionaries may be used.")
    return payload, files


def _s(value: int | None) -> str | None:
    return None if value is None else str(value)


def _without_none(data: dict) -> dict:
    return {k: v for k, v in data.items() if v is not None}


def _body(call: Call) -> dict:
    """The request's JSON object (the middleware already checked its type and syntax; of an
    upload, its `payload_json`), or {} when there was none."""
    if call.body is None:
        return {}
    if not isinstance(call.body, dict):
        raise _invalid_form("_errors", "DICT_TYPE_CONVERT", "Only dictionaries may be used.")
    return call.body


def _guild_of(request: web.Request) -> int | None:
    guild = request.match_info.get("guild_id")
    return int(guild) if guild else None


#: An autocomplete answer: at most 25 choices, each named 1 to 100 characters, a string value
#: at most 100.
MAX_CHOICES = 25
MAX_CHOICE_CHARS = 100


def _checked_choices(body: dict) -> list[dict]:
    """Discord's checks on the answer to an autocomplete request (callback type 8)."""
    if body.get("type") != 8:
        raise _invalid_form("type", "BASE_TYPE_CHOICES", "Value must be 8 for autocomplete.")
    choices = (body.get("data") or {}).get("choices")
    if not isinstance(choices, list):
        raise _invalid_form("data.choices", "BASE_TYPE_REQUIRED", "This field is required")
    if len(choices) > MAX_CHOICES:
        raise _invalid_form(
            "data.choices", "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_CHOICES} or fewer in length."
        )
    for index, choice in enumerate(choices):
        for key in ("name", "value"):
            value = choice.get(key)
            if not isinstance(value, str) or not 1 <= len(value) <= MAX_CHOICE_CHARS:
                raise _invalid_form(
                    f"data.choices.{index}.{key}",
                    "BASE_TYPE_BAD_LENGTH",
                    f"Must be between 1 and {MAX_CHOICE_CHARS} in length.",
                )
    return choices


def _checked_content(body: dict, *, editing: bool, files: int = 0) -> str:
    """Discord's checks on `content`: a string of at most 2,000 characters, not empty unless
    the message has something else (embeds, a sticker, `files` uploaded with it)."""
    content = body.get("content") or ""
    if not isinstance(content, str):
        raise _invalid_form("content", "STRING_TYPE_CONVERT", "Could not interpret as string.")
    if len(content) > MAX_CONTENT:
        raise _invalid_form(
            "content", "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_CONTENT} or fewer in length."
        )
    has_other = body.get("embeds") or body.get("sticker_ids") or files
    if not editing and not content.strip() and not has_other:
        raise _Reject(400, 50006, "Cannot send an empty message")
    return content


def _user(user_id: int, name: str, *, bot: bool = False, global_name: str | None = None) -> dict:
    user = {
        "id": str(user_id),
        "username": name,
        "discriminator": "0",
        "global_name": global_name,
        "avatar": None,
        "public_flags": 0,
    }
    if bot:
        user["bot"] = True
    return user


def _role(role_id: int, name: str, permissions: int, *, position: int, bot_id: int = 0) -> dict:
    """A role; `bot_id` makes it the managed role Discord creates for a bot it adds."""
    role = {
        "id": str(role_id),
        "name": name,
        "color": 0,
        "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
        "hoist": False,
        "icon": None,
        "unicode_emoji": None,
        "position": position,
        "permissions": str(permissions),
        "managed": bool(bot_id),
        "mentionable": True,
        "flags": 0,
    }
    if bot_id:
        role["tags"] = {"bot_id": str(bot_id)}
    return role


def _channel_guild(channel: dict) -> int | None:
    """The guild a channel belongs to; None for a DM."""
    return int(channel["guild_id"]) if channel.get("guild_id") else None


def _valid_shard(shard: object) -> bool:
    """IDENTIFY's `shard` as Discord takes it: [id, count] with 0 <= id < count."""
    if not isinstance(shard, list) or len(shard) != 2:
        return False
    shard_id, count = shard
    ints = all(isinstance(n, int) and not isinstance(n, bool) for n in shard)
    return ints and 0 <= shard_id < count


def _text_channel(
    channel_id: int,
    name: str,
    position: int,
    *,
    overwrites: list | None = None,
    guild_id: int = GUILD_ID,
) -> dict:
    return {
        "id": str(channel_id),
        "type": 0,
        "guild_id": str(guild_id),
        "name": name,
        "position": position,
        "permission_overwrites": overwrites or [],
        "parent_id": None,
        "topic": None,
        "nsfw": False,
        "last_message_id": None,
        "rate_limit_per_user": 0,
    }


def _thread(
    thread_id: int,
    parent_id: int,
    name: str,
    owner_id: int = ALICE_ID,
    *,
    guild_id: int = GUILD_ID,
) -> dict:
    return {
        "id": str(thread_id),
        "type": 11,
        "guild_id": str(guild_id),
        "parent_id": str(parent_id),
        "owner_id": str(owner_id),
        "name": name,
        "last_message_id": None,
        "rate_limit_per_user": 0,
        "message_count": 0,
        "member_count": 2,
        "flags": 0,
        "thread_metadata": {
            "archived": False,
            "auto_archive_duration": 1440,
            "archive_timestamp": "2024-01-01T00:00:00+00:00",
            "locked": False,
        },
    }
