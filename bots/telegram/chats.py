"""Who and where a Telegram message is, in the conversation service's terms."""

from __future__ import annotations

from aiogram.enums import ChatType
from aiogram.types import Chat, Message

from core.conversation import Author, ChatRef

PLATFORM = "telegram"
GROUP_TYPES = frozenset({ChatType.GROUP, ChatType.SUPERGROUP})
#: Shown as the author of a message an anonymous group admin sent.
ANONYMOUS_ADMIN = "Anonymous admin"


def is_group(chat: Chat) -> bool:
    return chat.type in GROUP_TYPES


def chat_ref(message: Message) -> ChatRef:
    """The history a message belongs to: its chat, or its forum topic.

    Only `is_topic_message` marks a real topic: a reply in a non-forum supergroup also carries a
    `message_thread_id` (the reply thread), which must not split the chat's history.
    """
    thread = message.message_thread_id if message.is_topic_message else None
    return ChatRef(PLATFORM, str(message.chat.id), str(thread) if thread else "")


def chat_title(message: Message) -> str:
    """The chat's name as Telegram shows it: a group's title, or in a private chat the other
    person's name."""
    return message.chat.full_name


def author_of(message: Message) -> Author:
    """The person behind a message; an anonymous admin speaks as the group itself."""
    if message.sender_chat is not None:
        name = message.author_signature or ANONYMOUS_ADMIN
        return Author(str(message.sender_chat.id), name)
    user = message.from_user
    if user is None:  # only service messages lack a sender; they never reach the handlers
        return Author("", ANONYMOUS_ADMIN)
    return Author(str(user.id), user.full_name or user.username or str(user.id))


def is_anonymous_admin(message: Message) -> bool:
    """Sent by an admin hidden behind the group's name (`sender_chat` is the group itself)."""
    return message.sender_chat is not None and message.sender_chat.id == message.chat.id
