"""A message's content when it is more than text: OpenAI-style parts, and the images in them.

The core's lingua franca is OpenAI's chat format: `content` is a string, or a list of parts,
`{"type": "text", "text": ...}` and `{"type": "image_url", "image_url": {"url": ...}}` where
the URL is a `data:` URL (base64) or an `http(s)` URL. OpenAI-compatible servers (Ollama's
`/v1` included) take that as it is; the Anthropic provider converts it here
(`anthropic_content`). g4f's `image=` / `images=[(data, name)]` arguments become such parts
on the last user message (`attach_images`). Budgets and usage estimates count a part list
through `content_chars`, so list content never reaches a `len(str(...))`.
"""

from __future__ import annotations

import base64
import binascii
import mimetypes
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import errors
from .tokens import Counter, estimate_tokens

#: Rough characters per token, for usage estimates and character budgets.
CHARS_PER_TOKEN = 4
#: What one image costs in a budget, in tokens: OpenAI's price of a 1024x1024 image in high
#: detail (85 base + 4 tiles x 170); Anthropic's (width x height / 750) is about 1,400 for it,
#: so this is a middle guess, not a bill.
IMAGE_TOKENS = 765
IMAGE_CHARS = IMAGE_TOKENS * CHARS_PER_TOKEN
#: What a message costs beyond its content: the chat template's role and separator tokens
#: (OpenAI's cookbook counts 3 a message, plus 3 priming the answer; rounded up).
MESSAGE_TOKENS = 4
#: The image formats every vision API Parley talks to accepts (Anthropic's list is the
#: narrowest), found by their first bytes.
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)
SUPPORTED_MEDIA_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})


def content_text(content: Any) -> str:
    """The text of a message's content: the string, or its text parts joined by newlines."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            part["text"]
            for part in content
            if isinstance(part, dict)
            and part.get("type") == "text"
            and isinstance(part.get("text"), str)
        )
    return str(content)


def is_image_part(part: Any) -> bool:
    return isinstance(part, dict) and part.get("type") in ("image_url", "image")


def image_count(content: Any) -> int:
    return sum(1 for part in content if is_image_part(part)) if isinstance(content, list) else 0


def content_chars(content: Any) -> int:
    """Characters `content` weighs in a budget: its text, plus `IMAGE_CHARS` per image."""
    return len(content_text(content)) + IMAGE_CHARS * image_count(content)


def chars_tokens(chars: int) -> int:
    """Tokens `chars` characters are estimated at (`CHARS_PER_TOKEN`), rounded up."""
    return -(-chars // CHARS_PER_TOKEN)


def message_tokens(content: Any, count: Counter = estimate_tokens) -> int:
    """Tokens a message with `content` takes in a prompt: its text by `count` (the model's
    tokenizer, `core.tokens.counter_for`, else the estimate), `IMAGE_TOKENS` per image and the
    template's `MESSAGE_TOKENS`. The context window is filled by this count."""
    return count(content_text(content)) + IMAGE_TOKENS * image_count(content) + MESSAGE_TOKENS


