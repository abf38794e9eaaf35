"""The app's settings: the core's, plus what only the bots and the CLI use.

`Settings` extends `CoreSettings` by inheritance rather than holding it in a field, so every
variable keeps its flat name (`OPENAI_API_KEY`, `TELEGRAM_BOT_TOKEN`, `DATABASE_URL`): an
operator's `.env` reads the same as before, with no `CORE__` prefix. One `Settings` object is
read at start-up (`parley` does it in `main()`) and passed down; since it *is* a
`CoreSettings`, the core's registry, client and conversation service take it as it is.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from bots.proxy import ProxyURL
from core.config import CoreSettings

IdList = Annotated[list[int], NoDecode]
#: A URL in the environment, parsed by `ProxyURL` itself (not as JSON, which NoDecode stops).
ProxySetting = Annotated[ProxyURL | None, NoDecode]


class Settings(CoreSettings):
    """Bot tokens, platform addresses, access lists, storage and logging on top of the core's."""

    # A wrong value is reported without the value itself: it may be a secret (a proxy URL
    # holding its password), and `parley` prints the error before any redaction is set up.
    model_config = SettingsConfigDict(hide_input_in_errors=True)

    # Telegram
    telegram_bot_token: SecretStr | None = None
    telegram_api_base: str = "https://api.telegram.org"
    telegram_allowed_ids: IdList = Field(default_factory=list)

    # Discord
    discord_bot_token: SecretStr | None = None
    discord_api_base: str = "https://discord.com/api/v10"
    discord_gateway_url: str = "wss://gateway.discord.gg"
    discord_allowed_ids: IdList = Field(default_factory=list)

    # Issue 9, proxies: the bots' own connections (Bot API, REST, gateway) go through these,
    # http:// or socks5:// (see `bots.proxy`). The providers follow HTTPS_PROXY, ALL_PROXY and
    # NO_PROXY instead, like most HTTP tools.
    telegram_proxy: ProxySetting = None
    discord_proxy: ProxySetting = None

    # Who may change settings in groups, on every platform.
    admin_ids: IdList = Field(default_factory=list)

    # Storage.
    database_url: str = "sqlite:///data/parley.db"

    log_level: str = "INFO"

    @field_validator("telegram_allowed_ids", "discord_allowed_ids", "admin_ids", mode="before")
    @classmethod
    def _split_ids(cls, value: object) -> object:
        """Accept `1, 2, 3` in the environment: operators write lists that way, not as JSON."""
        if isinstance(value, str):
            return [part.strip() for part in value.replace(";", ",").split(",") if part.strip()]
        if isinstance(value, int):
            return [value]
        return value
