"""Context by tokens: model windows (presets, providers file, default), the history fitted in
them, the footer said once, and summaries of the turns left out, over real HTTP to the fake
LLM server on a real SQLite store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bots.relay import HISTORY_CUT_NOTE, _shown
from core import AsyncClient
from core.config import CoreSettings
from core.content import message_tokens
from core.conversation import ConversationService, build_context
from core.conversation.context import SUMMARY_HEADING, TRUNCATION_MARKER
from core.errors import ProvidersFileError
from core.models import DEFAULT_CONTEXT, ContextWindow, context_window
from core.providers.registry import ProviderRegistry
from storage import MessageStatus, Role, Store, StoredMessage
from tests.fakes.llm_server import FakeLLMServer, Script
from tests.test_conversation_fakes import ALICE, WAIT, chat

#: The tiny model's window: 600 tokens, 100 kept for the answer, so prompts of at most 500.
TINY = """
[models."tiny-*"]
context_window = 600
output_reserve = 100
"""
BUDGET = 500
BIG = "x" * 1_200  # 300 tokens: two of them do not fit the tiny window


pytestmark = pytest.mark.all_backends


def tokens(messages: list[dict[str, Any]]) -> int:
    return sum(message_tokens(m["content"]) for m in messages)


@pytest.fixture
async def llm() -> AsyncIterator[FakeLLMServer]:
    async with FakeLLMServer() as server:
        yield server


def service_for(
    store: Store, llm: FakeLLMServer, tmp_path: Path, **settings: Any
) -> ConversationService:
    providers = tmp_path / "providers.toml"
    providers.write_text(TINY, encoding="utf-8")
    chosen: dict[str, Any] = {
        "default_model": "tiny-model",
        "system_prompt": "Be brief.",
        **settings,
    }
    core = CoreSettings(
        _env_file=None,
        max_retries=0,
        providers_file=providers,
        **chosen,
    )
    registry = ProviderRegistry.from_settings(core)
    client = AsyncClient(base_url=llm.base_url, api_key="test-key", registry=registry)
    return ConversationService(store, client, core)


async def ask(service: ConversationService, text: str) -> tuple[str, bool]:
    """What the chat shows for the answer (footer included), and whether the footer was due."""
    reply = service.reply(chat(), ALICE, text)
    shown = await asyncio.wait_for(_collect(_shown(reply, "collapsed")), WAIT)
    return shown, reply.history_cut


async def _collect(deltas: AsyncIterator[str]) -> str:
    return "".join([delta async for delta in deltas])


def answers(llm: FakeLLMServer) -> list[list[dict[str, Any]]]:
    """The messages of each streamed answer request."""
    return [r.json["messages"] for r in llm.requests if r.json.get("stream")]


def summary_requests(llm: FakeLLMServer) -> list[list[dict[str, Any]]]:
    return [r.json["messages"] for r in llm.requests if r.json.get("model") == "summ-model"]


# Windows: presets, default, providers file.


@pytest.mark.parametrize(
    ("model", "window"),
    [
        ("gpt-4o-mini", 128_000),
        ("openai/gpt-4.1", 1_047_576),
        ("gpt-5", 400_000),
        ("o3-mini", 200_000),
        ("claude-sonnet-4-5", 200_000),
        ("gemini-2.5-flash", 1_048_576),
        ("llama3.1:8b", 131_072),
        ("llama3:8b", 8_192),
        ("meta-llama/Llama-3.3-70B-Instruct", 131_072),
        ("qwen2.5:7b", 32_768),
        ("qwen3:14b", 32_768),
        ("mistral-large-latest", 131_072),
        ("mistral:7b", 32_768),
        ("gemma3:27b", 131_072),
        ("gemma2:9b", 8_192),
    ],
)
def test_well_known_models_have_their_window(model: str, window: int) -> None:
    found = context_window(model)
    assert found.window == window
    assert 0 < found.reserve < found.window // 2 + 1


def test_an_unknown_model_gets_the_safe_default() -> None:
    assert context_window("my-own-finetune") == DEFAULT_CONTEXT == ContextWindow(8_192, 1_024)
    assert DEFAULT_CONTEXT.prompt_budget == 7_168


def test_the_providers_file_overrules_a_preset_and_fills_in_from_it(tmp_path: Path) -> None:
    providers = tmp_path / "p.toml"
    providers.write_text(
        '[models."llama3.1:*"]\ncontext_window = 4096\noutput_reserve = 512\n'
        '[models."gpt-4o"]\noutput_reserve = 2000\n',
        encoding="utf-8",
    )
    registry = ProviderRegistry.from_settings(
        CoreSettings(_env_file=None, providers_file=providers)
    )
    assert registry.context_window("llama3.1:8b") == ContextWindow(4_096, 512)
    assert registry.context_window("gpt-4o") == ContextWindow(128_000, 2_000)
    assert registry.context_window("unknown") == DEFAULT_CONTEXT


@pytest.mark.parametrize(
    ("entry", "said"),
    [
        ("context_window = 100", "from 512"),
        ("context_window = true", "whole number"),
        ("context_window = 8192.5", "whole number"),
        ('context_window = "8k"', "whole number"),
        ("context_window = 1000\noutput_reserve = 1000", "output_reserve must be from 0 to 999"),
        ("output_reserve = -1", "output_reserve"),
        ("context_size = 8192", "unknown key 'context_size'"),
    ],
)
def test_a_bad_window_stops_start_up_naming_the_key(tmp_path: Path, entry: str, said: str) -> None:
    providers = tmp_path / "p.toml"
    providers.write_text(f'[models."m"]\n{entry}\n', encoding="utf-8")
    with pytest.raises(ProvidersFileError, match=said):
        ProviderRegistry.from_settings(CoreSettings(_env_file=None, providers_file=providers))


# Fitting the history.


def history(*texts: str) -> list[StoredMessage]:
    return [
        StoredMessage(
            i + 1, 1, Role.USER if i % 2 == 0 else Role.ASSISTANT, t, MessageStatus.COMPLETE
        )
        for i, t in enumerate(texts)
    ]


def test_the_newest_turns_that_fit_the_tokens_are_sent_and_no_more() -> None:
    turns = history(BIG, "ok", BIG, "ok", "last question")
    sent = build_context(
        "SYS", turns, group=False, max_messages=50, max_chars=99_999, max_tokens=500
    )
    assert [m["content"] for m in sent] == ["SYS", BIG, "ok", "last question"]
    assert tokens(sent) <= 500


def test_a_question_longer_than_the_window_is_cut_to_it() -> None:
    sent = build_context(
        "SYS", history("y" * 10_000), group=False, max_messages=5, max_chars=99_999, max_tokens=300
    )
    assert sent[-1]["content"].endswith(TRUNCATION_MARKER)
    assert tokens(sent) <= 300


# Over HTTP: the tiny window, the footer, summaries.


async def test_a_tiny_window_is_never_exceeded_and_the_footer_is_said_once(
    store: Store, llm: FakeLLMServer, tmp_path: Path
) -> None:
    service = service_for(store, llm, tmp_path)
    first, cut = await ask(service, BIG)
    assert not cut and HISTORY_CUT_NOTE not in first
    second, cut = await ask(service, BIG + " again")
    assert cut and second.endswith(f"\n\n{HISTORY_CUT_NOTE}")
    third, cut = await ask(service, BIG + " and again")
    assert not cut and HISTORY_CUT_NOTE not in third  # said once per conversation
    for sent in answers(llm):
        assert tokens(sent) <= BUDGET
        assert sent[0] == {"role": "system", "content": "Be brief."}
    assert answers(llm)[1][1]["content"] == BIG + " again"  # the first turn was left out
    assert llm.requests[-1].json["model"] == "tiny-model"
    await service.aclose()


async def test_the_upper_bounds_still_cut_a_roomy_window(
    store: Store, llm: FakeLLMServer, tmp_path: Path
) -> None:
    service = service_for(store, llm, tmp_path, default_model="gpt-4o", context_max_messages=3)
    for text in ("one", "two", "three"):
        await ask(service, text)
    assert len(answers(llm)[-1]) == 1 + 3
    await service.aclose()


async def test_turns_left_out_are_summarised_once_and_the_summary_reused(
    store: Store, llm: FakeLLMServer, tmp_path: Path
) -> None:
    service = service_for(store, llm, tmp_path, summary_model="summ-model")
    llm.enqueue(
        Script(pieces=["ok"]), Script(pieces=["Alice sent a long x."]), Script(pieces=["ok"])
    )
    await ask(service, BIG)
    await ask(service, BIG + " again")
    llm.enqueue(Script(pieces=["ok"]))
    await ask(service, "hi")
    [request] = summary_requests(llm)
    assert BIG in request[1]["content"]
    for sent in answers(llm)[1:]:
        assert sent[0]["content"] == f"Be brief.\n\n{SUMMARY_HEADING}Alice sent a long x."
        assert tokens(sent) <= BUDGET
    conversation = (await store.context_messages(1, 1))[0].conversation_id
    stored = await store.history_summary(conversation)
    assert stored is not None and stored.through == 2 and stored.model == "summ-model"
    await service.aclose()


async def test_a_summary_too_long_for_the_window_is_trimmed(
    store: Store, llm: FakeLLMServer, tmp_path: Path
) -> None:
    service = service_for(store, llm, tmp_path, summary_model="summ-model")
    llm.enqueue(Script(pieces=["ok"]), Script(pieces=["word " * 2_000]), Script(pieces=["ok"]))
    await ask(service, BIG)
    await ask(service, BIG + " again")
    sent = answers(llm)[-1]
    assert SUMMARY_HEADING in sent[0]["content"]
    assert sent[0]["content"].endswith(TRUNCATION_MARKER)
    assert tokens(sent) <= BUDGET
    await service.aclose()


async def test_a_branch_is_not_sent_the_summary_of_the_other_branch(
    store: Store, llm: FakeLLMServer, tmp_path: Path
) -> None:
    """The conversation's summary covers its newest line, past the point a branch left it: a
    reply to an older answer must not be told of the turns after that answer."""
    service = service_for(store, llm, tmp_path, summary_model="summ-model")
    llm.enqueue(
        Script(pieces=["ok"]),
        Script(pieces=["Turn one."]),
        Script(pieces=["ok"]),
        Script(pieces=["Turns one and two."]),
        Script(pieces=["ok"]),
        Script(pieces=["ok"]),
    )
    for text in (" one", " two", " three"):
        await ask(service, BIG + text)
    first_answer = (await store.context_messages(2, 1))[0]
    assert first_answer.role is Role.ASSISTANT
    await store.set_platform_message_ids(first_answer.id, ["answer-one"])
    reply = service.reply(chat(), ALICE, BIG + " branch", continue_from="answer-one")
    await asyncio.wait_for(_collect(_shown(reply, "collapsed")), WAIT)
    sent = answers(llm)[-1]
    assert sent[-1]["content"] == BIG + " branch"
    assert not any("two" in str(m["content"]) for m in sent), sent[0]
    assert tokens(sent) <= BUDGET
    await service.aclose()


async def test_a_system_prompt_over_half_a_tiny_window_is_cut_and_the_question_goes_whole(
    store: Store, llm: FakeLLMServer, tmp_path: Path
) -> None:
    long_prompt = "Always answer in rhyme. " * 160  # 3,840 characters, about 960 tokens
    service = service_for(store, llm, tmp_path, system_prompt=long_prompt)
    await ask(service, "What time is it?")
    [sent] = answers(llm)
    assert sent[-1]["content"] == "What time is it?"
    assert sent[0]["content"].startswith("Always answer in rhyme.")
    assert sent[0]["content"].endswith(TRUNCATION_MARKER)
    assert message_tokens(sent[0]["content"]) <= BUDGET // 2
    assert tokens(sent) <= BUDGET
    await service.aclose()
