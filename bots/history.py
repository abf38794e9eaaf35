"""`parley history`: which chats exist (`list`), and a chat's conversations (`export`) as JSON
(complete) or Markdown (to read).

`list` shows each chat's id exactly as `export --chat` takes it. In the JSON export the chat's
own id is `chat_id`; the database's row number is `row_id`, a name no one takes for the chat.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from bots.config import Settings
from bots.errors import HistoryNotFoundError
from storage import (
    ChatRecord,
    ChatSummary,
    ConversationRecord,
    MessageStatus,
    Role,
    Store,
    StoredMessage,
    open_store,
)

FORMATS = ("json", "markdown")


@dataclass(frozen=True, slots=True)
class _Conversation:
    record: ConversationRecord
    messages: list[StoredMessage]


@dataclass(frozen=True, slots=True)
class _Chat:
    record: ChatRecord
    conversations: list[_Conversation]


async def _load(
    store: Store, chat_id: str, platform: str | None, conversation: int | None, topic: str | None
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
        conversations = [
            _Conversation(record, await store.conversation_messages(record.id))
            for record in records
        ]
        if conversations or conversation is None:
            loaded.append(_Chat(chat, conversations))
    if not loaded:
        raise HistoryNotFoundError(f"Chat {where} has no conversation {conversation}.")
    return loaded


def _message_json(message: StoredMessage) -> dict[str, Any]:
    data = dataclasses.asdict(message)
    data["platform_message_ids"] = list(message.platform_message_ids)
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
                            "messages": [_message_json(m) for m in conversation.messages],
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
                lines += [message.text, ""]
    return "\n".join(lines).rstrip() + "\n"


async def export_history(
    settings: Settings,
    chat_id: str,
    platform: str | None,
    fmt: str,
    *,
    conversation: int | None = None,
    topic: str | None = None,
) -> str:
    """Every conversation of the chat(s) with this id (all threads, or only `topic`), or only
    `conversation`.

    Raises HistoryNotFoundError when nothing matches, StorageError when the database is
    missing or unusable, ValueError for an unknown format.
    """
    if fmt not in FORMATS:
        raise ValueError(f"Unknown format {fmt!r}: use one of {', '.join(FORMATS)}.")
    store = await open_store(settings.database_url, must_exist=True)
    try:
        chats = await _load(store, chat_id, platform, conversation, topic)
    finally:
        await store.close()
    return render_json(store.location, chats) if fmt == "json" else render_markdown(chats)


async def list_chats(settings: Settings, platform: str | None = None) -> list[ChatSummary]:
    """Every chat in the database (`platform`'s only, if given), most recently active first.

    Raises StorageError when the database is missing or unusable (it is never created here).
    """
    store = await open_store(settings.database_url, must_exist=True)
    try:
        return await store.list_chats(platform)
    finally:
        await store.close()
