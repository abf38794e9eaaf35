"""Settings match the layers: the core's settings carry no bot concern, the app's extend them,
and a registry built from one settings object follows it even when the process-wide settings
say something else."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bots.config import Settings
from core import AsyncClient, Provider, errors, models
from core.client import client_for
from core.config import CoreSettings, get_settings
from core.health import check_providers
from core.providers import ProviderRegistry
from tests.core_support import closed_port
from tests.fakes.llm_server import FakeLLMServer

BOT_ONLY = {
    "telegram_bot_token",
    "telegram_api_base",
    "telegram_allowed_ids",
    "discord_bot_token",
    "discord_api_base",
    "discord_gateway_url",
    "discord_allowed_ids",
    "admin_ids",
    "database_url",
    "log_level",
}


@pytest.fixture
async def work_server() -> AsyncIterator[FakeLLMServer]:
    async with FakeLLMServer() as fake:
        yield fake


def test_the_core_settings_carry_no_bot_tokens_access_lists_or_database() -> None:
    assert BOT_ONLY.isdisjoint(CoreSettings.model_fields)
    assert Settings.model_fields.keys() >= BOT_ONLY
    assert issubclass(Settings, CoreSettings)


def test_the_app_settings_read_the_same_flat_variable_names(monkeypatch) -> None:
    """An operator's .env keeps working: no prefix for the core's part."""
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:1/v1")
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "123:abc")
    monkeypatch.setenv("ADMIN_IDS", "1, 2")
    monkeypatch.setenv("CONNECT_TIMEOUT", "3")
    settings = Settings()
    assert settings.openai_base_url == "http://127.0.0.1:1/v1"
    assert settings.telegram_bot_token is not None and settings.admin_ids == [1, 2]
    assert settings.connect_timeout == 3
    assert get_settings().openai_base_url == "http://127.0.0.1:1/v1"


async def test_a_registry_follows_the_settings_it_was_handed_not_the_process_wide_ones(
    server, work_server, tmp_path: Path, monkeypatch
) -> None:
    # The process-wide settings: another default model, and a default provider nobody serves.
    monkeypatch.setenv("DEFAULT_MODEL", "process-model")
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{closed_port()}/v1")
    providers_file = tmp_path / "providers.toml"
    providers_file.write_text(
        f'[[provider]]\nname = "Work"\nbase_url = "{work_server.base_url}"\nmodels = ["work-*"]\n',
        encoding="utf-8",
    )
    handed = Settings(
        _env_file=None,
        default_model="handed-model",
        openai_base_url=server.base_url,
        providers_file=providers_file,
    )
    registry = ProviderRegistry.from_settings(handed)
    assert registry.settings is handed
    assert get_settings().default_model == "process-model"

    # The model name: "" and models.default mean the handed default.
    client = client_for(handed)
    for model in ("", models.default):
        completion = await client.chat.completions.create("hi", model=model)
        assert completion.model == "handed-model" and completion.provider == "OpenAI"
    assert [r.json["model"] for r in server.requests] == ["handed-model", "handed-model"]

    # Routing: the handed providers file claims work-*; the process-wide registry has no Work.
    completion = await client.chat.completions.create("hi", model="work-1")
    assert completion.provider == "Work" and work_server.requests[0].json["model"] == "work-1"
    assert "Work" not in Provider

    # The health check probes the handed registry, with the handed default model.
    results = await check_providers(registry=registry, timeout=10)
    assert [(r.provider, r.model, r.ok) for r in results] == [
        ("OpenAI", "handed-model", True),
        ("Work", "handed-model", True),
    ]

    # Sanity: the process-wide path really does lead elsewhere.
    with pytest.raises(errors.ProviderConnectionError):
        await AsyncClient().chat.completions.create("hi")
