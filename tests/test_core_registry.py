"""The provider protocol, the registry (`Provider`, `get_providers`) and the providers file.

Settings come from the environment (set per test with monkeypatch; tests/conftest.py clears
the settings cache and every provider variable around each test).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from core import AsyncClient, Provider, errors, get_providers
from core.config import get_settings
from core.providers import BaseProvider
from core.providers.base import provider_name
from tests.core_support import ScriptedProvider, closed_port, collect, contents
from tests.fakes.llm_server import FakeLLMServer

HOSTED_NEEDING_KEYS = [
    "OpenRouter",
    "Groq",
    "Together",
    "DeepSeek",
    "Mistral",
    "Gemini",
    "Anthropic",
]


@pytest.fixture
async def other_server() -> AsyncIterator[FakeLLMServer]:
    async with FakeLLMServer() as fake:
        yield fake


def text_of(chunks: list) -> str:
    return "".join(c for c in contents(chunks) if c)


# -- provider objects --------------------------------------------------------------------------


class Echo(BaseProvider):
    async def create_async_generator(self, model, messages, **kwargs):
        for piece in ("echo", None, "", ":", messages[-1]["content"]):
            yield piece


async def test_create_async_returns_the_whole_text() -> None:
    assert await Echo().create_async("m", [{"role": "user", "content": "x"}]) == "echo:x"


def test_a_providers_name_defaults_to_its_class_name() -> None:
    assert provider_name(Echo()) == "Echo"
    assert provider_name(Echo) == "Echo"
    assert provider_name(ScriptedProvider(name="Given")) == "Given"


async def test_a_non_working_provider_is_refused_unless_ignore_working() -> None:
    provider = ScriptedProvider(["answer"], name="Off", working=False)
    client = AsyncClient(provider)
    with pytest.raises(errors.ProviderNotWorkingError) as caught:
        client.chat.completions.create("hi")
    assert "Off" in str(caught.value)
    assert provider.calls == []
    completion = await client.chat.completions.create("hi", ignore_working=True)
    assert completion.choices[0].message.content == "answer"


# -- the registry ------------------------------------------------------------------------------


def test_every_preset_is_listed_and_those_without_keys_do_not_work() -> None:
    listed = {provider_name(p): p for p in get_providers()}
    for name in [*HOSTED_NEEDING_KEYS, "OpenAI", "Ollama", "LMStudio", "LlamaCpp", "VLLM"]:
        assert name in listed
    for name in HOSTED_NEEDING_KEYS:
        assert listed[name].working is False, name


def test_a_key_in_the_environment_makes_its_preset_work(monkeypatch) -> None:
    monkeypatch.setenv("GROQ_API_KEY", "gsk-test")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    assert Provider.get("Groq").working is True
    assert Provider.get("Anthropic").working is True
    assert Provider.get("Mistral").working is False


def test_the_default_provider_needs_a_key_only_for_openai_itself(monkeypatch) -> None:
    assert Provider.OpenAI.working is False
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:1/v1")
    get_settings.cache_clear()
    assert Provider.OpenAI.working is True


def test_lookup_by_attribute_and_by_name_ignores_case() -> None:
    assert Provider.Groq is Provider.get("groq") is Provider.get("GROQ") is Provider.groq
    assert provider_name(Provider.get("lmstudio")) == "LMStudio"
    assert "deepseek" in Provider


def test_an_unknown_provider_name_is_not_found() -> None:
    with pytest.raises(errors.ProviderNotFoundError) as caught:
        Provider.get("NoSuchProvider")
    assert "NoSuchProvider" in str(caught.value) and "Groq" in str(caught.value)
    with pytest.raises(AttributeError):
        _ = Provider.NoSuchProvider
    with pytest.raises(errors.ProviderNotFoundError):
        AsyncClient().chat.completions.create("hi", provider="NoSuchProvider")


async def test_asking_for_a_provider_without_its_key_is_refused(monkeypatch) -> None:
    with pytest.raises(errors.ProviderNotWorkingError) as caught:
        AsyncClient().chat.completions.create("hi", provider="groq")
    assert "Groq" in str(caught.value)
    # Forced past the check, the provider itself names the variable to set; nothing is sent.
    with pytest.raises(errors.MissingAuthError) as caught:
        await AsyncClient().chat.completions.create("hi", provider="groq", ignore_working=True)
    assert "GROQ_API_KEY" in str(caught.value)


async def test_a_local_server_preset_works_once_its_address_is_set(server, monkeypatch) -> None:
    assert Provider.Ollama.working is False
    monkeypatch.setenv("OLLAMA_BASE_URL", server.base_url)
    get_settings.cache_clear()
    completion = await AsyncClient().chat.completions.create("local", provider="ollama")
    assert completion.choices[0].message.content == "echo: local"
    assert completion.provider == "Ollama"


# -- the providers file ------------------------------------------------------------------------


def write_file(tmp_path: Path, monkeypatch, text: str) -> Path:
    path = tmp_path / "providers.toml"
    path.write_text(text, encoding="utf-8")
    monkeypatch.setenv("PROVIDERS_FILE", str(path))
    return path


@pytest.fixture
def work_file(tmp_path, monkeypatch, server, other_server) -> Path:
    """`Work` on `other_server` claims qwen-*; the default provider is `server`."""
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("WORK_LLM_KEY", "sk-work")
    down = f"http://127.0.0.1:{closed_port()}/v1"
    return write_file(
        tmp_path,
        monkeypatch,
        f"""
