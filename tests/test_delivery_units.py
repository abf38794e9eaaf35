"""Delivery bookkeeping, piece by piece, over a real SQLite store: what the rows say as a reply
goes out, what `recover()` finds after a crash, and how `bots.repair` marks it on a recording
surface. The same paths run end to end against the fakes in `test_delivery_*.py`."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiogram.exceptions import TelegramServerError

from bots import repair
from bots.clock import SystemClock as RealClock
from bots.errors import MessageGone
from bots.relay import relay
from bots.repair import repair_replies
from bots.splitting import split_message
from core import AsyncClient
from core.conversation import INTERRUPTED_NOTE, ConversationService
from storage import MessageStatus, ReplyOutcome, Store, UndeliveredReply
from tests.fakes.llm_server import Script
from tests.fakes.telegram_api import ApiError, FakeTelegramAPI
from tests.fakes.telegram_api import user as telegram_user
from tests.test_conversation import make_settings, rows
from tests.test_conversation_fakes import ALICE, WAIT, Gate, ScriptedProvider, chat
from tests.test_streaming import Call, RecordingSurface
from tests.test_telegram_bot import running_bot
from tests.test_telegram_units import make_bot

NOTICE_END = "\n\n" + INTERRUPTED_NOTE


pytestmark = pytest.mark.all_backends


async def stored_reply(
    store: Store,
    text: str,
    ids: list[str],
    *,
    status: MessageStatus | None = MessageStatus.COMPLETE,
    pending: bool = True,
    platform: str = "telegram",
) -> int:
    """A reply row as a previous run left it; `status` None leaves it streaming."""
    key = chat(platform=platform)
    question = await store.add_user_message(key, author_id="1", author_name="A", text="q")
    reply = await store.start_reply(question, "m")
    if status is None:
        await store.save_partial_reply(reply, text)
    else:
        await store.finish_reply(reply, ReplyOutcome(status, text))
    await store.set_platform_message_ids(reply, ids, delivery_pending=pending)
    return reply


# Storage.


async def test_recovery_marks_streaming_and_undelivered_complete_replies(store: Store) -> None:
    killed = await stored_reply(store, "half", ["1"], status=None)
    undelivered = await stored_reply(store, "all of it", ["2"])
    delivered = await stored_reply(store, "shown", ["3"], pending=False)
    failed = await stored_reply(store, "oops", ["4"], status=MessageStatus.ERROR)
    elsewhere = await stored_reply(store, "dc", ["5"], status=None, platform="discord")
    assert await store.interrupt_streaming("telegram") == 2
    statuses = {m.id: m.status for m in await rows(store)}
    assert statuses[killed] == statuses[undelivered] == MessageStatus.INTERRUPTED
    assert statuses[delivered] is MessageStatus.COMPLETE
    assert statuses[failed] is MessageStatus.ERROR  # the model's failure stays on record
    found = await store.undelivered_replies("telegram")
    assert [(r.id, r.text, r.platform_message_ids) for r in found] == [
        (killed, "half", ("1",)),
        (undelivered, "all of it", ("2",)),
        (failed, "oops", ("4",)),
    ]
    assert found[0] == UndeliveredReply(killed, "telegram", "1", "", "half", ("1",))
    assert [r.id for r in await store.undelivered_replies("discord")] == [elsewhere]


async def test_interrupt_reply_changes_only_a_complete_reply(store: Store) -> None:
    complete = await stored_reply(store, "done", ["1"])
    failed = await stored_reply(store, "oops", ["2"], status=MessageStatus.ERROR)
    await store.interrupt_reply(complete)
    await store.interrupt_reply(failed)
    statuses = {m.id: m.status for m in await rows(store)}
    assert (statuses[complete], statuses[failed]) == ("interrupted", "error")


# The conversation service.


async def test_recover_hands_each_platform_its_cut_off_replies_once(store: Store) -> None:
    cut = await stored_reply(store, "half", ["7"], status=None)
    service = ConversationService(store, AsyncClient(provider=ScriptedProvider()), make_settings())
    assert await service.recover("telegram") == 1
    assert [r.id for r in service.take_undelivered("telegram")] == [cut]
    assert service.take_undelivered("telegram") == []
    assert service.take_undelivered("discord") == []


class SpySurface(RecordingSurface):
    """Reads the reply's row at the moment of each send and edit, before the platform sees it."""

    def __init__(self, store: Store) -> None:
        super().__init__(RealClock(), min_edit_interval=0.01)
        self.store = store
        self.seen: list[tuple[Call, str, tuple[str, ...], list[int]]] = []
        self.called = asyncio.Event()

    async def _record(self, call: Call) -> None:
        if call.op != "typing":
            reply = (await rows(self.store))[-1]
            pending = [r.id for r in await self.store.undelivered_replies("telegram")]
            self.seen.append((call, reply.text, reply.platform_message_ids, pending))
            self.called.set()
        await super()._record(call)


