"""The listener that answers messages addressed to the bot: their text, and what they carry
(images, voice messages, audio and text files: `bots.discord.media`, read by
`bots.attachments.gather`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Coroutine, Sequence
from typing import Any

import discord
from discord.ext import commands

from bots.config import Settings
from bots.discord.access import asker_of, is_allowed
from bots.discord.chains import chain_reader, continued_id
from bots.discord.media import attachments_of, may_have_attachments
from bots.discord.messages import author_of, chat_of, chat_title, is_for_bot, prompt_of
from bots.discord.surface import DiscordBudgets, DiscordSurface, clip
from bots.discord.threads import ThreadOpener
from bots.errors import MessageGone
from bots.relay import relay
from bots.with_files import answer_with_files
from core.conversation import Arrival, ConversationService
from storage import MessageImage

log = logging.getLogger(__name__)

#: Answer to a message with nothing the bot reads: only a sticker. Replying (rather than
#: staying silent) matters in DMs and replies, where the person is clearly waiting.
STICKERS_ONLY = "I can't read stickers. Send me text, an image, a voice message or a text file."
#: Answer to a bare mention of the bot.
EMPTY_MENTION = "Yes? Mention me together with your question."


class ChatCog(commands.Cog):
    """Mentions, DMs and replies to the bot go to the conversation service, then stream back."""

    def __init__(
        self,
        bot: commands.Bot,
        settings: Settings,
        service: ConversationService,
        budgets: DiscordBudgets,
    ) -> None:
        self.bot = bot
        self.settings = settings
        self.service = service
        self.budgets = budgets
        self._threads = ThreadOpener(service)
        self._refused_channels: set[int] = set()
        self._in_flight: set[asyncio.Task[Any]] = set()
        self._stopping = False

    @property
    def in_flight(self) -> set[asyncio.Task[Any]]:
        """The handlers still answering a message, for the shutdown to wait for."""
        return self._in_flight

    def stop_taking(self) -> None:
        """The bot is stopping: messages from now on get no answer (Discord has no queue to
        leave them in, unlike Telegram's updates; the log names each one)."""
        self._stopping = True

    def start(self, work: Coroutine[Any, Any, Any]) -> None:
        """Run `work` (the start-up repair) in a task the shutdown treats like a reply's."""
        task = asyncio.create_task(work)
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    async def cog_unload(self) -> None:
        """At shutdown, before the connection closes: stop the replies still streaming. The
        engine shows each one's text so far and the service keeps it as 'interrupted'."""
        for task in self._in_flight:
            task.cancel()
        await asyncio.gather(*self._in_flight, return_exceptions=True)

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        # discord.py runs each listener call as its own task and never cancels it.
        task = asyncio.current_task()
        assert task is not None
        self._in_flight.add(task)
        try:
            await self._answer(message)
        finally:
            self._in_flight.discard(task)

    async def _answer(self, message: discord.Message) -> None:
        me = self.bot.user
        if me is None or not is_for_bot(message, me):
            return
        allowed_ids = self.settings.discord_allowed_ids
        if not is_allowed(
            allowed_ids,
            message.author,
            message.channel,
            message.guild,
            allow_guests=self.settings.allow_guests,
        ):
            log.debug("ignoring user %s: not in DISCORD_ALLOWED_IDS", message.author.id)
            return
        if self._stopping:
            log.info(
                "Discord: message %s in channel %s came while stopping; not answered",
                message.id,
                message.channel.id,
            )
            return
        if not _may_send(message):
            self._refused(message.channel, "no Send Messages permission")
            return
        text = prompt_of(message, me)
        thread = None
        if (
            self.settings.discord_auto_thread
            and (text or may_have_attachments(message))
            and ThreadOpener.wanted(message, me)
        ):  # the answer goes in a new thread: a chat of its own, no place in a queue to keep
            thread = await self._threads.open(message, text)
        surface = DiscordSurface(message, self.budgets, thread=thread)
        if may_have_attachments(message):
            # A message with attachments takes its place in the chat's order before they are
            # read (`bots.with_files`), after the replied-to message, if Discord left it out.
            await self._answer_with_attachments(message, surface, text)
        elif text:
            # No await before this: the message joins the chat's queue in arrival order.
            await self._relay(message, surface, text)
        else:
            await self._say(surface, STICKERS_ONLY if message.stickers else EMPTY_MENTION)
        if surface.refused is not None:
            self._refused(surface.channel, surface.refused.text)

    async def _answer_with_attachments(
        self, message: discord.Message, surface: DiscordSurface, text: str
    ) -> None:
        """Answer with the attachments read (`bots.with_files`), or say there is nothing."""
        attachments = await attachments_of(message)
        if not attachments and not text:
            await self._say(surface, STICKERS_ONLY if message.stickers else EMPTY_MENTION)
            return
        reply = _FilesReply(self, message, surface)
        await answer_with_files(reply, text, attachments, self.settings)
        surface.refused = surface.refused or reply.lines.refused

    async def _relay(
        self,
        message: discord.Message,
        surface: DiscordSurface,
        text: str,
        images: Sequence[MessageImage] = (),
        arrival: Arrival | None = None,
    ) -> None:
        me = self.bot.user
        assert me is not None  # a message reached the bot: it is logged in
        continue_from = continued_id(message, me)
        await relay(
            self.service,
            surface,
            chat_of(surface.channel),
            asker_of(message.author, message.channel, message.guild, self.settings),
            text,
            group=message.guild is not None,
            platform_message_id=str(message.id),
            chat_title=chat_title(message, surface.thread),
            delivery_timeout=self.settings.delivery_timeout_seconds,
            images=images,
            arrival=arrival,
            show_reasoning=self.settings.show_reasoning,
            continue_from=continue_from,
            fetch_chain=chain_reader(message, me) if continue_from is not None else None,
        )

    @staticmethod
    async def _say(surface: DiscordSurface, text: str) -> None:
        """One line from the bot itself (not the model's), in reply."""
        with contextlib.suppress(MessageGone):
            await surface.send(clip(text), final=True)

    def _refused(self, channel: object, reason: str) -> None:
        """Tell the operator about a channel the bot may not write in once, not at every
        mention there."""
        channel_id = getattr(channel, "id", 0)
        if channel_id in self._refused_channels:
            return
        self._refused_channels.add(channel_id)
        log.warning(
            "cannot answer in channel %s (%s): %s; give the bot Send Messages there",
            channel_id,
            getattr(channel, "name", None) or "DM",
            reason,
        )


class _FilesReply:
    """Discord's side of `bots.with_files`: typing while the attachments are read, the quote
    and the lines as replies to the message, then the answer on `surface`."""

    def __init__(self, cog: ChatCog, message: discord.Message, surface: DiscordSurface) -> None:
        self._cog = cog
        self._message = message
        self._surface = surface
        #: Where the quote and the lines go (the answer has its own surface), in the answer's
        #: thread if one was opened.
        self.lines = DiscordSurface(message, cog.budgets, thread=surface.thread)

    @contextlib.asynccontextmanager
    async def working(self) -> AsyncIterator[object]:
        async with contextlib.AsyncExitStack() as typing:
            with contextlib.suppress(discord.HTTPException):  # a hint only: never worth failing
                await typing.enter_async_context(self._surface.channel.typing())
            yield None

    async def quote(self, line: str) -> None:
        await self._cog._say(self.lines, line)

    async def note(self, line: str) -> None:
        await self._cog._say(self.lines, line)

    def arrive(self) -> Arrival:
        return self._cog.service.arrive(chat_of(self._surface.channel))

    async def answer(self, text: str, images: Sequence[MessageImage], arrival: Arrival) -> None:
        await self._cog._relay(self._message, self._surface, text, images, arrival)

    def remember(self, record: str, arrival: Arrival) -> Awaitable[None]:
        return self._cog.service.remember(
            chat_of(self._surface.channel),
            author_of(self._message.author),
            record,
            platform_message_id=str(self._message.id),
            chat_title=chat_title(self._message, self._surface.thread),
            arrival=arrival,
        )


def _may_send(message: discord.Message) -> bool:
    """What the cached permissions say; a stale cache still ends in a 403, handled later."""
    if message.guild is None:
        return True
    permissions = message.channel.permissions_for(message.guild.me)
    if isinstance(message.channel, discord.Thread):
        return permissions.send_messages_in_threads
    return permissions.send_messages
