"""What a Discord message means to Parley: is it for the bot, in which chat, saying what.

Pure functions over discord.py objects, so the listener stays a short router.
"""

from __future__ import annotations

import logging

import discord

from core.conversation import Author, ChatRef

log = logging.getLogger(__name__)

PLATFORM = "discord"

#: Message types a person writes; joins, pins, thread starts and the like are never answered.
_CHAT_TYPES = frozenset({discord.MessageType.default, discord.MessageType.reply})


def chat_of(channel: discord.abc.Snowflake) -> ChatRef:
    """History is kept per channel, and per thread inside a thread (under its parent)."""
    if isinstance(channel, discord.Thread):
        return ChatRef(PLATFORM, str(channel.parent_id), str(channel.id))
    return ChatRef(PLATFORM, str(channel.id))


def chat_title(message: discord.Message, thread: discord.Thread | None = None) -> str:
    """The chat's name as people see it: "Server #channel", "Server #channel › thread", or in a
    DM the other person's name (the author: the bot never answers itself). `thread`: one
    opened for the answer, where the conversation goes on (`bots.discord.threads`)."""
    channel = thread or message.channel
    if message.guild is None:
        return message.author.display_name
    if isinstance(channel, discord.Thread):
        parent = channel.parent
        where = f"#{parent.name}" if parent is not None else f"#{channel.parent_id}"
        return f"{message.guild.name} {where} › {channel.name}"
    return f"{message.guild.name} #{getattr(channel, 'name', channel.id)}"


def author_of(user: discord.abc.User) -> Author:
    return Author(id=str(user.id), name=user.display_name)


def is_for_bot(message: discord.Message, me: discord.abc.User) -> bool:
    """A DM, a message in a thread the bot opened, a mention of the bot (or of its own role),
    or a reply to one of its messages.

    Other bots (and the bot itself) are never answered, so two bots cannot talk in a loop;
    `@everyone` is not a mention of the bot.
    """
    if message.author.bot or message.author.id == me.id or message.type not in _CHAT_TYPES:
        return False
    if message.guild is None:
        return True
    if isinstance(message.channel, discord.Thread) and message.channel.owner_id == me.id:
        return True  # a thread the bot opened for a conversation (`bots.discord.threads`)
    if any(user.id == me.id for user in message.mentions):
        return True
    own_role = message.guild.self_role
    if own_role is not None and own_role in message.role_mentions:
        return True
    reference = message.reference
    if reference is None:
        return False
    replied = reference.resolved or reference.cached_message
    return isinstance(replied, discord.Message) and replied.author.id == me.id


def prompt_of(message: discord.Message, me: discord.abc.User) -> str:
    """The message as the model should read it.

    The bot's own mention is removed; other mentions become the names people see
    (`<@123>` -> `@Alice`), since raw ids mean nothing to a model. Attachments are not named
    here: `bots.attachments.gather` reads them (or says why it cannot).
    """
    text = message.content
    own_role = message.guild.self_role if message.guild is not None else None
    for token in (f"<@{me.id}>", f"<@!{me.id}>", f"<@&{own_role.id}>" if own_role else None):
        if token:
            text = text.replace(token, "")
    for user in message.mentions:
        name = f"@{user.display_name}"
        text = text.replace(f"<@{user.id}>", name).replace(f"<@!{user.id}>", name)
    for role in message.role_mentions:
        text = text.replace(f"<@&{role.id}>", f"@{role.name}")
    for channel in message.channel_mentions:
        text = text.replace(f"<#{channel.id}>", f"#{channel.name}")
    return text.strip()


async def replied_message(message: discord.Message) -> discord.Message | None:
    """The message `message` replies to: from the payload when Discord sent it along, else
    through the API; None when there is none or it cannot be read (deleted, no access)."""
    reference = message.reference
    if reference is None or reference.message_id is None:
        return None
    known = reference.resolved or reference.cached_message
    if isinstance(known, discord.Message):
        return known
    if isinstance(known, discord.DeletedReferencedMessage):
        return None
    try:
        return await message.channel.fetch_message(reference.message_id)
    except discord.HTTPException as exc:  # 404 deleted, 403 no access
        log.info("message %s, replied to, could not be read: %s", reference.message_id, exc)
        return None
