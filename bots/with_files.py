"""Answering a message that carries files: the order both bots follow, written once.

0. The message takes its place in the chat's order at once (`ConversationService.arrive`),
   so a message sent while its files are read is stored, and answered, after it: "and the
   corner?" right after a photo is asked about the photo. (A read slower than
   `core.conversation.service.ARRIVAL_HOLD_SECONDS` lets the others pass, and goes at the end.)
1. Read the files (`bots.attachments.gather`) while the chat shows the bot is working.
2. If nothing is left to answer, the message is stored in its place now, before any line is
   sent.
3. Quote what the voice said, as a reply to the voice message: the user sees what was heard
   before the answer to it.
4. Say which files were left out, and why, in one message.
5. Answer (the text, the transcript, the files' text, the images), or finish storing.

Each platform supplies its side as a `FilesReply`: how it shows it is working, where the quote
and the lines go, how it answers.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from bots.attachments import Attachment, gather, notes_text, transcript_quote
from core.config import CoreSettings
from core.conversation import Arrival
from storage import MessageImage, StorageError

log = logging.getLogger(__name__)


class FilesReply(Protocol):
    """A platform's side of answering one message that carries files."""

    def working(self) -> AbstractAsyncContextManager[object]:
        """Shows the bot is at work (typing) while the files are read."""

    async def quote(self, line: str) -> None:
        """Send the transcript's quote, as a reply to the voice message."""

    async def note(self, line: str) -> None:
        """Send the lines about files left out, as a reply to the question."""

    def arrive(self) -> Arrival:
        """Take the message's place in its chat's order (`ConversationService.arrive`)."""

    async def answer(self, text: str, images: Sequence[MessageImage], arrival: Arrival) -> None:
        """Answer the question in its place (`bots.relay.relay`)."""

    def remember(self, record: str, arrival: Arrival) -> Awaitable[None]:
        """Store a message nothing of which could be read, in its place
        (`ConversationService.remember`)."""


async def answer_with_files(
    reply: FilesReply, text: str, attachments: Sequence[Attachment], settings: CoreSettings
) -> None:
    """Read `attachments` with `text` and answer them on `reply`'s platform (see above).

    A line that cannot be sent costs only itself (the platform's `quote` and `note` swallow
    their own failures); a message that cannot be stored is logged: the user has had the
    lines that matter."""
    arrival = reply.arrive()
    try:
        async with reply.working():
            gathered = await gather(text, attachments, settings)
        arrival.audio_seconds = gathered.audio_seconds  # recorded when the message is stored
        remembered = None if gathered.answerable else reply.remember(gathered.record, arrival)
        if gathered.transcript is not None:
            await reply.quote(transcript_quote(gathered.transcript))
        if gathered.notes:
            await reply.note(notes_text(gathered.notes))
        if remembered is None:
            await reply.answer(gathered.text, gathered.images, arrival)
            return
    finally:  # cancelled, or failed, before the message was stored: the chat goes on
        arrival.abandon()
    try:
        await remembered
    except StorageError as exc:
        log.warning("Could not store a message whose files were not read: %s", exc)
