"""What a Discord message carries besides its text, as `bots.attachments.Attachment`s.

Discord states everything `bots.attachments.gather` checks before downloading: each attachment's
name, MIME type and size, and a voice message's duration; the bytes come from the CDN through
discord.py's `Attachment.read()` (a signed URL that expires: a 404 then is a download failure,
which `gather` turns into its "could not download" line).

Which attachments a message means: its own; or, when it has none, those of the message it
replies to ("@Parley what is in this picture?" as a reply to someone's photo), as the shared
rule for both platforms says.
"""

from __future__ import annotations

import discord

from bots.attachments import Attachment, Kind
from bots.discord.messages import replied_message

#: How the user's lines name each kind of attachment (`Attachment.label`).
VOICE_LABEL = "voice message"
AUDIO_LABEL = "audio"
IMAGE_LABEL = "image"
FILE_LABEL = "file"


def attachment_of(attachment: discord.Attachment) -> Attachment:
    """One Discord attachment, downloaded only when `gather` asks for it.

    A voice message (Discord marks it with a duration and waveform) and any `audio/*` file are
    audio; everything else is classified by `gather` from its name and MIME type."""
    mime_type = attachment.content_type
    major = (mime_type or "").split("/")[0]
    voice = attachment.is_voice_message()
    if voice or major == "audio":
        kind: Kind | None = Kind.AUDIO
        label = VOICE_LABEL if voice else AUDIO_LABEL
    else:
        kind = None
        label = IMAGE_LABEL if major == "image" else FILE_LABEL
    return Attachment(
        name=attachment.filename,
        mime_type=mime_type,
        size=attachment.size,
        fetch=attachment.read,
        kind=kind,
        duration=attachment.duration,
        label=label,
    )


async def attachments_of(message: discord.Message) -> list[Attachment]:
    """The message's attachments, or else those of the message it replies to.

    The replied-to message usually comes with the event (`reference.resolved`); when Discord
    left it out it is fetched, and one that cannot be (deleted, no access) has none."""
    if message.attachments:
        return [attachment_of(a) for a in message.attachments]
    replied = await replied_message(message)
    if replied is None:
        return []
    return [attachment_of(a) for a in replied.attachments]


def may_have_attachments(message: discord.Message) -> bool:
    """Whether answering `message` may need its attachments or the replied-to message's: when
    not, it goes to the service with no await first, keeping its place in the chat's order."""
    if message.attachments:
        return True
    reference = message.reference
    if reference is None or reference.message_id is None:
        return False
    resolved = reference.resolved or reference.cached_message
    if isinstance(resolved, discord.Message):
        return bool(resolved.attachments)
    return not isinstance(resolved, discord.DeletedReferencedMessage)
