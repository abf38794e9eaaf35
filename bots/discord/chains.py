"""Discord reply chains (as llmcord): a reply to any message of the bot continues from it.

The service finds the replied-to answer in the store and rebuilds its chain there; when the
store does not have it (a database started afresh, a message of the bot it never kept), the
chain is read through the API instead, each message's `reference` followed with
`fetch_message` (llmcord's walk), up to the number of messages the service asks for.
"""

from __future__ import annotations

from collections.abc import Sequence

import discord

from bots.discord.messages import prompt_of, replied_message
from bots.reasoning_view import without_block
from bots.relay import HISTORY_CUT_NOTE
from core.conversation import ChainTurn, FetchChain
from storage import Role


def continued_id(message: discord.Message, me: discord.abc.User) -> str | None:
    """The id of the message `message` replies to, when it may be the bot's (Discord did not
    say whose it is, or says it is the bot's); None for a reply to a deleted message, to
    someone else's, or to nothing."""
    reference = message.reference
    if reference is None or reference.message_id is None:
        return None
    replied = reference.resolved or reference.cached_message
    if isinstance(replied, discord.DeletedReferencedMessage):
        return None
    if isinstance(replied, discord.Message) and replied.author.id != me.id:
        return None
    return str(reference.message_id)


def chain_reader(message: discord.Message, me: discord.abc.User) -> FetchChain:
    """What reads the chain `message` continues through the API, for the service to call
    only when the store lacks it."""

    async def read(most: int) -> Sequence[ChainTurn]:
        return await fetch_chain(message, me, most)

    return read


async def fetch_chain(message: discord.Message, me: discord.abc.User, most: int) -> list[ChainTurn]:
    """The chain ending at the message `message` replies to, oldest first, at most `most`
    messages; [] unless that message is the bot's. The parts of one long answer (each a reply
    to the one before) become one turn. A message that cannot be fetched (deleted, no access)
    ends the chain there."""
    current = await replied_message(message)
    if current is None or current.author.id != me.id:
        return []
    turns: list[ChainTurn] = []
    fetched = 0
    while current is not None and fetched < most:
        fetched += 1
        role = Role.ASSISTANT if current.author.id == me.id else Role.USER
        text = _answer(current.content) if role is Role.ASSISTANT else prompt_of(current, me)
        if turns and turns[-1].role is role is Role.ASSISTANT:  # an earlier part of one answer
            turns[-1] = ChainTurn(role, f"{text}{turns[-1].text}")
        else:
            author = current.author
            turns.append(ChainTurn(role, text, str(author.id), author.display_name))
        current = await replied_message(current)
    turns.reverse()
    return turns


def _answer(content: str) -> str:
    """A message of the bot as the model said it: the reasoning block above the answer and the
    history-cut footer under it are the bot's display, never context (the store keeps neither
    in a reply's text)."""
    return without_block(content).removesuffix(f"\n\n{HISTORY_CUT_NOTE}")
