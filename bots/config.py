"""The app's settings: the core's, plus what only the bots and the CLI use.

`Settings` extends `CoreSettings` by inheritance rather than holding it in a field, so every
variable keeps its flat name (`OPENAI_API_KEY`, `TELEGRAM_BOT_TOKEN`, `DATABASE_URL`): an
operator's `.env` reads the same as before, with no `CORE__` prefix. One `Settings` object is
read at start-up (`parley` does it in `main()`) and passed down; since it *is* a
`CoreSettings`, the core's registry, client and conversation service take it as it is.
"""

from __future__ import annotations

from typing import Annotated, get_args

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import NoDecode

from core.config import CoreSettings

IdList = Annotated[list[int], NoDecode]

#: The names `LOG_LEVEL` accepts, in any case: the standard library's levels.
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
#: A bad value is quoted up to this many characters in the message that names it.
SHOWN_VALUE_CHARS = 40


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

    # One of LOG_LEVELS; checked here so a typo stops `parley` with one line, not a traceback
    # from the logging module.
    log_level: str = "INFO"

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.strip().upper()
        if level not in LOG_LEVELS:
            raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
        return level

    @field_validator("telegram_allowed_ids", "discord_allowed_ids", "admin_ids", mode="before")
    @classmethod
    def _split_ids(cls, value: object) -> object:
        """Accept `1, 2, 3` in the environment: operators write lists that way, not as JSON."""
        if isinstance(value, str):
            return [part.strip() for part in value.replace(";", ",").split(",") if part.strip()]
        if isinstance(value, int):
            return [value]
        return value


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
        secret = field is not None and SecretStr in (field.annotation, *get_args(field.annotation))
        value = "***" if secret else repr(str(error["input"])[:SHOWN_VALUE_CHARS])
        problems.append((name, f"{name.upper()}={value}: {message}"))
    return problems
