"""One reply's `Surface` on Discord: what the streaming engine's send, edit and typing mean here.

Handles are message ids, as on Telegram. Discord's answers map to the engine's terms: a deleted
message or channel (404) and a channel the bot may not write in (403, e.g. a user who closed
their DMs) are `MessageGone`. 429s never reach the engine: discord.py's HTTP client waits them
out itself (sleeping `retry_after`, then retrying), so a rate-limited edit just takes longer.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import cast

import discord

from bots.discord.ratelimits import noting_answers
from bots.errors import MessageGone
from bots.write_budget import ChatBudgets, WriteBudget, WriteLimits
from storage import UndeliveredReply

MAX_LENGTH = 2000
#: Discord's rate-limit bucket for a channel's messages: 5 writes per 5 s (sends and edits
#: together). Ordinary edits leave one of them to first and final texts.
CHANNEL_LIMITS = WriteLimits(5, 5.0, reserve=1)
#: Every message Parley sends: model output saying @everyone, <@id> or <@&id> pings no one.
NO_PINGS = discord.AllowedMentions.none()


def clip(text: str) -> str:
    """Fit `text` in one message (a long system prompt or transcript is shown in part)."""
    return text if len(text) <= MAX_LENGTH else text[: MAX_LENGTH - 1] + "…"


class DiscordBudgets:
    """Every channel's write budget (a thread is a channel of its own, with its own bucket),
    shared by the replies streaming into it. discord.py also waits for the real buckets; this
    keeps the engine from asking more of them than they give, and spreads the turns fairly."""

    def __init__(self, limits: WriteLimits = CHANNEL_LIMITS) -> None:
        self._limits = limits
        self._budgets: ChatBudgets[int] = ChatBudgets()

    def of(self, channel_id: int) -> WriteBudget:
        return self._budgets.get(channel_id, self._limits)


class DiscordSurface:
    """Sends the first part as a reply to the user's message and each later part as a reply
    to the part before it, so a long answer reads as one chain of messages.

    A refusal (403) is kept in `refused` so the adapter can tell the operator.
    """

    max_length = MAX_LENGTH
    #: Discord renders the Markdown of every edit, so the text already shown is final as is.
    renders_final = False

    def __init__(
        self,
        question: discord.Message | discord.PartialMessage,
        budgets: DiscordBudgets,
        *,
        thread: discord.Thread | None = None,
    ) -> None:
        """`question`: the user's message, or (start-up repair, `bots.repair`) the bot's own
        message the reply goes on from. `thread`: one opened for the answer
        (`bots.discord.threads`); the first part goes there, not as a reply, since a message
        cannot reply across channels."""
        #: The thread opened for the answer, if any; where the answer goes either way.
        self.thread = thread
        self.channel = thread or question.channel
        self.budget = budgets.of(thread.id if thread else question.channel.id)
        #: When Discord answered the last send or edit (see `bots.streaming.Surface`).
        self.answered_at: float | None = None
        # A question deleted meanwhile must not stop the answer: it still belongs there.
        self._reference: discord.MessageReference | None = (
            None if thread else question.to_reference(fail_if_not_exists=False)
        )
        self.refused: discord.Forbidden | None = None

    @classmethod
    def resuming(
        cls, client: discord.Client, budgets: DiscordBudgets, reply: UndeliveredReply
    ) -> DiscordSurface:
        """The surface of a stored reply, taken up at its last message (`bots.repair`): in its
        thread if it has one, else in its channel."""
        channel = client.get_partial_messageable(int(reply.thread_id or reply.chat_id))
        message = discord.PartialMessage(channel=channel, id=int(reply.platform_message_ids[-1]))
        return cls(message, budgets)

    async def send(self, text: str, *, final: bool) -> int:
        with self._gone_on_refusal():
            if self._reference is None:  # the first part in a thread opened for the answer
                sent = await self.channel.send(text, allowed_mentions=NO_PINGS)
            else:
                sent = await self.channel.send(
                    text,
                    reference=self._reference,
                    allowed_mentions=NO_PINGS,
                    mention_author=False,
                )
        self._reference = sent.to_reference(fail_if_not_exists=False)
        return sent.id

    async def edit(self, handle: object, text: str, *, final: bool) -> None:
        # What each channel's get_partial_message does; this way it type-checks for every
        # channel type, the group DM (which a bot never joins) included.
        message = discord.PartialMessage(channel=self.channel, id=cast(int, handle))
        with self._gone_on_refusal():
            await message.edit(content=text, allowed_mentions=NO_PINGS)

    async def typing(self) -> None:
        await self.channel.typing()

    @contextlib.contextmanager
    def _gone_on_refusal(self) -> Iterator[None]:
        """Around one call: maps a refusal to `MessageGone`, and notes when Discord answered."""
        self.answered_at = None
        try:
            with noting_answers() as answers:
                try:
                    yield
                finally:
                    self.answered_at = answers[-1] if answers else None
        except discord.Forbidden as exc:
            self.refused = exc
            raise MessageGone(str(exc)) from exc
        except discord.NotFound as exc:
            raise MessageGone(str(exc)) from exc
