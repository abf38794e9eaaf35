"""A Bot API outage in the middle of a reply, with a real `parley run` against the fakes.

The fake Bot API answers every call with 502 from mid-stream on (`start_outage`), the way the
issue measured it. Either the API comes back and the user ends with the whole text, or the
outage outlasts `DELIVERY_TIMEOUT_SECONDS`: delivery gives up, the database says the user did
not get the reply, and the next start marks the message as interrupted.
"""

from __future__ import annotations

import re
from pathlib import Path

from core.conversation import INTERRUPTED_NOTE
from tests.delivery_support import CHILD_WAIT, reply_rows, wait_for_row
from tests.fakes.llm_server import FakeLLMServer, Script
from tests.fakes.telegram_api import FakeChat, FakeTelegramAPI, StoredMessage, user
from tests.run_support import telegram_env
from tests.test_delivery_restart import start_telegram

ALICE = user(1001, "Alice")
#: The issue's reply: 1,500 characters, streamed over 3 s.
TEXT = " ".join(f"w{i:04d}" for i in range(300))[:1499] + "."
PIECES = [TEXT[i : i + 50] for i in range(0, len(TEXT), 50)]
#: The engine's log lines for a failed edit, a late success and giving up.
FAILED = r"could not edit a reply message \(TelegramServerError: .*Bad Gateway\); retrying in"
GOT_THROUGH = r"edit of a reply message got through after \d+ failed tries"
GAVE_UP = r"gave up delivering a reply after (\d+) failed tries"


async def reply_mid_stream(tg: FakeTelegramAPI, chat: FakeChat) -> StoredMessage:
    """Ask, and wait until the answer shows a third of its text: the moment the API fails."""
    await tg.message(chat, ALICE, "a long answer, please")
    return await tg.wait_until(
        lambda: next((m for m in chat.bot_messages() if len(m.text or "") >= 500), None),
        CHILD_WAIT,
    )


def failed_edits(tg: FakeTelegramAPI, text: str | None = None) -> int:
    calls = tg.calls_of("editMessageText", ok=False)
    return sum(text is None or call.params.get("text") == text for call in calls)


async def test_the_final_text_gets_through_once_the_api_is_back(tmp_path: Path) -> None:
    database = tmp_path / "parley.db"
    async with FakeTelegramAPI() as tg, FakeLLMServer() as llm:
        llm.enqueue(Script(pieces=PIECES, delay=0.1))
        run = await start_telegram(tg, telegram_env(tg, llm, database))
        chat = tg.private_chat(ALICE)
        message = await reply_mid_stream(tg, chat)
        tg.start_outage()
        await llm.wait_until_no_active_streams(CHILD_WAIT)  # the model has finished
        # The API stays down until the final text has failed twice, then comes back.
        await tg.wait_until(lambda: failed_edits(tg, TEXT) >= 2, CHILD_WAIT)
        tg.end_outage()

        await tg.wait_until(lambda: message.text == TEXT, CHILD_WAIT)
        row = await wait_for_row(database, lambda r: not r.delivery_pending)
        assert (row.status, row.text, row.platform_ids) == (
            "complete",
            TEXT,
            [str(message.message_id)],
        )
        assert await run.stop() == 0
        # One line per failed edit, one when it got through, and no traceback.
        assert len(run.matching(FAILED)) == failed_edits(tg) >= 2
        assert len(run.matching(GOT_THROUGH)) == 1
        assert not run.matching("Traceback") and not run.matching(GAVE_UP)


async def test_an_outage_longer_than_the_timeout_gives_up_then_the_next_start_marks_it(
    tmp_path: Path,
) -> None:
    database = tmp_path / "parley.db"
    async with FakeTelegramAPI() as tg, FakeLLMServer() as llm:
        env = {**telegram_env(tg, llm, database), "DELIVERY_TIMEOUT_SECONDS": "2"}
        llm.enqueue(Script(pieces=PIECES, delay=0.1))
        first = await start_telegram(tg, env)
        chat = tg.private_chat(ALICE)
        message = await reply_mid_stream(tg, chat)
        tg.start_outage()
        gave_up = await first.wait_log(GAVE_UP)
        match = re.search(GAVE_UP, gave_up)
        assert match is not None
        tries = int(match.group(1))
        # The database does not claim the user got it, and knows it is still to be marked.
        row = await wait_for_row(database, lambda r: r.status == "interrupted")
        assert row.status == "interrupted" and row.delivery_pending
        assert row.platform_ids == [str(message.message_id)]
        cut_off = message.text
        assert cut_off is not None and not cut_off.endswith(INTERRUPTED_NOTE)
        tg.end_outage()
        assert await first.stop() == 0
        # One line per failed try (the last one is the line saying it gave up); no traceback.
        assert failed_edits(tg) == tries >= 2
        assert len(first.matching(FAILED)) == tries - 1
        assert len(first.matching(GAVE_UP)) == 1
        assert not first.matching("Traceback")

        second = await start_telegram(tg, env)
        await second.wait_log(r"Marked 1 reply\(ies\) a previous run left cut off")
        marked = reply_rows(database)[-1]
        assert message.text == marked.text.strip() + "\n\n" + INTERRUPTED_NOTE
        assert marked.text.startswith(cut_off) and not marked.delivery_pending
        assert await second.stop() == 0
