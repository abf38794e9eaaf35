"""`parley history`: which chats exist (`list`), and a chat's conversations (`export`) as JSON
(complete) or Markdown (to read).

`list` shows each chat's id exactly as `export --chat` takes it. In the JSON export the chat's
own id is `chat_id`; the database's row number is `row_id`, a name no one takes for the chat.

The images users sent are written as files into a folder, each named by the SHA-256 of its
bytes, so an image two messages carry is one file and exporting again rewrites nothing. The
JSON lists each message's images with their file; the Markdown shows them inline. Where the
folder is, is the CLI's choice (`bots.cli`): beside an export written to a file, named after
it, with the file names relative to the export, so the transcript reads with its pictures
wherever the two are moved together; nowhere for an export printed to the terminal, unless
asked for (a command that prints should not leave files in the current directory).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bots.config import Settings
from bots.errors import HistoryNotFoundError
from storage import (
    ChatRecord,
    ChatSummary,
    ConversationRecord,
    MessageImage,
    MessageStatus,
    Role,
    Store,
    StoredMessage,
    open_store,
)

FORMATS = ("json", "markdown")
_EXTENSIONS = {"image/jpeg": ".jpg", "image/png": ".png", "image/webp": ".webp"}


@dataclass(frozen=True, slots=True)
class _ExportedImage:
    image: MessageImage
    sha256: str
    #: Where it was written, as the export names it; None when no folder was given.
    file: str | None
    #: The file written, as this process reaches it.
    target: Path | None


@dataclass(frozen=True, slots=True)
class _Conversation:
    record: ConversationRecord
    messages: list[StoredMessage]
    images: dict[int, list[_ExportedImage]]


@dataclass(frozen=True, slots=True)
class _Chat:
    record: ChatRecord
    conversations: list[_Conversation]


@dataclass(frozen=True, slots=True)
class HistoryExport:
    """An export's text, and what became of its images."""

    text: str
    #: Distinct images the exported messages carry (one sent twice counts once).
    images: int
    #: The folder they were written into; None when they were only listed.
    images_dir: Path | None


@dataclass(frozen=True, slots=True)
class _Folder:
    """Where images are written, and what their names in the export are relative to."""

    path: Path
    links_from: Path | None

    def name(self, file_name: str) -> tuple[Path, str]:
        """The file to write, and the name the export gives it."""
        target = self.path / file_name
        if self.links_from is None:
            return target, str(target)
        return target, Path(os.path.relpath(target, self.links_from)).as_posix()


def _name_files(
    images: dict[int, list[MessageImage]], folder: _Folder | None
) -> dict[int, list[_ExportedImage]]:
    named: dict[int, list[_ExportedImage]] = {}
    for message_id, found in images.items():
        named[message_id] = []
        for image in found:
            sha256 = image.sha256
            file = target = None
            if folder is not None:
                target, file = folder.name(sha256 + _EXTENSIONS.get(image.media_type, ".bin"))
            named[message_id].append(_ExportedImage(image, sha256, file, target))
    return named


def _all_images(chats: list[_Chat]) -> list[_ExportedImage]:
    return [
        exported
        for chat in chats
        for conversation in chat.conversations
        for found in conversation.images.values()
        for exported in found
    ]


def _write_files(chats: list[_Chat]) -> None:
    """Write every exported image to its file; a file already there has these very bytes
    (its name is their hash), so it is left as it is."""
    for exported in _all_images(chats):
        path = exported.target
        if path is not None and not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(exported.image.data)


async def _load(
    store: Store,
    chat_id: str,
    platform: str | None,
    conversation: int | None,
    topic: str | None,
    folder: _Folder | None,
) -> list[_Chat]:
    where = f"{chat_id!r}" + (f" topic {topic!r}" if topic else "")
    where += f" on {platform}" if platform else ""
    chats = await store.find_chats(chat_id, platform)
    if topic is not None:
        chats = [chat for chat in chats if chat.thread_id == topic]
    if not chats:
        raise HistoryNotFoundError(f"No chat {where} in {store.location}.")
    loaded = []
    for chat in chats:
        records = await store.conversations(chat.id)
        if conversation is not None:
            records = [r for r in records if r.id == conversation]
        conversations = []
        for record in records:
            messages = await store.conversation_messages(record.id)
            images = await store.message_images([m.id for m in messages if m.image_count])
            conversations.append(_Conversation(record, messages, _name_files(images, folder)))
        if conversations or conversation is None:
            loaded.append(_Chat(chat, conversations))
    if not loaded:
        raise HistoryNotFoundError(f"Chat {where} has no conversation {conversation}.")
    return loaded


