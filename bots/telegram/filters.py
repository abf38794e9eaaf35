"""When the bot listens: filters for the routers (aiogram's way of declaring handler conditions)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from aiogram import Bot
from aiogram.filters import Command, Filter
from aiogram.types import Message, MessageEntity

from bots.telegram.chats import is_anonymous_admin, is_group

#: `/ask` or `/ask@this_bot` (aiogram's filter also reads captions, and checks the @bot).
_ASK = Command("ask")


class FromPerson(Filter):
    """A person wrote it: not another bot, not a channel. Anonymous admins of the group count.

    Bots answering bots can loop forever; channel posts and the automatic forwards of a linked
    channel are broadcasts, not questions.
    """

    async def __call__(self, message: Message) -> bool:
        if message.sender_chat is not None:
            return is_anonymous_admin(message)
        return message.from_user is not None and not message.from_user.is_bot


class AddressedToBot(Filter):
    """A group message meant for the bot: it @mentions the bot (in its text or a media caption)
    or replies to one of its messages, a sticker or photo included.

    Hands the handler `prompt`: the text or caption without the bot's @mention. Forwarded
    messages are never addressed to the bot (a mention in them was written for someone else).
    """

    async def __call__(self, message: Message, bot: Bot) -> bool | dict[str, Any]:
        if message.forward_origin is not None:
            return False
        if message.text is not None:
            text, entities = message.text, message.entities
        else:
            text, entities = message.caption or "", message.caption_entities
        me = await bot.me()
        mentions = [e for e in entities or () if _names_bot(e, text, me.id, me.username)]
        if not mentions and not _replies_to(message, me.id):
            return False
        plain_mentions = [e for e in mentions if e.type == "mention"]
        return {"prompt": _without(text, plain_mentions).strip()}


class MediaQuestion(Filter):
    """A message with a caption (or none) the bot should answer, and its question, handed to the
    handler as `prompt`: in a private chat, always; in a group, when `/ask` (for this bot)
    starts the caption or `AddressedToBot` says so (never when forwarded there). A caption's
    `/ask` is dropped from the question in both."""

    async def __call__(self, message: Message, bot: Bot) -> bool | dict[str, Any]:
        prompt = await media_question(message, bot)
        return False if prompt is None else {"prompt": prompt}


async def media_question(message: Message, bot: Bot) -> str | None:
    """The question a media message asks (its caption, less `/ask` or the bot's mention), or
    None when it is not for the bot (see `MediaQuestion`)."""
    group = is_group(message.chat)
    if group and message.forward_origin is not None:
        return None
    asked = await _ASK(message, bot)
    if isinstance(asked, dict):
        return (asked["command"].args or "").strip()
    if not group:
        return (message.caption or "").strip()
    addressed = await AddressedToBot()(message, bot)
    return addressed["prompt"] if isinstance(addressed, dict) else None


class UnknownCommand(Filter):
    """A `/command` not among `known`, when it is for this bot: any in a private chat; in a
    group, one addressed `@this_bot` or sent as a reply to the bot."""

    def __init__(self, known: Iterable[str]) -> None:
        self._known = frozenset(name.lower() for name in known)

    async def __call__(self, message: Message, bot: Bot) -> bool:
        text = message.text or ""
        if not text.startswith("/") or len(text) < 2 or text[1].isspace():
            return False
        name, _, target = text.split(maxsplit=1)[0][1:].partition("@")
        if name.lower() in self._known:
            return False
        if not is_group(message.chat):
            return True
        me = await bot.me()
        if target:
            return target.lower() == (me.username or "").lower()
        return _replies_to(message, me.id)


def _names_bot(entity: MessageEntity, text: str, bot_id: int, username: str | None) -> bool:
    if entity.type == "mention":
        return bool(username) and entity.extract_from(text).lower() == f"@{username}".lower()
    return entity.type == "text_mention" and entity.user is not None and entity.user.id == bot_id


def _replies_to(message: Message, bot_id: int) -> bool:
    """A reply to one of the bot's messages. In a forum topic every message "replies" to the
    topic's first (service) message, which is not a reply to anyone."""
    target = message.reply_to_message
    return (
        target is not None
        and target.forum_topic_created is None
        and target.from_user is not None
        and target.from_user.id == bot_id
    )


def _without(text: str, entities: list[MessageEntity]) -> str:
    """`text` minus the spans of `entities` (offsets are in UTF-16 code units)."""
    data = text.encode("utf-16-le")
    kept, position = [], 0
    for entity in sorted(entities, key=lambda e: e.offset):
        kept.append(data[position * 2 : entity.offset * 2])
        position = entity.offset + entity.length
    kept.append(data[position * 2 :])
    return b"".join(kept).decode("utf-16-le")
