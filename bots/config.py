"""The app's settings: the core's, plus what only the bots and the CLI use.

`Settings` extends `CoreSettings` by inheritance rather than holding it in a field, so every
variable keeps its flat name (`OPENAI_API_KEY`, `TELEGRAM_BOT_TOKEN`, `DATABASE_URL`): an
operator's `.env` reads the same as before, with no `CORE__` prefix. One `Settings` object is
read at start-up (`parley` does it in `main()`) and passed down; since it *is* a
`CoreSettings`, the core's registry, client and conversation service take it as it is.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, get_args
from urllib.parse import urlsplit

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import NoDecode, SettingsConfigDict

from bots.proxy import ProxyURL
from core.config import CoreSettings

IdList = Annotated[list[int], NoDecode]
#: DISCORD_SHARD_IDS as written: `0,1`, `0-3` or both (`0-3, 6`), parsed by `_shard_ids`.
ShardIds = Annotated[list[int] | None, NoDecode]
#: A URL in the environment, parsed by `ProxyURL` itself (not as JSON, which NoDecode stops).
ProxySetting = Annotated[ProxyURL | None, NoDecode]
_PORT = re.compile(r"[0-9]{1,5}")
#: What Telegram accepts as a webhook's secret token (setWebhook's `secret_token`).
_WEBHOOK_SECRET = re.compile(r"[A-Za-z0-9_-]{1,256}")
#: The Bot API Telegram runs; any other TELEGRAM_API_BASE is a self-hosted server.
CLOUD_BOT_API_HOST = "api.telegram.org"
#: The only ports the cloud Bot API delivers webhooks to (a self-hosted server takes any).
CLOUD_WEBHOOK_PORTS = (443, 80, 88, 8443)

#: The names `LOG_LEVEL` accepts, in any case: the standard library's levels.
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
#: A bad value is quoted up to this many characters in the message that names it.
SHOWN_VALUE_CHARS = 40


class Settings(CoreSettings):
    """Bot tokens, platform addresses, access lists, storage and logging on top of the core's."""

    # A wrong value is reported without the value itself: it may be a secret (a proxy URL
    # holding its password), and `parley` prints the error before any redaction is set up.
    model_config = SettingsConfigDict(hide_input_in_errors=True)

    # Telegram
    telegram_bot_token: SecretStr | None = None
    telegram_api_base: str = "https://api.telegram.org"
    telegram_allowed_ids: IdList = Field(default_factory=list)
    # Webhook mode (`bots.telegram.webhook`): the public URL Telegram posts updates to, through
    # a reverse proxy terminating TLS; unset or empty: long polling. The secret Telegram sends
    # with each update (required with the URL, the same on every replica), and where this
    # process listens for the proxy.
    telegram_webhook_url: str | None = None
    telegram_webhook_secret: SecretStr | None = None
    webhook_listen: str = "0.0.0.0:8080"

    # Discord
    discord_bot_token: SecretStr | None = None
    discord_api_base: str = "https://discord.com/api/v10"
    discord_gateway_url: str = "wss://gateway.discord.gg"
    discord_allowed_ids: IdList = Field(default_factory=list)
    # A mention in a server channel opens a thread for the answer, and the thread is the
    # conversation: in it the bot answers every message, no mention needed
    # (`bots.discord.threads`).
    discord_auto_thread: bool = False
    # Sharding (`bots.discord.shards`): the shards of the whole bot, and those this process
    # runs (unset with a count: all of them). Unset count: one connection, no shards.
    discord_shard_count: int | None = Field(default=None, ge=1)
    discord_shard_ids: ShardIds = None

    # Proxies: the bots' own connections (Bot API, REST, gateway) go through these,
    # http:// or socks5:// (see `bots.proxy`). The providers follow HTTPS_PROXY, ALL_PROXY and
    # NO_PROXY instead, like most HTTP tools.
    telegram_proxy: ProxySetting = None
    discord_proxy: ProxySetting = None

    # Who may change settings in groups, on every platform; exempt from budgets and limits.
    admin_ids: IdList = Field(default_factory=list)
    # With a non-empty *_ALLOWED_IDS, let everyone else in too, as guests: they share
    # GUEST_DAILY_TOKENS (`bots.access`).
    allow_guests: bool = False

    # Storage.
    database_url: str = "sqlite:///data/parley.db"

    # One of LOG_LEVELS; checked here so a typo stops `parley` with one line, not a traceback
    # from the logging module.
    log_level: str = "INFO"

    # Health and metrics.
    # host:port of the HTTP endpoint serving /healthz and Prometheus /metrics; unset: none.
    # `[::1]:9108` for IPv6; port 0 takes a free port (the log names it).
    metrics_addr: str | None = None
    # `json`: one JSON object per log line on stderr (secrets redacted as in text).
    log_format: Literal["text", "json"] = "text"

    @field_validator("discord_shard_ids", mode="before")
    @classmethod
    def _shard_ranges(cls, value: object, info: ValidationInfo) -> object:
        """Accept `0,1` and `0-3` (inclusive) in the environment, as operators write shards."""
        if not isinstance(value, str):
            return value
        return parse_shard_ids(value, info.data.get("discord_shard_count"))

    @field_validator("discord_shard_ids")
    @classmethod
    def _shards_in_count(cls, value: list[int] | None, info: ValidationInfo) -> list[int] | None:
        """Refuse at start-up what Discord would refuse with close 4010 for each bad shard."""
        if value is None:
            return None
        if "discord_shard_count" not in info.data:
            raise ValueError("cannot be checked: DISCORD_SHARD_COUNT is not valid")
        check_shard_ids(value, info.data["discord_shard_count"])
        return value

    @field_validator("metrics_addr")
    @classmethod
    def _check_metrics_addr(cls, value: str | None) -> str | None:
        """Refuse a malformed address at start-up, not when the endpoint is opened."""
        if value is None:
            return None
        return _joined(*split_host_port(value, "METRICS_ADDR"))

    @field_validator("webhook_listen")
    @classmethod
    def _check_webhook_listen(cls, value: str) -> str:
        """Refuse a malformed address at start-up, not when the webhook server is opened."""
        return _joined(*split_host_port(value, "WEBHOOK_LISTEN"))

    @field_validator("telegram_webhook_url", "telegram_webhook_secret", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        """`TELEGRAM_WEBHOOK_URL=` in .env means polling, as if the line were not there."""
        if isinstance(value, str) and not value.strip():
            return None
        return value.strip() if isinstance(value, str) else value

    @field_validator("telegram_webhook_secret")
    @classmethod
    def _check_webhook_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not _WEBHOOK_SECRET.fullmatch(value.get_secret_value()):
            raise ValueError("must be 1 to 256 characters of A-Z, a-z, 0-9, _ and -")
        return value

    @model_validator(mode="after")
    def _check_webhook(self) -> Settings:
        """The webhook's rules, as the Bot API would refuse them at setWebhook, but at start-up.

        The secret is required rather than generated: replicas behind one proxy must share it,
        and each replica's setWebhook with a secret of its own would lock the others out (every
        update they receive would carry the last replica's secret, refused with 403).
        """
        url = self.telegram_webhook_url
        if url is None:
            return self
        cloud = host_of_url(self.telegram_api_base) == CLOUD_BOT_API_HOST
        problem = webhook_url_problem(url, cloud=cloud)
        if problem is not None:
            raise ValueError(f"TELEGRAM_WEBHOOK_URL {problem}")
        if self.telegram_webhook_secret is None:
            raise ValueError(
                "TELEGRAM_WEBHOOK_SECRET must be set with TELEGRAM_WEBHOOK_URL: 1 to 256 "
                "characters of A-Z, a-z, 0-9, _ and -, the same on every replica (e.g. the "
                "output of `openssl rand -hex 32`)"
            )
        return self

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower_log_format(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @property
    def metrics_address(self) -> tuple[str, int] | None:
        """METRICS_ADDR as (host, port), or None when it is not set."""
        return (
            None
            if self.metrics_addr is None
            else split_host_port(self.metrics_addr, "METRICS_ADDR")
        )

    @property
    def webhook_address(self) -> tuple[str, int]:
        """WEBHOOK_LISTEN as (host, port)."""
        return split_host_port(self.webhook_listen, "WEBHOOK_LISTEN")

    @property
    def webhook_path(self) -> str:
        """The path of TELEGRAM_WEBHOOK_URL, which the server answers on: the reverse proxy
        passes it through unchanged, so one URL names both ends."""
        return urlsplit(self.telegram_webhook_url or "").path or "/"

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.strip().upper()
        if level not in LOG_LEVELS:
            raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
        return level

    # Graceful stop: on SIGTERM or Ctrl-C the bots take no new message, and the replies
    # in flight get this many seconds to finish; those still running then end with the shutdown
    # note, saved as 'interrupted'. 0 cuts them short at once.
    shutdown_grace_seconds: float = Field(default=10.0, ge=0)

    # How Telegram replies stream in private chats: "draft" shows the text so far as a native
    # draft (sendMessageDraft), then sends the reply once; "edit" sends a message early and
    # edits it, about once a second. Groups always edit (`bots.telegram.drafts`).
    stream_mode: Literal["draft", "edit"] = "draft"

    # Replies through a platform outage.
    # Seconds the platform may keep failing a reply's sends and edits before its delivery gives
    # up; until then its text is retried with capped backoff (1 s doubling to 30 s).
    delivery_timeout_seconds: float = Field(default=600.0, gt=0)

    # A thinking model's reasoning (`bots.reasoning_view`): shown while it thinks as a
    # collapsed block above the answer; in the finished reply `full`, as a one-line summary
    # (`collapsed`), or not at all (`off`, which also hides it while streaming).
    show_reasoning: Literal["full", "collapsed", "off"] = "collapsed"

    @field_validator("telegram_allowed_ids", "discord_allowed_ids", "admin_ids", mode="before")
    @classmethod
    def _split_ids(cls, value: object) -> object:
        """Accept `1, 2, 3` in the environment: operators write lists that way, not as JSON."""
        if isinstance(value, str):
            return [part.strip() for part in value.replace(";", ",").split(",") if part.strip()]
        if isinstance(value, int):
            return [value]
        return value


def parse_shard_ids(text: str, count: int | None = None) -> list[int] | None:
    """`0,1`, `0-3`, `0-3, 6` as the list of ids, in the order written; None for a blank value
    (unset). ValueError naming the part it cannot read, or (given the `count`) a range that
    ends outside it, before its ids are listed: a typo such as `0-99999999999` would fill the
    memory."""
    ids: list[int] = []
    for part in (p.strip() for p in text.replace(";", ",").split(",")):
        if not part:
            continue
        first, dash, last = part.partition("-")
        if not first.strip().isdigit() or (dash and not last.strip().isdigit()):
            raise ValueError(f"{part!r} is not a shard id or a range like 0-3")
        low, high = int(first), int(last) if dash else int(first)
        if high < low:
            raise ValueError(f"the range {part!r} runs backwards")
        if count is not None:
            check_shard_ids([high], count)
        ids.extend(range(low, high + 1))
    return ids or None


def check_shard_ids(ids: list[int], count: int | None) -> None:
    """ValueError unless every id is within 0..count-1, once: a shard run twice would answer
    its guilds twice (Discord lets both sessions in), one run nowhere would leave them mute."""
    if count is None:
        raise ValueError("needs DISCORD_SHARD_COUNT, the bot's total number of shards")
    for shard in ids:
        if not 0 <= shard < count:
            raise ValueError(
                f"shard id {shard} is outside DISCORD_SHARD_COUNT={count} (0-{count - 1})"
            )
    repeated = sorted({shard for shard in ids if ids.count(shard) > 1})
    if repeated:
        raise ValueError(f"shard id {repeated[0]} is listed twice")


def split_host_port(value: str, setting: str) -> tuple[str, int]:
    """`host:port` (an IPv6 host in brackets) as (host, port); ValueError naming `setting` and
    the form."""
    host, colon, port = value.strip().rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        host = ""  # an IPv6 address needs its brackets, or the port is ambiguous
    if not colon or not host or any(c.isspace() for c in host) or not _PORT.fullmatch(port):
        raise ValueError(
            f"{setting} must be host:port, e.g. 127.0.0.1:9108 or [::1]:9108, not {value!r}"
        )
    if int(port) > 65535:
        raise ValueError(f"{setting}'s port must be 0 to 65535, not {port}")
    return host, int(port)


def _joined(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def host_of_url(url: str) -> str:
    """The host name of `url`, lower case; empty when it has none."""
    return (urlsplit(url).hostname or "").lower()


def webhook_url_problem(url: str, *, cloud: bool) -> str | None:
    """What the Bot API would refuse in a webhook URL, in a few words; None when it is fine.

    Telegram's cloud API posts only to HTTPS, on ports 443, 80, 88 or 8443; a self-hosted Bot
    API server (`--local`) also takes plain HTTP and any port, so only the form is checked then.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return f"is not a URL: {url!r}"
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return f"must be an absolute https:// URL, not {url!r}"
    if parts.fragment:
        return "must not have a #fragment"
    if cloud and parts.scheme != "https":
        return "must be https://: Telegram posts updates only over TLS"
    if cloud and (port or 443) not in CLOUD_WEBHOOK_PORTS:
        return f"must use port 443, 80, 88 or 8443: Telegram posts to no other, not {port}"
    return None


def setting_problems(exc: ValidationError) -> list[tuple[str, str]]:
    """(field name, one line) per bad setting, named and quoted as the operator wrote it:
    `LOG_LEVEL='LOUD': must be one of DEBUG, ...`. A secret's value is never quoted."""
    problems: list[tuple[str, str]] = []
    for error in exc.errors():
        name = str(error["loc"][0]) if error["loc"] else ""
        message = error["msg"].removeprefix("Value error, ")
        if not name:
            problems.append((name, message))
            continue
        field = Settings.model_fields.get(name)
        # A proxy URL may carry a password, and one that failed to parse cannot be redacted.
        kinds = (field.annotation, *get_args(field.annotation)) if field is not None else ()
        secret = SecretStr in kinds or ProxyURL in kinds
        value = "***" if secret else repr(str(error["input"])[:SHOWN_VALUE_CHARS])
        problems.append((name, f"{name.upper()}={value}: {message}"))
    return problems
