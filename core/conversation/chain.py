"""Reply chains: a reply to an older message of the bot continues from that point (a branch).

What a bot hands the service for it: the platform id of the bot message replied to
(`ConversationService.reply(continue_from=...)`), found in the store when the bot's reply was
stored there; and, for a platform whose API can walk a chain (Discord's message references),
a way to fetch the chain when it was not (`FetchChain`), whose turns are the context then.
Both walks stop at `REPLY_CHAIN_MAX_TURNS`: a chain 500 replies deep costs no more than that.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from storage import MessageStatus, Role, StoredMessage

#: The most turns (a question and its answer) a reply chain is followed back through, in the
#: store or through a platform's API; the context's own limits cut it further.
REPLY_CHAIN_MAX_TURNS = 100


@dataclass(frozen=True, slots=True)
class ChainTurn:
    """One message of a chain read from the platform, not the store: the bot's own (an
    assistant turn) or a person's."""

    role: Role
    text: str
    author_id: str = ""
    author_name: str = ""


#: Reads the chain ending at the replied-to message from the platform, oldest first, at most
#: the number of messages it is given; [] when it cannot (the message was deleted).
FetchChain = Callable[[int], Awaitable[Sequence[ChainTurn]]]


def as_history(turns: Sequence[ChainTurn], question: StoredMessage) -> list[StoredMessage]:
    """Fetched turns as stored history ending with the stored `question`, for `build_context`.
    Their ids are negative, so no stored image or left-out reply is ever taken for theirs."""
    return [
        StoredMessage(
            -position,
            question.conversation_id,
            turn.role,
            turn.text,
            MessageStatus.COMPLETE,
            author_id=turn.author_id or None,
            author_name=turn.author_name or None,
        )
        for position, turn in enumerate(turns, start=1)
        if turn.text.strip()
    ] + [question]
