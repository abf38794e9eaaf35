"""Counting tokens: OpenAI's families by their own tokenizer (vocabularies from the wheel, no
download), every other model by the estimate; and a window filled by that count over HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import bpe_openai
import pytest

from core import AsyncClient
from core.config import CoreSettings
from core.content import message_tokens
from core.conversation import ConversationService
from core.providers.registry import ProviderRegistry
from core.tokens import counter_for, encoding_name, estimate_tokens
from storage import Store
from tests.fakes.llm_server import FakeLLMServer
from tests.test_context_window import answers, ask

O200K = bpe_openai.get_encoding("o200k_base")


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("gpt-4o", "o200k_base"),
        ("gpt-4o-mini-2024-07-18", "o200k_base"),
        ("openai/gpt-4.1", "o200k_base"),
        ("chatgpt-4o-latest", "o200k_base"),
        ("gpt-5-mini", "o200k_base"),
        ("o3-mini", "o200k_base"),
        ("o1", "o200k_base"),
        ("gpt-oss:20b", "o200k_base"),
        ("gpt-4-turbo", "cl100k_base"),
        ("gpt-4", "cl100k_base"),
        ("GPT-3.5-Turbo", "cl100k_base"),
        ("claude-sonnet-4-5", None),
        ("llama3.1:8b", None),
        ("qwen2.5:7b", None),
        ("ollama", None),
        ("o1x", None),
    ],
)
def test_each_model_is_counted_by_its_familys_tokenizer_or_the_estimate(
    model: str, encoding: str | None
) -> None:
    assert encoding_name(model) == encoding


def test_the_tokenizer_counts_as_openai_does_and_reads_special_tokens_as_text() -> None:
    count = counter_for("gpt-4o")
    assert count("hello world") == 2
    assert count("你好，世界") == len(O200K.encode_ordinary("你好，世界"))
    # A user who writes a special token's name is counted, not refused.
    assert count("<|endoftext|>") == len(O200K.encode_ordinary("<|endoftext|>")) > 1
    assert counter_for("claude-sonnet-4-5") is estimate_tokens


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("", 0),
        ("abcdefgh", 2),
        ("abcdefghi", 3),
        ("你好世界", 4),  # each wide character a token
        ("こんにちは", 5),
        ("привет", 3),  # other alphabets: two characters a token
        ("hi 你好", 1 + 2),  # "hi " by four, the two ideographs one each
    ],
)
def test_the_estimate_errs_towards_more_tokens_for_dense_scripts(text: str, tokens: int) -> None:
    assert estimate_tokens(text) == tokens


def test_the_estimate_is_not_below_what_openais_tokenizer_counts_for_chinese() -> None:
    text = "今天的会议改到下午三点，请大家准时参加。" * 20
    assert estimate_tokens(text) >= len(O200K.encode_ordinary(text))


#: gpt-4o with a tiny window: 600 tokens, 100 kept for the answer.
TINY_GPT_4O = """
[models."gpt-4o"]
context_window = 600
output_reserve = 100
"""


async def test_a_gpt_4o_window_is_filled_by_its_tokenizer_and_never_overrun(
    store: Store, server: FakeLLMServer, tmp_path: Path
) -> None:
    """Chinese takes about one token a character in o200k_base: the old four-characters
    estimate would have sent some four times the window."""
    providers = tmp_path / "providers.toml"
    providers.write_text(TINY_GPT_4O, encoding="utf-8")
    settings = CoreSettings(
        _env_file=None, max_retries=0, providers_file=providers, default_model="gpt-4o"
    )
    client = AsyncClient(
        base_url=server.base_url,
        api_key="test-key",
        registry=ProviderRegistry.from_settings(settings),
    )
    service = ConversationService(store, client, settings)
    turn = "今天的会议改到下午三点，请大家准时参加。" * 8  # 160 characters, ~90 tokens
    for _ in range(6):
        await ask(service, turn)
    await ask(service, "长" * 2_000)  # one question alone over the window: cut to it
    count = counter_for("gpt-4o")
    sent: list[list[dict[str, Any]]] = answers(server)
    used = [sum(message_tokens(m["content"], count) for m in messages) for messages in sent]
    assert max(used) <= 500
    assert max(used[:-1]) > 500 // 2  # the window is used, not left empty by a timid count
    assert len(sent[-2]) < 2 * 6  # older turns were left out
    await service.aclose()
