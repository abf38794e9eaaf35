"""The completion core's settings, read from the environment and `.env`, and its defaults.

`CoreSettings` holds what the core needs: provider keys and addresses, the providers file,
network behaviour, the default model and the conversation service's prompt and context
budget. The app's settings (`bots.config.Settings`) extend it with bot tokens, access lists
and the database; the core never sees those. Code that needs a setting takes a settings
object; `get_settings()` is only for the g4f-style entry points (`AsyncClient()` without a
registry, `Provider`, `get_providers()`, `models.default`), which are handed none. Nothing
else in the project reads `os.environ`, except httpx itself: the shared HTTP pool lets it read
the standard proxy and certificate variables (`HTTPS_PROXY`, `NO_PROXY`, `SSL_CERT_FILE`, ...).

The operator-facing network defaults are stated here once, as httpx keeps its own in
`_config.py`: the settings' defaults and a provider built without settings (`HTTPProvider`)
both read them. The pool's own limits, which no setting changes, stay with the pool in
`core.providers.http`.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from dotenv import dotenv_values
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Seconds to open a connection to a provider.
DEFAULT_CONNECT_TIMEOUT = 10.0
#: Seconds without a byte before a provider's answer is given up; per read, so it also ends
#: a stream that stalls halfway.
DEFAULT_READ_TIMEOUT = 60.0
#: Retries of a 429 or 5xx answer that came before the first byte of a body.
DEFAULT_MAX_RETRIES = 2
#: Above this a budget or a rate is not a limit but a typo (10^12 tokens, or dollars): refused.
MAX_LIMIT = 10**12
#: Above this a rate or a count of concurrent calls is a typo: refused.
MAX_RATE = 100_000

#: Bytes of one incoming image: Telegram's download limit for bots, so any photo a bot can
#: fetch from Telegram is accepted; above it, even the download is refused.
DEFAULT_IMAGE_MAX_BYTES = 20 * 1024 * 1024


class CoreSettings(BaseSettings):
    """Every knob of the completion core, with the defaults a fresh install runs on."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", env_ignore_empty=True)

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
    # Personas a chat picks with /persona (TOML, `core.personas`); unset, there are none.
    personas_file: Path | None = None

    # Network behaviour of the providers.
    connect_timeout: float = Field(DEFAULT_CONNECT_TIMEOUT, gt=0)
    read_timeout: float = Field(DEFAULT_READ_TIMEOUT, gt=0)
    max_retries: int = Field(DEFAULT_MAX_RETRIES, ge=0)

    # How much history the conversation service sends with each message.
    context_max_messages: int = Field(40, gt=0)
    context_max_chars: int = Field(24_000, gt=0)
    # Older turns that no longer fit the model's window are summarised by this model (once,
    # the summary kept and sent after the system prompt); unset, they are just left out.
    summary_model: str | None = None
    # Images: at most this many per message go to the model (the rest are left out, saying so),
    # each at most this many bytes as it arrives; only the newest turns' images are sent again
    # (older ones become "[image]"), the one being answered always among them. An image costs
    # about 800 tokens at 2,048 px: 4 images x 3 turns stay near 10k.
    images_per_message: int = Field(4, ge=1)
    image_max_bytes: int = Field(DEFAULT_IMAGE_MAX_BYTES, gt=0)
    context_image_turns: int = Field(3, ge=1)

    # Voice notes and text files (`core.audio`, `core.text_files`). Transcription is off until
    # TRANSCRIBE_BASE_URL is set: OPENAI_BASE_URL is often a server with no
    # /audio/transcriptions (Ollama, OpenRouter), and transcribing costs money, so voice notes
    # are something the operator turns on. The key falls back to OPENAI_API_KEY only when
    # both URLs name the same server (`core.audio.transcribe.transcription_key`).
    transcribe_base_url: str | None = None
    transcribe_model: str = "whisper-1"
    transcribe_api_key: SecretStr | None = None
    #: Seconds to wait for a transcript: the server answers only once it has heard it all.
    transcribe_timeout: float = Field(120.0, gt=0)
    #: Longest voice note or audio file transcribed, in seconds.
    voice_max_seconds: float = Field(600.0, gt=0)
    #: Largest one, in bytes: Telegram lets a bot download 20 MB, OpenAI takes 25 MB.
    voice_max_bytes: int = Field(20 * 1024 * 1024, gt=0)
    #: Largest text file downloaded at all, in bytes.
    text_file_max_bytes: int = Field(1024 * 1024, gt=0)
    #: Characters of a text file put into the prompt; the rest is cut with a marker. Below
    #: CONTEXT_MAX_CHARS, so the question and some history still fit beside the file.
    text_file_max_chars: int = Field(16_000, gt=0)

    # Images out (`/image`, `core.drawing`): off until IMAGE_MODEL names a model that an
    # OpenAI-compatible provider serves at /images/generations. Drawing costs far more than a
    # chat turn, so, as for voice, the operator turns it on.
    image_model: str | None = None
    #: The size asked for; "1024x1024" is the one every image model takes.
    image_size: str = "1024x1024"

    # Budgets (`core.budgets`): unset, no limit. Tokens count prompt and completion; costs are
    # dollars (`0.50`), priced by `core.pricing`. Days and months are UTC. A user's budgets
    # apply in every chat; a chat's to everyone in it; guests (let in without being listed in
    # *_ALLOWED_IDS) also share GUEST_DAILY_TOKENS, one pool for the whole bot. ADMIN_IDS are
    # exempt. Admins override them per chat or user with /budget.
    user_daily_tokens: int | None = Field(None, gt=0, le=MAX_LIMIT)
    user_monthly_tokens: int | None = Field(None, gt=0, le=MAX_LIMIT)
    user_daily_cost: float | None = Field(None, gt=0, le=MAX_LIMIT, allow_inf_nan=False)
    user_monthly_cost: float | None = Field(None, gt=0, le=MAX_LIMIT, allow_inf_nan=False)
    chat_daily_tokens: int | None = Field(None, gt=0, le=MAX_LIMIT)
    chat_monthly_cost: float | None = Field(None, gt=0, le=MAX_LIMIT, allow_inf_nan=False)
    guest_daily_tokens: int | None = Field(None, gt=0, le=MAX_LIMIT)

    # Fair use (`core.fair_use`). Messages one user may send per minute (a token bucket: a
    # burst of this many, then one every 60/N s); unset, no limit.
    user_messages_per_minute: int | None = Field(None, gt=0, le=MAX_RATE)
    #: Model calls at once, process-wide; the rest wait in order, shown "Queued (N ahead)".
    max_concurrent_replies: int | None = Field(None, gt=0, le=MAX_RATE)


@lru_cache(maxsize=1)
def get_settings() -> CoreSettings:
    """The process-wide core settings, read once on first use (g4f-style entry points only)."""
    return CoreSettings()


def env_secret(name: str, env_file: str | Path | None = ".env") -> str | None:
    """The value of an operator-named variable (a providers file's `api_key_env`).

    Read from the environment first, then `.env`, as the settings are; kept here so that this
    module stays the only one that reads the environment.
    """
    value = os.environ.get(name)
    if value is None and env_file is not None and Path(env_file).is_file():
        value = dotenv_values(env_file).get(name)
    return value or None
