"""`/image PROMPT`: an image drawn on request, for both bots; and its per-chat switch.

The image comes from the core's g4f-style image API (`client.images.generate`, an
OpenAI-compatible `/images/generations` behind it) with the operator's IMAGE_MODEL; the bots
only send it. Drawing is off until IMAGE_MODEL is set, and a chat's admins may turn it off
(`/image off`): images cost far more than text, and not every group wants them. The exact
words "on" and "off" are the switch, never a prompt: nobody asks for a picture of "off".

A drawing is not part of the conversation's history: the model that chats never sees it, and
the prompt is the user's to repeat. (The image API answers with no text the chat model could
use; sending the picture back as a user image would cost a vision call per turn.)
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from enum import StrEnum

from bots.splitting import utf16_length
from core import errors
from core.budgets import OverBudget
from core.config import CoreSettings
from core.content import sniff_media_type
from core.conversation import Author, ChatRef, ConversationService
from core.usage import UsageKind

#: What `/image` alone answers.
IMAGE_USAGE = "Usage: /image PROMPT (describe the picture).\nAdmins: /image off or /image on."
#: Longest caption Telegram allows under a photo, in UTF-16 code units as Telegram counts (an
#: emoji often counts 2); Discord's 2,000 characters fit it too.
CAPTION_MAX_CHARS = 1024


class Switch(StrEnum):
    ON = "on"
    OFF = "off"


@dataclass(frozen=True, slots=True)
class Drawing:
    """An image ready to send: its bytes, type and a file name, and the caption."""

    data: bytes = field(repr=False)
    media_type: str
    file_name: str
    caption: str


def parse_image_args(args: str | None) -> Switch | str | None:
    """`/image`'s argument: the switch, the prompt, or None when there is none."""
    prompt = (args or "").strip()
    if not prompt:
        return None
    word = prompt.lower()
    if word in (Switch.ON, Switch.OFF):
        return Switch(word)
    return prompt


async def draw(
    service: ConversationService,
    settings: CoreSettings,
    chat: ChatRef,
    prompt: str,
    author: Author,
) -> Drawing:
    """Draw `prompt` for `chat`, at `author`'s request: their budgets are checked first, as for
    a chat reply, and the image is recorded as their usage.

    Raises `ImageGenerationOffError` when drawing is off (IMAGE_MODEL unset, or the chat's
    admins turned it off), `OverBudgetError` when a budget of theirs is spent,
    `ContentPolicyError` when the model refuses the prompt, and the provider's errors
    otherwise: `core.errors.describe` gives each one's line for the user.
    """
    if not settings.image_model:
        raise errors.ImageGenerationOffError("/image: IMAGE_MODEL is not set.")
    if (await service.chat_config(chat)).image_generation is False:
        raise errors.ImageGenerationOffError(
            f"/image is turned off in {chat}.",
            "Drawing images is turned off in this chat. Its admins can turn it on with /image on.",
        )
    # Admitted like a chat reply, so racing /image requests cannot all pass before any is
    # charged (found in review); released once the drawing is charged.
    admitted = await service.gate.budgets.admit(author, chat)
    if isinstance(admitted, OverBudget):
        raise errors.OverBudgetError(f"/image by {author.id} in {chat}: over budget", admitted.line)
    try:
        response = await service.client.images.generate(
            prompt, model=settings.image_model, response_format="b64_json", size=settings.image_size
        )
        if response.data:  # the images were made, so they are paid for
            await service.record_usage(
                chat,
                author,
                UsageKind.IMAGE,
                response.model or settings.image_model,
                response.provider,
                images_out=len(response.data),
            )
    finally:
        await admitted.release()
    if not response.data or not response.data[0].b64_json:
        raise errors.EmptyResponseError(f"{settings.image_model} answered with no image.")
    try:
        data = base64.b64decode(response.data[0].b64_json, validate=True)
        media_type = sniff_media_type(data)
    except (binascii.Error, ValueError) as exc:  # InvalidRequestError is a ValueError too
        raise errors.ResponseStatusError(
            f"{settings.image_model} answered with something that is not an image: {exc}"
        ) from exc
    extension = media_type.removeprefix("image/").replace("jpeg", "jpg")
    return Drawing(data, media_type, f"image.{extension}", _caption(prompt))


async def switch_image_generation(
    service: ConversationService, chat: ChatRef, switch: Switch
) -> str:
    """Turn drawing on or off in `chat` (the caller checked the user may); the line saying so."""
    await service.set_image_generation(chat, switch is Switch.ON)
    if switch is Switch.ON:
        return "Drawing images is on in this chat: /image PROMPT."
    return "Drawing images is off in this chat. Admins can turn it back on with /image on."


def _caption(prompt: str) -> str:
    shown = " ".join(prompt.split())
    if utf16_length(shown) <= CAPTION_MAX_CHARS:
        return shown
    room = CAPTION_MAX_CHARS - 1  # the "…"
    cut = 0
    for character in shown:
        room -= utf16_length(character)
        if room < 0:
            break
        cut += 1
    return shown[:cut] + "…"