async def test_relay_checkpoints_before_each_call_and_records_ids_as_sent(store: Store) -> None:
    gate = Gate(first="first part ", rest="second part")
    client = AsyncClient(provider=ScriptedProvider(gate))
    service = ConversationService(store, client, make_settings())
    surface = SpySurface(store)
    task = asyncio.create_task(
        relay(service, surface, chat(), ALICE, "hi", group=False, platform_message_id="u1")
    )
    await asyncio.wait_for(surface.called.wait(), WAIT)  # the first send
    gate.release.set()
    result = await asyncio.wait_for(task, WAIT)
    assert result.whole
    reply = (await rows(store))[-1]
    for call, text, _, _ in surface.seen:
        # The stored text is never behind what the user sees, or there is none yet (before the
        # reply's first save), which the repair never edits.
        assert text == "" or text.startswith(call.text)
    assert any(text for _, text, _, _ in surface.seen[1:])  # saved before the later calls
    (first, _, ids_at_send, _), (_, _, ids_after, pending_after) = surface.seen[:2]
    assert (first.op, ids_at_send) == ("send", ())
    assert (ids_after, pending_after) == (("0",), [reply.id])  # stored as soon as sent
    assert (reply.status, reply.platform_message_ids) == (MessageStatus.COMPLETE, ("0",))
    assert await store.undelivered_replies("telegram") == []  # delivered: nothing to mark


async def test_a_reply_whose_delivery_gave_up_is_interrupted_and_pending(store: Store) -> None:
    gate = Gate(first="the start ", rest="and the end")
    service = ConversationService(
        store, AsyncClient(provider=ScriptedProvider(gate)), make_settings()
    )
    surface = SpySurface(store)
    surface.fail = lambda call: ConnectionError("502") if call.op == "edit" else None
    task = asyncio.create_task(
        relay(
            service,
            surface,
            chat(),
            ALICE,
            "hi",
            group=False,
            platform_message_id="u1",
            delivery_timeout=0.05,
        )
    )
    await asyncio.wait_for(surface.called.wait(), WAIT)  # the start is on screen
    gate.release.set()
    result = await asyncio.wait_for(task, WAIT)
    assert not result.delivered and surface.messages == ["the start "]
    reply = (await rows(store))[-1]
    assert reply.status is MessageStatus.INTERRUPTED
    assert reply.text == "the start and the end"  # what the model said, to mark at next start
    assert [r.id for r in await store.undelivered_replies("telegram")] == [reply.id]


# Repair at the next start.


class RepairSurface(RecordingSurface):
    """A recording surface taking up a stored reply: its messages already exist."""

    def __init__(self, shown: list[str], **kwargs: object) -> None:
        super().__init__(RealClock(), **kwargs)  # type: ignore[arg-type]
        self.messages = list(shown)


async def repaired(
    store: Store, surface: RecordingSurface, platform: str = "telegram"
) -> tuple[int, list[str]]:
    service = ConversationService(store, AsyncClient(provider=ScriptedProvider()), make_settings())
    await service.recover(platform)
    marked = await repair_replies(service, platform, lambda reply: surface)
    return marked, [m for m in await rows(store, chat(platform=platform)) if m.role == "assistant"]


async def test_repair_appends_the_notice_to_the_last_message(store: Store) -> None:
    await stored_reply(store, "cut mid-wo", ["0"], status=None)
    surface = RepairSurface(["cut mid-wo"])
    marked, (reply,) = await repaired(store, surface)
    assert marked == 1
    assert [(c.op, c.handle, c.text) for c in surface.updates] == [
        ("edit", 0, "cut mid-wo" + NOTICE_END)
    ]
    assert reply.platform_message_ids == ("0",)
    assert (reply.status, await store.undelivered_replies("telegram")) == ("interrupted", [])
    # A second start finds nothing left to mark.
    assert (await repaired(store, RepairSurface(["x"])))[0] == 0


async def test_repair_edits_the_part_the_last_message_holds(store: Store) -> None:
    text = "\n\n".join(f"paragraph {i} " + "x" * 58 for i in range(6))  # 70 characters each
    limit = 2 * (70 + 2) + len(NOTICE_END)  # two paragraphs and the notice fit, three do not
    parts = split_message(text, limit)
    assert len(parts) == 3 and len(parts[1] + NOTICE_END) <= limit
    await stored_reply(store, text, ["0", "1"], status=None)  # the third was never sent
    surface = RepairSurface(parts[:2], max_length=limit)
    await repaired(store, surface)
    (call,) = surface.updates
    assert (call.op, call.handle, call.text) == ("edit", 1, parts[1] + NOTICE_END)


