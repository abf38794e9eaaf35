"""A reply stopped by SIGTERM mid-stream, with a real `parley run` against the fakes: its last
edit carries the interrupted line, so the next start has nothing left to mark."""

from __future__ import annotations

import signal
from pathlib import Path

from tests.delivery_support import CHILD_WAIT, reply_rows
from tests.fakes.llm_server import FakeLLMServer, Script
from tests.fakes.telegram_api import FakeTelegramAPI
from tests.run_support import telegram_env
from tests.test_delivery_restart import ALICE, NOTICE_END, WORDS, start_telegram


async def test_a_reply_stopped_by_sigterm_ends_with_the_interrupted_line(tmp_path: Path) -> None:
    database = tmp_path / "parley.db"
    async with FakeTelegramAPI() as tg, FakeLLMServer() as llm:
        env = telegram_env(tg, llm, database)
        llm.enqueue(Script(pieces=WORDS, delay=0.1))
        run = await start_telegram(tg, env)
        chat = tg.private_chat(ALICE)
        await tg.message(chat, ALICE, "tell me a long story")
        message = await tg.wait_until(
            lambda: next((m for m in chat.bot_messages() if len(m.history) >= 2), None),
            CHILD_WAIT,
        )
        assert await run.stop(signal.SIGTERM) == 0
        shown = message.text or ""
        assert shown.endswith(NOTICE_END)
        row = reply_rows(database)[-1]
        assert row.text.startswith(shown.removesuffix(NOTICE_END))
        # The notice is on screen: the next start has nothing to mark.
        assert row.status == "interrupted" and not row.delivery_pending
        assert not run.matching("Traceback")
