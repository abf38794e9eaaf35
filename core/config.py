"""Parley's settings: one object read from the environment and `.env` at start-up.

Nothing else in the project reads `os.environ`; code that needs a setting takes a
`Settings` (or calls `get_settings()` when it is the g4f-style entry point and has none).
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from dotenv import dotenv_values
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

IdList = Annotated[list[int], NoDecode]


class Settings(BaseSettings):
    """Every knob an operator can set, with the defaults a fresh install runs on."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", env_ignore_empty=True)

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

    # The default provider: any OpenAI-compatible endpoint.
    openai_api_key: SecretStr | None = None
    openai_base_url: str = "https://api.openai.com/v1"
    default_model: str = "gpt-4o-mini"
    system_prompt: str = "You are a helpful assistant in a group chat. Answer concisely."

    # Keys for the other documented APIs; a preset without its key is listed as not working.
    anthropic_api_key: SecretStr | None = None
    openrouter_api_key: SecretStr | None = None
    groq_api_key: SecretStr | None = None
    together_api_key: SecretStr | None = None
    deepseek_api_key: SecretStr | None = None
    mistral_api_key: SecretStr | None = None
    gemini_api_key: SecretStr | None = None
    # Local servers are enabled by giving their address.
    ollama_base_url: str | None = None
    lmstudio_base_url: str | None = None
    llamacpp_base_url: str | None = None
    vllm_base_url: str | None = None

    # Extra providers, model routing and fallback order (TOML); keys stay in the environment.
    providers_file: Path | None = None

    # Network behaviour of the providers.
    connect_timeout: float = Field(10.0, gt=0)
    read_timeout: float = Field(60.0, gt=0)
    max_retries: int = Field(2, ge=0)

    # Storage and context.
    database_url: str = "sqlite:///data/parley.db"
    context_max_messages: int = Field(40, gt=0)
    context_max_chars: int = Field(24_000, gt=0)

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


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once on first use."""
    return Settings()


def env_secret(name: str, env_file: str | Path | None = ".env") -> str | None:
    """The value of an operator-named variable (a providers file's `api_key_env`).

    Read from the environment first, then `.env`, as the settings are; kept here so that this
    module stays the only one that reads the environment.
    """
    value = os.environ.get(name)
    if value is None and env_file is not None and Path(env_file).is_file():
        value = dotenv_values(env_file).get(name)
    return value or None