async def test_a_full_last_message_gets_the_notice_as_a_reply(store: Store) -> None:
    await stored_reply(store, "y" * 100, ["0"], status=None)
    surface = RepairSurface(["y" * 100], max_length=100)
    _, (reply,) = await repaired(store, surface)
    assert [(c.op, c.text) for c in surface.updates] == [("send", INTERRUPTED_NOTE)]
    assert reply.platform_message_ids == ("0", "1")  # the notice belongs to the reply now


async def test_an_unknown_text_gets_the_notice_as_a_reply(store: Store) -> None:
    await stored_reply(store, "", ["0"], status=None)  # killed before its first checkpoint
    surface = RepairSurface(["what the user saw"])
    await repaired(store, surface)
    assert [(c.op, c.text) for c in surface.updates] == [("send", INTERRUPTED_NOTE)]


async def test_a_gone_message_is_not_marked_and_not_tried_again(store: Store) -> None:
    await stored_reply(store, "half", ["0"], status=None)
    surface = RepairSurface(["half"], fail=lambda call: MessageGone("deleted"))
    marked, _ = await repaired(store, surface)
    assert marked == 0 and len(surface.updates) == 1
    assert await store.undelivered_replies("telegram") == []


async def test_a_failing_platform_leaves_the_reply_for_the_next_start(
    store: Store, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(repair, "REPAIR_RETRY_DELAY", 0.0)
    cut = await stored_reply(store, "half", ["0"], status=None)
    surface = RepairSurface(["half"], fail=lambda call: ConnectionError("502 Bad Gateway"))
    marked, _ = await repaired(store, surface)
    assert marked == 0 and len(surface.updates) == repair.REPAIR_ATTEMPTS
    assert [r.id for r in await store.undelivered_replies("telegram")] == [cut]
    warnings = [r for r in caplog.records if r.name == "bots.repair"]
    assert len(warnings) == repair.REPAIR_ATTEMPTS
    assert all(r.exc_info is None and "ConnectionError" in r.getMessage() for r in warnings)


# Telegram requests.


async def test_edits_are_not_retried_by_the_request_middleware() -> None:
    """The engine retries them with the newest text; a retry here would replay a stale one and
    add log lines."""
    alice = telegram_user(1001, "Alice")
    async with FakeTelegramAPI() as tg:
        bot = make_bot(tg.base_url, tg.token)
        chat_ = tg.private_chat(alice)
        sent = await bot.send_message(chat_.id, "before")
        tg.inject_error("editMessageText", ApiError(502, "Bad Gateway"))
        with pytest.raises(TelegramServerError):
            await bot.edit_message_text("after", chat_id=chat_.id, message_id=sent.message_id)
        assert len(tg.calls_of("editMessageText", ok=None)) == 1
        await bot.session.close()


# Telegram, in process: a reply waiting on the platform holds up nothing else.


async def test_a_reply_retrying_its_final_text_holds_up_no_other_reply(tmp_path: Path) -> None:
    """Chat A's edits fail: its first reply's final text waits, while chat B is answered and
    A's next reply streams (the service's turn ends when the model does, not the delivery)."""
    alice, bob = telegram_user(1001, "Alice"), telegram_user(1002, "Bob")
    async with running_bot(tmp_path) as h:
        h.llm.enqueue(
            Script(pieces=["alpha ", "one"], delay=0.3),
            Script(pieces=["bravo"]),
            Script(pieces=["alpha two"]),
        )
        a, b = h.tg.private_chat(alice), h.tg.private_chat(bob)
        h.tg.start_outage(methods=("editMessageText",), chat_id=a.id)
        await h.tg.message(a, alice, "first")
        first = await h.tg.wait_until(lambda: a.bot_messages(), WAIT)
        await h.tg.wait_until(lambda: h.tg.calls_of("editMessageText", ok=False), WAIT)
        await h.tg.message(b, bob, "meanwhile")
        await h.tg.wait_until(lambda: [m.text for m in b.bot_messages()] == ["bravo"], WAIT)
        await h.tg.message(a, alice, "second")
        await h.tg.wait_until(lambda: len(a.bot_messages()) == 2, WAIT)
        assert [m.text for m in a.bot_messages()] == ["alpha", "alpha two"]  # one still waiting
        h.tg.end_outage()
        await h.tg.wait_until(lambda: first[0].text == "alpha one", WAIT)
