"""Which Telegram replies stream as drafts (`sendMessageDraft`), and which drafts are live.

A draft is Telegram's native streaming (Bot API 9.3): in a private chat, the text so far shows
as a message being written, updated by one call each, which Telegram counts apart from the
chat's messages (it travels as a chat action); the reply is then sent once as a real message.
`STREAM_MODE=edit` keeps the old way everywhere: a message sent early and edited, about once a
second. Groups always take that way, as Telegram offers drafts only in private chats.

A server without the method (an older or self-hosted Bot API server answers 404), or one that
refuses it for a chat (400), sends that chat back to edits for as long as the bot runs; the first
refusal is logged, once. Each draft offers the user a stop button (`can_stop`); the
`stopped_message_generation` update it sends names the draft, which `live` maps back to its
chat, so the stop can end the reply like /stop.
"""

from __future__ import annotations

import enum
import itertools
import logging
import secrets
from collections import OrderedDict

from core.conversation import ChatRef

log = logging.getLogger(__name__)

#: Live drafts remembered for the stop button; the oldest are forgotten beyond this many (a
#: reply that ended without its final message, the message deleted, never sent it).
MAX_LIVE_DRAFTS = 1024
#: Draft ids are positive 31-bit integers, never zero.
_DRAFT_ID_SPACE = 2**31 - 1
#: Chats refused drafts, remembered to send them back to edits; more are forgotten, oldest first.
MAX_REFUSED_CHATS = 4096


class StreamMode(enum.StrEnum):
    """`STREAM_MODE`: how private replies stream."""

    #: A draft, then one message (the edit path in groups and where drafts are refused).
    DRAFT = "draft"
    #: A message sent early and edited, everywhere.
    EDIT = "edit"


class TelegramDrafts:
    """The process's drafts: the stream mode, the chats that refused drafts, the live drafts."""

    def __init__(self, mode: StreamMode = StreamMode.DRAFT) -> None:
        self.mode = mode
        self._refused: OrderedDict[int, None] = OrderedDict()
        self._live: OrderedDict[tuple[int, int], ChatRef] = OrderedDict()
        #: Fresh ids for each process, so a draft never animates from a previous run's.
        self._ids = itertools.count(secrets.randbelow(_DRAFT_ID_SPACE))
        self._told = False

    def allowed(self, chat_id: int) -> bool:
        """Replies in this private chat may stream as drafts."""
        return self.mode is StreamMode.DRAFT and chat_id not in self._refused

    def new_id(self) -> int:
        """A draft id no other draft of this process has now."""
        return next(self._ids) % _DRAFT_ID_SPACE + 1

    def refused(self, chat_id: int, reason: str) -> None:
        """Telegram refused a draft in this chat: its replies stream by edits from now on."""
        self._refused[chat_id] = None
        if len(self._refused) > MAX_REFUSED_CHATS:
            self._refused.popitem(last=False)
        if not self._told:
            self._told = True
            log.warning(
                "Telegram refused a message draft (%s); replies there stream by edits instead "
                "(STREAM_MODE=edit does so everywhere)",
                reason,
            )

    def opened(self, chat_id: int, draft_id: int, chat: ChatRef) -> None:
        """The draft is on the user's screen, with its stop button."""
        self._live[chat_id, draft_id] = chat
        self._live.move_to_end((chat_id, draft_id))
        if len(self._live) > MAX_LIVE_DRAFTS:
            self._live.popitem(last=False)

    def closed(self, chat_id: int, draft_id: int) -> None:
        """The draft became a message (or its reply ended): its stop button is gone."""
        self._live.pop((chat_id, draft_id), None)

    def live(self, chat_id: int, draft_id: int) -> ChatRef | None:
        """The conversation a live draft streams into; None for one that is over (a late press
        must not stop the next reply)."""
        return self._live.get((chat_id, draft_id))
