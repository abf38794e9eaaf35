"""`DISCORD_AUTO_THREAD`: a mention in a server channel opens a thread for its answer, and the
thread is the conversation.

The thread starts from the question (Discord's "start thread from message"), so the channel
shows the question with its thread under it and stays readable however long the talk grows.
Its history is the thread's own (`messages.chat_of`); it starts with its channel's model,
system prompt and persona (`ConversationService.carry_settings`), and in it the bot answers
every message without a mention (`messages.is_for_bot`: a thread the bot owns). A reply to
one of the bot's messages continues that chain where it is (`bots.discord.chains`), a DM or a
message already in a thread is answered in place. Where Discord will not open a thread (the
bot lacks Create Public Threads, a refusal), the answer goes in the channel as without the
setting, and the log says why once per channel: a question is never left unanswered for it.
"""

from __future__ import annotations

import logging

import discord

from bots.discord.chains import continued_id
from bots.discord.messages import chat_of
from core.conversation import ConversationService
from storage import StorageError

log = logging.getLogger(__name__)

#: Discord's limit on a thread's name.
THREAD_NAME_MAX = 100


def thread_name(text: str, author: discord.abc.User) -> str:
    """The question's first words on one line, as Discord's own "Create Thread" suggests; a
    question without text (only attachments) is named after who asked."""
    name = " ".join(text.split()) or f"{author.display_name}'s question"
    return name if len(name) <= THREAD_NAME_MAX else name[: THREAD_NAME_MAX - 1] + "…"


class ThreadOpener:
    """Opens the threads answers go in; remembers the channels where it could not."""

    def __init__(self, service: ConversationService) -> None:
        self._service = service
        self._refused_channels: set[int] = set()

    @staticmethod
    def wanted(message: discord.Message, me: discord.abc.User) -> bool:
        """Whether `message` gets a thread: a question in a server's text channel that does not
        continue a reply chain. Threads cannot hold threads, and a voice channel's chat
        cannot have them."""
        return (
            message.guild is not None
            and isinstance(message.channel, discord.TextChannel)
            and continued_id(message, me) is None
        )

    async def open(self, message: discord.Message, text: str) -> discord.Thread | None:
        """A new thread under `message` with its channel's settings, or None when Discord
        will not open one (the answer then goes in the channel)."""
        channel = message.channel
        assert isinstance(channel, discord.TextChannel) and message.guild is not None  # wanted()
        permissions = channel.permissions_for(message.guild.me)
        if not (permissions.create_public_threads and permissions.send_messages_in_threads):
            self._refused(
                channel, "no Create Public Threads or Send Messages in Threads permission"
            )
            return None
        try:
            thread = await message.create_thread(name=thread_name(text, message.author))
        except discord.HTTPException as exc:  # 403 from stale cached permissions, 400, 5xx
            self._refused(channel, f"Discord refused the thread: {exc}")
            return None
        try:
            await self._service.carry_settings(chat_of(channel), chat_of(thread))
        except StorageError as exc:  # the answer still goes on, with the operator's defaults
            log.warning("thread %s starts without its channel's settings: %s", thread.id, exc)
        return thread

    def _refused(self, channel: discord.TextChannel, reason: str) -> None:
        if channel.id in self._refused_channels:
            return
        self._refused_channels.add(channel.id)
        log.warning(
            "cannot open threads in channel %s (%s): %s; answering in the channel instead "
            "(give the bot Create Public Threads there, or set DISCORD_AUTO_THREAD=False)",
            channel.id,
            channel.name,
            reason,
        )
