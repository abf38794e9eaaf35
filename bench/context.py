"""Context-by-tokens benchmark (not a test): assembling a long conversation's context, and the
tokens each reply of a long chat sends against the model's window.

    python -m bench.context                  # 2,000 turns, 1,000 timed loads; a 200-turn chat
    python -m bench.context --turns 5000

1. Assembly: a conversation of `--turns` turns (a user message of 20 to 600 characters and an
   answer of 100 to 2,000, seeded) is stored in a fresh SQLite file through the real `Store`.
   `prepare_context` for its newest question is timed with CONTEXT_MAX_MESSAGES above the
   whole conversation, so every turn is a candidate and counted in tokens: gpt-4o's by its
   tokenizer against its window (128,000 - 16,384), an unknown model's by the estimate against
   the default window (8,192 - 1,024). Timed with the SQLite read (what a reply pays), on the
   rows already read (the assembly alone), and for gpt-4o with no token counts kept yet (the
   first reply after a start).
2. Window use: a 200-turn chat with `tiny-model` (a 4,096-token window, 512 reserved, from a
   providers file) through the conversation service over HTTP to the fake LLM server; the
   tokens of every request it sent (by the estimate, tiny-model's count), against the prompt
   budget of 3,584.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

from bench.common import machine_report, percentile
from core import AsyncClient, tokens
from core.config import CoreSettings
from core.content import message_tokens
from core.conversation import Author, ChatRef, ConversationService
from core.conversation.context import prepare_context
from core.models import DEFAULT_CONTEXT, ContextWindow, context_window
from core.providers.registry import ProviderRegistry
from storage import (
    ChatConfig,
    MessageImage,
    MessageStatus,
    ReplyOutcome,
    Store,
    StoredMessage,
    open_store,
)
from tests.fakes.llm_server import FakeLLMServer, Script

CHAT = ChatRef("telegram", "42")
ALICE = Author("100", "Alice")
TINY = ContextWindow(4_096, 512)


def _text(rng: random.Random, low: int, high: int) -> str:
    words = rng.randint(low, high) // 6
    return " ".join(
        rng.choice(("lorem", "ipsum", "dolor", "sit", "amet", "tokens")) for _ in range(words)
    )


async def _fill(store: Store, turns: int) -> int:
    """Store `turns` turns; the id of the last question."""
    rng = random.Random(13)
    last = 0
    for _ in range(turns):
        last = await store.add_user_message(
            CHAT, author_id="100", author_name="Alice", text=_text(rng, 20, 600)
        )
        answer = await store.start_reply(last, "gpt-4o")
        await store.finish_reply(
            answer, ReplyOutcome(MessageStatus.COMPLETE, _text(rng, 100, 2_000))
        )
    return last


class _ReadStore:
    """The rows read once, handed out again: times the assembly without the SQLite read."""

    def __init__(self, config: ChatConfig, rows: list[StoredMessage]) -> None:
        self._config, self._rows = config, rows

    async def chat_config(self, chat: Any) -> ChatConfig:
        return self._config

    async def context_messages(self, up_to: int, limit: int) -> list[StoredMessage]:
        return self._rows[-limit:]

    async def message_images(self, ids: Collection[int]) -> dict[int, list[MessageImage]]:
        return {}


def _timed(samples: Sequence[float]) -> str:
    ms = [s * 1000 for s in samples]
    return (
        f"p50 {statistics.median(ms):.2f} ms, p99 {percentile(ms, 0.99):.2f} ms, "
        f"max {max(ms):.2f} ms"
    )


async def assembly(turns: int, loads: int) -> list[str]:
    lines = [f"## Context assembly, {turns:,} turns ({loads:,} loads each)"]
    with tempfile.TemporaryDirectory() as folder:
        store = await open_store(f"sqlite:///{folder}/bench.db")
        try:
            last = await _fill(store, turns)
            rows = await store.context_messages(last, 2 * turns + 12)
            cached: Any = _ReadStore(await store.chat_config(CHAT), rows)
            for label, model, window in (
                ("gpt-4o (o200k_base tokenizer)", "gpt-4o", context_window("gpt-4o")),
                ("an unknown model (estimate)", "local-model", DEFAULT_CONTEXT),
            ):
                settings = CoreSettings(
                    _env_file=None,
                    default_model=model,
                    context_max_messages=2 * turns + 10,
                    context_max_chars=10**9,
                )
                for where, source, cold in (
                    ("SQLite read + assembly", store, False),
                    ("assembly alone", cached, False),
                    ("assembly alone, token counts not yet kept", cached, True),
                ):
                    if cold and tokens.encoding_name(model) is None:
                        continue  # the estimate keeps nothing
                    samples = []
                    context = None
                    for _ in range(loads):
                        if cold:  # as the first reply after a start: every text counted anew
                            tokens._cached_count.cache_clear()
                        started = time.perf_counter()
                        context = await prepare_context(
                            source,
                            settings,
                            CHAT,
                            last,
                            group=False,
                            window_of=lambda _m, w=window: w,
                        )
                        samples.append(time.perf_counter() - started)
                    assert context is not None
                    lines.append(
                        f"- {label}, window {window.prompt_budget:,} prompt tokens, {where}: "
                        f"{_timed(samples)}; {len(context.messages) - 1:,} messages, "
                        f"{context.tokens:,} tokens sent"
                    )
        finally:
            await store.close()
    return lines


async def window_use(turns: int) -> list[str]:
    lines = [f"## Tokens sent per reply, {turns}-turn chat, tiny-model {TINY}"]
    with tempfile.TemporaryDirectory() as folder:
        providers = Path(folder) / "providers.toml"
        providers.write_text(
            f'[models."tiny-*"]\ncontext_window = {TINY.window}\noutput_reserve = {TINY.reserve}\n',
            encoding="utf-8",
        )
        settings = CoreSettings(
            _env_file=None,
            default_model="tiny-model",
            providers_file=providers,
            system_prompt="You are a helpful assistant.",
        )
        store = await open_store(f"sqlite:///{folder}/chat.db")
        rng = random.Random(200)
        async with FakeLLMServer() as llm:
            client = AsyncClient(
                base_url=llm.base_url,
                api_key="k",
                registry=ProviderRegistry.from_settings(settings),
            )
            service = ConversationService(store, client, settings)
            try:
                for _ in range(turns):
                    llm.enqueue(Script(pieces=[_text(rng, 100, 1_500)]))
                    reply = service.reply(CHAT, ALICE, _text(rng, 20, 600))
                    async for _delta in reply:
                        pass
            finally:
                await service.aclose()
                await store.close()
        sent = [sum(message_tokens(m["content"]) for m in r.json["messages"]) for r in llm.requests]
    budget = TINY.prompt_budget
    over = sum(1 for tokens in sent if tokens > budget)
    use = [tokens / budget for tokens in sent]
    tail = sent[20:]
    lines += [
        f"- replies: {len(sent)}; prompt budget {budget:,} tokens "
        f"(window {TINY.window:,} - reserve {TINY.reserve:,})",
        f"- tokens sent: min {min(sent):,}, median {statistics.median(sent):,.0f}, "
        f"max {max(sent):,}; over the budget: {over}",
        f"- window used (prompt / budget): median {statistics.median(use):.0%}, "
        f"min after turn 20 {min(tail) / budget:.0%}, max {max(use):.0%}",
    ]
    return lines


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=2_000)
    parser.add_argument("--loads", type=int, default=1_000)
    parser.add_argument("--chat-turns", type=int, default=200)
    args = parser.parse_args()
    lines = machine_report()
    lines += await assembly(args.turns, args.loads)
    lines += await window_use(args.chat_turns)
    print("\n".join(lines))


if __name__ == "__main__":
    asyncio.run(main())