def _message_json(message: StoredMessage, images: list[_ExportedImage]) -> dict[str, Any]:
    data = dataclasses.asdict(message)
    data["platform_message_ids"] = list(message.platform_message_ids)
    data["images"] = [
        {
            "file": exported.file,
            "sha256": exported.sha256,
            "media_type": exported.image.media_type,
            "width": exported.image.width,
            "height": exported.image.height,
        }
        for exported in images
    ]
    return data


def _chat_json(record: ChatRecord) -> dict[str, Any]:
    """The chat's fields, its row number renamed: a bare `id` reads as the chat's id."""
    data = dataclasses.asdict(record)
    return {"row_id": data.pop("id"), **data}


def render_json(location: str, chats: list[_Chat]) -> str:
    return json.dumps(
        {
            "database": location,
            "chats": [
                {
                    **_chat_json(chat.record),
                    "conversations": [
                        {
                            "id": conversation.record.id,
                            "created_at": conversation.record.created_at,
                            "messages": [
                                _message_json(m, conversation.images.get(m.id, []))
                                for m in conversation.messages
                            ],
                        }
                        for conversation in chat.conversations
                    ],
                }
                for chat in chats
            ],
        },
        ensure_ascii=False,
        indent=2,
    )


def _speaker(message: StoredMessage) -> str:
    if message.role is Role.USER:
        return message.author_name or message.author_id or "user"
    return message.model or "assistant"


def render_markdown(chats: list[_Chat]) -> str:
    lines: list[str] = []
    for chat in chats:
        record = chat.record
        thread = f", thread {record.thread_id}" if record.thread_id else ""
        title = f": {record.title}" if record.title else ""
        lines += [f"# {record.platform} chat {record.chat_id}{thread}{title}", ""]
        if record.model or record.system_prompt:
            lines += [f"Model: {record.model or '(default)'}"]
            lines += [f"System prompt: {record.system_prompt or '(default)'}", ""]
        for conversation in chat.conversations:
            started = conversation.record.created_at
            lines += [f"## Conversation {conversation.record.id} (started {started})", ""]
            for message in conversation.messages:
                note = ""
                if message.status is not MessageStatus.COMPLETE:
                    note = f" · _{message.status.value}" + (
                        f": {message.error}_" if message.error else "_"
                    )
                lines += [f"**{_speaker(message)}** · {message.created_at}{note}", ""]
                for exported in conversation.images.get(message.id, []):
                    shown = f"![image]({exported.file})" if exported.file else "[image]"
                    lines += [shown, ""]
                lines += [message.text, ""]
    return "\n".join(lines).rstrip() + "\n"


async def export_chats(
    settings: Settings,
    chat_id: str,
    platform: str | None,
    fmt: str,
    *,
    conversation: int | None = None,
    topic: str | None = None,
    images_dir: Path | None = None,
    links_from: Path | None = None,
) -> HistoryExport:
    """Every conversation of the chat(s) with this id (all threads, or only `topic`), or only
    `conversation`. With `images_dir`, the messages' images are written into it (created if
    there are any) and the export names their files, relative to `links_from` when given (the
    folder the export is saved in); without, it lists them without files.

    Raises HistoryNotFoundError when nothing matches, StorageError when the database is
    missing or unusable, ValueError for an unknown format, OSError when an image cannot be
    written.
    """
    if fmt not in FORMATS:
        raise ValueError(f"Unknown format {fmt!r}: use one of {', '.join(FORMATS)}.")
    folder = None if images_dir is None else _Folder(images_dir, links_from)
    store = await open_store(settings.database_url, must_exist=True)
    try:
        chats = await _load(store, chat_id, platform, conversation, topic, folder)
    finally:
        await store.close()
    await asyncio.to_thread(_write_files, chats)
    text = render_json(store.location, chats) if fmt == "json" else render_markdown(chats)
    distinct = len({exported.sha256 for exported in _all_images(chats)})
    return HistoryExport(text, distinct, images_dir if distinct else None)


async def list_chats(settings: Settings, platform: str | None = None) -> list[ChatSummary]:
    """Every chat in the database (`platform`'s only, if given), most recently active first.

    Raises StorageError when the database is missing or unusable (it is never created here).
    """
    store = await open_store(settings.database_url, must_exist=True)
    try:
        return await store.list_chats(platform)
    finally:
        await store.close()
