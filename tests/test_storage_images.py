"""Images stored with their message on the real SQLite store: kept in one transaction with it,
once per distinct image, through /reset and a SIGKILL, read back for the context and exported."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import signal
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from PIL import Image

from bots.cli import images_dir_for
from bots.config import Settings
from core import AsyncClient
from core.config import CoreSettings
from core.conversation import ConversationService, build_context
from core.conversation.context import IMAGE_PLACEHOLDER, prepare_context
from core.images import prepare_image_sync
from storage import (
    MessageImage,
    MessageStatus,
    ReplyOutcome,
    Role,
    StorageError,
    Store,
    StoredMessage,
    open_store,
)
from tests.cli_support import run_parley
from tests.test_conversation_fakes import ScriptedProvider, chat
from tests.test_history import export_history
from tests.test_storage_crash import CHILD_TIMEOUT, PROJECT_ROOT


def photo(color: tuple[int, int, int], size: tuple[int, int] = (64, 48)) -> MessageImage:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, "JPEG")
    return prepare_image_sync(out.getvalue())


RED, GREEN, BLUE = photo((255, 0, 0)), photo((0, 255, 0)), photo((0, 0, 255))


def count(path: Path, table: str) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


async def ask(
    store: Store, text: str, images: Sequence[MessageImage] = (), answer: str = ""
) -> int:
    """A stored turn: the user message (with `images`) and, if given, its complete answer."""
    message_id = await store.add_user_message(
        chat(), author_id="1", author_name="Alice", text=text, images=images
    )
    if answer:
        reply = await store.start_reply(message_id, "m")
        await store.finish_reply(reply, ReplyOutcome(MessageStatus.COMPLETE, answer))
    return message_id


# Storing and reading.


@pytest.mark.all_backends
async def test_images_come_back_in_order_with_their_message(store: Store) -> None:
    first = await ask(store, "which is brighter?", [RED, GREEN], answer="red")
    plain = await ask(store, "thanks")
    found = await store.message_images([first, plain, 12345])
    assert found == {first: [RED, GREEN]}
    current = await store.current_conversation(chat())
    assert current is not None
    conversation = await store.conversation_messages(current)
    assert [(m.text, m.image_count) for m in conversation] == [
        ("which is brighter?", 2),
        ("red", 0),
        ("thanks", 0),
    ]
    assert await store.message_images([]) == {}


@pytest.mark.all_backends
async def test_a_chats_first_message_can_carry_images(store: Store) -> None:
    message_id = await ask(store, "", [BLUE])  # a photo without a caption opens the chat
    assert await store.message_images([message_id]) == {message_id: [BLUE]}
    [stored] = await store.context_messages(message_id, 10)
    assert (stored.text, stored.image_count) == ("", 1)


async def test_the_same_photo_sent_twice_is_stored_once(store: Store, tmp_path: Path) -> None:
    first = await ask(store, "look", [RED, GREEN])
    again = await store.add_user_message(
        chat("other"), author_id="2", author_name="Bob", text="forwarded", images=[RED, RED]
    )
    assert await store.message_images([first, again]) == {first: [RED, GREEN], again: [RED, RED]}
    assert count(tmp_path / "history.db", "images") == 2
    assert count(tmp_path / "history.db", "message_images") == 4


async def test_a_message_and_its_images_are_one_transaction(store: Store, tmp_path: Path) -> None:
    """An image that cannot be stored takes its message with it: never a message that says it
    had two images with one stored, nor an image no message names."""
    path = tmp_path / "history.db"
    await ask(store, "before")  # the chat exists: the insert goes through the usual statement
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TRIGGER fail_second AFTER INSERT ON message_images WHEN NEW.position = 1"
            " BEGIN SELECT RAISE(ABORT, 'disk full, say'); END"
        )
    with pytest.raises(StorageError, match="disk full"):
        await ask(store, "two photos", [RED, GREEN])
    assert (count(path, "messages"), count(path, "images"), count(path, "message_images")) == (
        1,
        0,
        0,
    )
    with pytest.raises(StorageError, match="disk full"):  # a chat's first message, too
        await store.add_user_message(
            chat("new"), author_id="1", author_name="A", text="x", images=[RED, GREEN]
        )
    assert (count(path, "chats"), count(path, "messages"), count(path, "images")) == (1, 1, 0)
    one = await ask(store, "one photo", [BLUE])  # the store is still usable
    assert await store.message_images([one]) == {one: [BLUE]}


SIGKILL_WRITER = """
import asyncio, io, sys
from PIL import Image
from core.images import prepare_image_sync
from storage import open_store
from tests.cli_support import run_parley
from tests.test_conversation_fakes import chat

async def main(url):
    store = await open_store(url)
    number = 0
    while True:
        images = []
        for shade in range(number % 3 + 1):
            out = io.BytesIO()
            Image.new("RGB", (200, 150), (number % 256, shade * 80, 7)).save(out, "JPEG")
            images.append(prepare_image_sync(out.getvalue()))
        await store.add_user_message(
            chat(), author_id="1", author_name="A", text=f"m{number}", images=images
        )
        number += 1
        if number == 20:
            print("WRITING", flush=True)