def text_part(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def image_url_part(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


def image_media_type(data: bytes) -> str | None:
    """The media type of the image `data` starts as (JPEG, PNG, GIF, WebP), or None.

    The one reading of image signatures in the core: `sniff_media_type` types what a g4f
    caller passes, `core.images` tells a damaged image from something else by it."""
    for signature, media_type in _SIGNATURES:
        if data.startswith(signature):
            return media_type
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def sniff_media_type(data: bytes, name: str | None = None) -> str:
    """The image's media type from its first bytes, else from `name`'s extension.

    Raises `InvalidRequestError` for what no vision API takes, so the caller hears it before
    a request is made rather than as a provider's 400."""
    sniffed = image_media_type(data)
    if sniffed is not None:
        return sniffed
    guessed = mimetypes.guess_type(name)[0] if name else None
    if guessed in SUPPORTED_MEDIA_TYPES:
        return guessed
    raise errors.InvalidRequestError(
        f"{name or 'the image'} is not a JPEG, PNG, GIF or WebP image."
    )


def data_url(data: bytes, media_type: str) -> str:
    """`data` as an RFC 2397 base64 data URL, the form OpenAI-compatible `image_url` parts take."""
    return f"data:{media_type};base64,{base64.b64encode(data).decode('ascii')}"


def image_bytes_part(data: bytes, name: str | None = None) -> dict[str, Any]:
    """An `image_url` part carrying `data` inline as a data URL."""
    if not data:
        raise errors.InvalidRequestError(f"{name or 'the image'} is empty (0 bytes).")
    return image_url_part(data_url(data, sniff_media_type(data, name)))


def parse_data_url(url: str) -> tuple[str, str] | None:
    """(media type, base64 data) of a base64 `data:` URL; None for any other URL."""
    if not url.startswith("data:"):
        return None
    header, sep, payload = url[5:].partition(",")
    if not sep or not header.endswith(";base64"):
        return None
    return header.removesuffix(";base64").split(";")[0] or "application/octet-stream", payload


def _read_image(value: Any) -> bytes | str:
    """Bytes, or a URL to pass on, from what g4f's `image=` accepts."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str) and value.startswith(("data:", "http://", "https://")):
        return value
    if isinstance(value, str | os.PathLike):
        path = Path(value)
        try:
            return path.read_bytes()
        except OSError as exc:
            raise errors.InvalidRequestError(
                f"Cannot read the image {path}: {exc.strerror or exc}."
            ) from None
    read = getattr(value, "read", None)
    if callable(read):  # an open file, as g4f's docs pass `open("photo.jpg", "rb")`
        data = read()
        if isinstance(data, bytes):
            return data
    raise errors.InvalidRequestError(
        f"An image must be bytes, a file, a path, a data URL or an http(s) URL, "
        f"not {type(value).__name__}."
    )


def _check_data_url(url: str) -> None:
    inline = parse_data_url(url)
    if inline is None:
        raise errors.InvalidRequestError("An image data URL must be base64-encoded.")
    try:
        base64.b64decode(inline[1], validate=True)
    except binascii.Error:
        raise errors.InvalidRequestError("An image data URL holds invalid base64.") from None


def image_part(value: Any, name: str | None = None) -> dict[str, Any]:
    """An `image_url` part from g4f's image argument (bytes, file, path, data or http URL)."""
    data = _read_image(value)
    if isinstance(data, str):
        if data.startswith("data:"):
            _check_data_url(data)
        return image_url_part(data)
    if name is None and isinstance(value, str | os.PathLike):
        name = os.fspath(value)
    return image_bytes_part(data, name if isinstance(name, str) else None)


def g4f_images(image: Any = None, image_name: str | None = None, images: Any = None) -> list[Any]:
    """The parts of g4f's `image=`, `image_name=` and `images=[(data, name), ...]` arguments."""
    parts = []
    if image is not None:
        parts.append(image_part(image, image_name))
    for entry in images or ():
        if isinstance(entry, list | tuple):
            data, name = (entry[0], entry[1] if len(entry) > 1 else None)
        else:
            data, name = entry, None
        parts.append(image_part(data, name))
    return parts


def attach_images(
    messages: list[dict[str, Any]], parts: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """`messages` with `parts` appended to the last user message (after its text).

    The message is replaced by a new dict; the caller's dicts and lists stay as they were.
    """
    if not parts:
        return messages
    for index in range(len(messages) - 1, -1, -1):
        message = messages[index]
        if message.get("role") == "user":
            content = message.get("content")
            head = list(content) if isinstance(content, list) else []
            if isinstance(content, str) and content:
                head = [text_part(content)]
            messages = list(messages)
            messages[index] = {**message, "content": head + list(parts)}
            return messages
    raise errors.InvalidRequestError("Images need a user message to go with.")


def _anthropic_part(part: Any) -> dict[str, Any]:
    if not isinstance(part, dict):
        return {"type": "text", "text": str(part)}
    kind = part.get("type")
    if kind == "text":
        return {"type": "text", "text": str(part.get("text") or "")}
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else image
        if not isinstance(url, str):
            raise errors.InvalidRequestError("An image_url part needs a URL.")
        inline = parse_data_url(url)
        if inline is None:
            return {"type": "image", "source": {"type": "url", "url": url}}
        media_type, data = inline
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }
    return dict(part)  # already Anthropic's (an "image" block), passed on as it is


def anthropic_content(content: Any) -> str | list[dict[str, Any]]:
    """Anthropic's form of a message's content: a string stays one; OpenAI's parts become
    Anthropic's blocks (`image_url` -> a base64 `image` block, or a `url` one)."""
    if isinstance(content, list):
        return [_anthropic_part(part) for part in content]
    return "" if content is None else str(content)
