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
from pydantic_settings import NoDecode

from core.config import CoreSettings

IdList = Annotated[list[int], NoDecode]


class Settings(CoreSettings):
    """Bot tokens, platform addresses, access lists, storage and logging on top of the core's."""

    # Telegram
    telegram_bot_token: SecretStr | None = None
    telegram_api_base: str = "https://api.telegram.org"
    telegram_allowed_ids: IdList = Field(default_factory=list)

    # Discord
    discord_bot_token: SecretStr | None = None
    discord_api_base: str = "https://discord.com/api/v10"
    discord_gateway_url: str = "wss://gateway.discord.gg"
    discord_allowed_ids: IdList = Field(default_factory=list)

    # Who may change settings in groups, on every platform.
    admin_ids: IdList = Field(default_factory=list)

    # Storage.
    database_url: str = "sqlite:///data/parley.db"

    log_level: str = "INFO"

    # Issue 9, replies that outlive an outage or a restart.
    # Seconds the platform may keep failing a reply's sends and edits before its delivery gives
    # up; until then its text is retried with capped backoff (1 s doubling to 30 s).
    delivery_timeout_seconds: float = Field(default=600.0, gt=0)

    @field_validator("telegram_allowed_ids", "discord_allowed_ids", "admin_ids", mode="before")
    @classmethod
    def _split_ids(cls, value: object) -> object:
        """Accept `1, 2, 3` in the environment: operators write lists that way, not as JSON."""
        if isinstance(value, str):
            return [part.strip() for part in value.replace(";", ",").split(",") if part.strip()]
        if isinstance(value, int):
            return [value]
        return value