asyncio.run(main(sys.argv[1]))
"""


async def test_a_sigkill_while_images_are_written_leaves_every_message_whole(
    tmp_path: Path,
) -> None:
    path = tmp_path / "history.db"
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        SIGKILL_WRITER,
        f"sqlite:///{path}",
        cwd=PROJECT_ROOT,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
    )
    assert child.stdout is not None
    line = await asyncio.wait_for(child.stdout.readline(), CHILD_TIMEOUT)
    assert line == b"WRITING\n"
    child.send_signal(signal.SIGKILL)
    await asyncio.wait_for(child.wait(), CHILD_TIMEOUT)

    store = await open_store(f"sqlite:///{path}")
    try:
        messages = await store.conversation_messages(1)
        found = await store.message_images([m.id for m in messages])
        assert len(messages) >= 20
        for message in messages:
            assert (
                len(found.get(message.id, []))
                == message.image_count
                == int(message.text[1:]) % 3 + 1
            )
    finally:
        await store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        orphans = db.execute(
            "SELECT count(*) FROM images WHERE id NOT IN (SELECT image FROM message_images)"
        ).fetchone()
        assert orphans == (0,)


@pytest.mark.all_backends
async def test_reset_keeps_the_images_with_the_old_conversation(store: Store) -> None:
    service = ConversationService(
        store,
        AsyncClient(provider=ScriptedProvider()),
        CoreSettings(_env_file=None, default_model="m"),
    )
    old = await ask(store, "see this", [RED])
    await service.reset(chat())
    new = await ask(store, "new start")
    await service.aclose()
    assert await store.message_images([old]) == {old: [RED]}
    context = (
        await prepare_context(store, CoreSettings(_env_file=None), chat(), new, group=False)
    ).messages
    assert context[1:] == [{"role": "user", "content": "new start"}]


# The context.


def image_part(image: MessageImage) -> dict[str, object]:
    url = f"data:{image.media_type};base64,{base64.b64encode(image.data).decode()}"
    return {"type": "image_url", "image_url": {"url": url}}


@pytest.mark.all_backends
async def test_the_newest_turns_carry_their_images_older_ones_say_image(store: Store) -> None:
    await ask(store, "first", [RED, GREEN], answer="two squares")
    await ask(store, "", [BLUE], answer="a blue square")
    await ask(store, "no picture", answer="ok")
    last = await ask(store, "and what is in the corner?")
    settings = CoreSettings(_env_file=None, system_prompt="SYS", context_image_turns=3)
    context = (await prepare_context(store, settings, chat(), last, group=False)).messages
    assert context == [
        {"role": "system", "content": "SYS"},
        {"role": "user", "content": f"{IMAGE_PLACEHOLDER} {IMAGE_PLACEHOLDER}\nfirst"},
        {"role": "assistant", "content": "two squares"},
        {"role": "user", "content": [image_part(BLUE)]},  # no caption: no text part
        {"role": "assistant", "content": "a blue square"},
        {"role": "user", "content": "no picture"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "and what is in the corner?"},
    ]
    wider = settings.model_copy(update={"context_image_turns": 4})
    context = (await prepare_context(store, wider, chat(), last, group=True)).messages
    assert context[1] == {
        "role": "user",
        "content": [
            {"type": "text", "text": "[Alice] first"},
            image_part(RED),
            image_part(GREEN),
        ],
    }
    assert context[3]["content"] == [{"type": "text", "text": "[Alice] "}, image_part(BLUE)]


@pytest.mark.all_backends
async def test_the_message_being_answered_always_carries_its_images(store: Store) -> None:
    await ask(store, "old", [GREEN], answer="green")
    last = await ask(store, "this one", [RED])
    settings = CoreSettings(_env_file=None, system_prompt="", context_image_turns=1)
    context = (await prepare_context(store, settings, chat(), last, group=False)).messages
    assert context == [
        {"role": "user", "content": f"{IMAGE_PLACEHOLDER}\nold"},
        {"role": "assistant", "content": "green"},
        {"role": "user", "content": [{"type": "text", "text": "this one"}, image_part(RED)]},
    ]


def test_the_budget_counts_text_only() -> None:
    """An image's data URL is hundreds of KB; counting it would push every older message out.
    The placeholders of older images are text, and counted."""
    history = [
        StoredMessage(1, 1, Role.USER, "a" * 40, MessageStatus.COMPLETE, image_count=2),
        StoredMessage(2, 1, Role.ASSISTANT, "b" * 40, MessageStatus.COMPLETE),
        StoredMessage(3, 1, Role.USER, "c" * 40, MessageStatus.COMPLETE, image_count=1),
    ]
    placeholders = f"{IMAGE_PLACEHOLDER} {IMAGE_PLACEHOLDER}\n"
    exact = 40 + 40 + len(placeholders) + 40
    sent = build_context(
        "", history, group=False, max_messages=10, max_chars=exact, images={3: [RED]}
    )
    assert sent == [
        {"role": "user", "content": placeholders + "a" * 40},
        {"role": "assistant", "content": "b" * 40},
        {"role": "user", "content": [{"type": "text", "text": "c" * 40}, image_part(RED)]},
    ]
    short = build_context(
        "", history, group=False, max_messages=10, max_chars=exact - 1, images={3: [RED]}
    )
    assert short == sent[2:]  # the oldest no longer fits, and a context never opens on a reply


# The export.


async def test_the_export_writes_each_image_once_and_names_its_file(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, database_url=f"sqlite:///{tmp_path}/h.db")
    store = await open_store(settings.database_url)
    try:
        await ask(store, "two", [RED, GREEN], answer="ok")
        await ask(store, "again", [RED])
    finally:
        await store.close()
    folder = tmp_path / "out" / "images"
    data = json.loads(await export_history(settings, "1", None, "json", images_dir=folder))
    messages = data["chats"][0]["conversations"][0]["messages"]
    files = [[image["file"] for image in m["images"]] for m in messages]
    assert files == [
        [str(folder / f"{RED.sha256}.jpg"), str(folder / f"{GREEN.sha256}.jpg")],
        [],
        [str(folder / f"{RED.sha256}.jpg")],
    ]
    assert messages[0]["images"][0] == {
        "file": str(folder / f"{RED.sha256}.jpg"),
        "sha256": RED.sha256,
        "media_type": "image/jpeg",
        "width": 64,
        "height": 48,
    }
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        f"{image.sha256}.jpg" for image in (RED, GREEN)
    )
    assert (folder / f"{GREEN.sha256}.jpg").read_bytes() == GREEN.data

    markdown = await export_history(settings, "1", None, "markdown", images_dir=folder)
    red, green = (f"![image]({folder / image.sha256}.jpg)" for image in (RED, GREEN))
    assert f"{red}\n\n{green}\n\ntwo\n" in markdown
    assert f"{red}\n\nagain\n" in markdown
    listed = json.loads(await export_history(settings, "1", None, "json"))  # no folder: no files
    assert listed["chats"][0]["conversations"][0]["messages"][0]["images"][0]["file"] is None


async def _one_image_chat(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path}/h.db"
    store = await open_store(url)
    try:
        await ask(store, "look", [BLUE])
        await ask(store, "again", [BLUE])  # the same image twice: one file
    finally:
        await store.close()
    return url


async def test_an_export_saved_to_a_file_has_its_images_beside_it(tmp_path: Path) -> None:
    url = await _one_image_chat(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    finished = await run_parley(
        *("history", "export", "--chat", "1", "--format", "markdown"),
        *("--output", str(tmp_path / "saved" / "chat.md")),
        env={"DATABASE_URL": url},
        cwd=work,
    )
    assert finished.code == 0, finished.err
    assert finished.out == ""
    markdown = (tmp_path / "saved" / "chat.md").read_text()
    # Named relative to the export, so the two read together wherever they are moved.
    assert f"![image](chat-images/{BLUE.sha256}.jpg)" in markdown
    image = tmp_path / "saved" / "chat-images" / f"{BLUE.sha256}.jpg"
    assert image.read_bytes() == BLUE.data
    assert list(work.iterdir()) == []  # nothing in the current directory
    assert "1 image(s)" in finished.err and "chat-images" in finished.err


async def test_an_export_printed_writes_no_files_and_says_how_to_get_the_images(
    tmp_path: Path,
) -> None:
    url = await _one_image_chat(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    finished = await run_parley(
        *("history", "export", "--chat", "1", "--format", "json"),
        env={"DATABASE_URL": url},
        cwd=work,
    )
    assert finished.code == 0, finished.err
    assert list(work.iterdir()) == []  # no ./parley-images left behind
    listed = json.loads(finished.out)["chats"][0]["conversations"][0]["messages"][0]["images"]
    assert listed[0]["file"] is None and listed[0]["sha256"] == BLUE.sha256
    assert finished.err.strip().splitlines() == [
        "1 image(s) left out: add --images DIR to write them into a folder, or --output FILE "
        "to save the export with its images beside it."
    ]


async def test_an_export_printed_with_images_dir_writes_them_there(tmp_path: Path) -> None:
    url = await _one_image_chat(tmp_path)
    finished = await run_parley(
        *("history", "export", "--chat", "1", "--format", "markdown", "--images", "pics"),
        env={"DATABASE_URL": url},
        cwd=tmp_path,
    )
    assert finished.code == 0, finished.err
    assert f"![image](pics/{BLUE.sha256}.jpg)" in finished.out
    assert (tmp_path / "pics" / f"{BLUE.sha256}.jpg").read_bytes() == BLUE.data
    assert finished.err == ""


@pytest.mark.parametrize(
    ("output", "images", "expected"),
    [
        (None, None, None),
        ("out/chat.md", None, "out/chat-images"),
        ("chat.json", None, "chat-images"),
        ("out/chat.md", "pics", "pics"),
        (None, "pics", "pics"),
    ],
)
def test_where_the_images_go(output: str | None, images: str | None, expected: str | None) -> None:
    found = images_dir_for(
        None if output is None else Path(output), None if images is None else Path(images)
    )
    assert found == (None if expected is None else Path(expected))