[[provider]]
name = "Work"
base_url = "{other_server.base_url}"
api_key_env = "WORK_LLM_KEY"
models = ["qwen-*"]

[[provider]]
name = "Down"
base_url = "{down}"

[routes]
"team-*" = ["Down", "Work"]
"special" = "Work"
""",
    )


async def test_the_file_adds_a_provider_with_its_key_from_the_environment(
    work_file, other_server
) -> None:
    work = Provider.get("work")
    assert work in get_providers() and work.working is True
    completion = await AsyncClient().chat.completions.create("hi", provider="Work")
    assert completion.provider == "Work"
    assert other_server.requests[0].headers["authorization"] == "Bearer sk-work"


async def test_a_claimed_model_pattern_is_routed_to_its_provider(
    work_file, server, other_server
) -> None:
    chunks = await collect(
        AsyncClient().chat.completions.create("hi", model="qwen-72b", stream=True)
    )
    assert text_of(chunks) == "echo: hi"
    assert {chunk.provider for chunk in chunks} == {"Work"}
    assert other_server.requests[0].json["model"] == "qwen-72b"
    assert server.requests == []


async def test_a_route_sends_its_model_to_the_named_provider(work_file, other_server) -> None:
    completion = await AsyncClient().chat.completions.create("hi", model="special")
    assert completion.provider == "Work"
    assert other_server.requests[0].json["model"] == "special"


async def test_a_list_route_falls_back_in_order(work_file, server, other_server) -> None:
    chunks = await collect(
        AsyncClient(timeout=5).chat.completions.create("hi", model="team-a", stream=True)
    )
    assert text_of(chunks) == "echo: hi"
    assert {chunk.provider for chunk in chunks} == {"Work"}
    assert other_server.requests[0].json["model"] == "team-a"
    assert server.requests == []


async def test_a_model_nobody_claims_goes_to_the_default_unchanged(
    work_file, server, other_server
) -> None:
    completion = await AsyncClient().chat.completions.create("hi", model="llama-unclaimed-7b")
    assert completion.provider == "OpenAI"
    assert server.requests[0].json["model"] == "llama-unclaimed-7b"
    assert other_server.requests == []


async def test_a_key_variable_may_come_from_dot_env(tmp_path, monkeypatch, server) -> None:
    (tmp_path / ".env").write_text("DOTENV_LLM_KEY=sk-dotenv\n", encoding="utf-8")
    write_file(
        tmp_path,
        monkeypatch,
        f'[[provider]]\nname = "Dot"\nbase_url = "{server.base_url}"\n'
        'api_key_env = "DOTENV_LLM_KEY"\n',
    )
    await AsyncClient().chat.completions.create("hi", provider="dot")
    assert server.requests[0].headers["authorization"] == "Bearer sk-dotenv"


def test_a_file_provider_whose_key_is_unset_is_listed_not_working(tmp_path, monkeypatch) -> None:
    write_file(
        tmp_path,
        monkeypatch,
        '[[provider]]\nname = "Keyless"\nbase_url = "http://127.0.0.1:1/v1"\n'
        'api_key_env = "UNSET_LLM_KEY"\n',
    )
    assert Provider.get("Keyless").working is False
    with pytest.raises(errors.ProviderNotWorkingError):
        AsyncClient().chat.completions.create("hi", provider="Keyless")


async def test_an_anthropic_provider_from_the_file(tmp_path, monkeypatch, server) -> None:
    monkeypatch.setenv("CLAUDE_KEY", "sk-ant-file")
    write_file(
        tmp_path,
        monkeypatch,
        f'[[provider]]\nname = "Claude"\ntype = "anthropic"\n'
        f'base_url = "{server.anthropic_base_url}"\napi_key_env = "CLAUDE_KEY"\n'
        'models = ["claude-*"]\n',
    )
    completion = await AsyncClient().chat.completions.create("hi", model="claude-test")
    assert completion.provider == "Claude"
    assert server.requests[0].path == "/anthropic/v1/messages"
    assert server.requests[0].headers["x-api-key"] == "sk-ant-file"


def test_a_key_written_in_the_file_is_refused(tmp_path, monkeypatch) -> None:
    path = write_file(
        tmp_path,
        monkeypatch,
        '[[provider]]\nname = "Leaky"\nbase_url = "http://127.0.0.1:1/v1"\n'
        'api_key = "sk-written-in-file"\n',
    )
    with pytest.raises(errors.ParleyError) as caught:
        get_providers()
    message = str(caught.value)
    assert str(path) in message
    assert "api_key_env" in message
    assert "sk-written-in-file" not in message


@pytest.mark.parametrize(
    ("text", "detail"),
    [
        ("[[provider]\nname = ", "not valid TOML"),
        ('[[provider]]\nname = "NoUrl"\n', "base_url"),
        ('[[provider]]\nname = "X"\ntype = "smoke"\nbase_url = "http://x"\n', "smoke"),
        ('[routes]\n"gpt-*" = 5\n', "gpt-*"),
    ],
    ids=["invalid-toml", "missing-base-url", "unknown-type", "route-not-a-name"],
)
def test_an_invalid_file_is_a_clear_error_naming_it(tmp_path, monkeypatch, text, detail) -> None:
    path = write_file(tmp_path, monkeypatch, text)
    with pytest.raises(errors.ParleyError) as caught:
        get_providers()
    assert str(path) in str(caught.value)
    assert detail in str(caught.value)


@pytest.mark.parametrize(
    "text",
    ['[routes]\n"gpt-*" = ["OpenAI", "Nobody"]\n', 'fallback = ["Nobody"]\n'],
    ids=["route", "fallback"],
)
def test_an_unknown_provider_name_in_the_file_names_the_file(tmp_path, monkeypatch, text) -> None:
    path = write_file(tmp_path, monkeypatch, text)
    with pytest.raises(errors.ProviderNotFoundError) as caught:
        get_providers()
    assert str(path) in str(caught.value)
    assert "Nobody" in str(caught.value)


def test_a_missing_file_is_a_clear_error(tmp_path, monkeypatch) -> None:
    missing = tmp_path / "absent.toml"
    monkeypatch.setenv("PROVIDERS_FILE", str(missing))
    with pytest.raises(errors.ParleyError) as caught:
        get_providers()
    assert str(missing) in str(caught.value)


async def test_a_client_given_its_provider_never_reads_the_providers_file(
    tmp_path, monkeypatch
) -> None:
    write_file(tmp_path, monkeypatch, "[[provider]\nname = ")  # broken: reading it would raise
    completion = await AsyncClient(ScriptedProvider(["fine"])).chat.completions.create("hi")
    assert completion.choices[0].message.content == "fine"
