"""Images users send, made fit for a model: checked, downscaled, re-encoded, as data URLs.

Every image is decoded and re-encoded, even a small JPEG that would pass as it is: the result
is always one of two formats the vision APIs all take, its EXIF rotation is applied to the
pixels (phones store photos sideways and say so in EXIF, which re-encoding would otherwise
lose), its metadata (a phone photo's GPS position among it) never reaches the model or the
database, and the same photo sent twice gives the same bytes, which storage keeps once.

Only JPEG (MPO too, the multi-picture JPEG some phones write), PNG and WebP are opened: naming
the formats keeps Pillow from trying its other decoders on what a stranger uploaded (EPS runs
Ghostscript). The decoding is CPU work of tens of milliseconds, so `prepare_image` runs it in a
worker thread and the event loop keeps serving other chats.
"""

from __future__ import annotations

import asyncio
import io
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass

# Importing a plugin registers its format; Pillow would load WebP's only on first demand.
from PIL import (  # noqa: F401
    Image,
    ImageOps,
    JpegImagePlugin,
    PngImagePlugin,
    UnidentifiedImageError,
    WebPImagePlugin,
)

from core import content
from core.config import DEFAULT_IMAGE_MAX_BYTES
from core.errors import (
    CorruptImageError,
    EmptyImageError,
    ImageError,
    ImageTooLargeError,
    UnsupportedImageError,
)
from core.figures import megabytes
from storage import MessageImage

#: The longest side an image is sent with; larger ones are scaled down, keeping the aspect.
#: The vision APIs scale larger images down themselves (OpenAI to 2,048, then 768 on the short
#: side), so more pixels would cost upload and storage and show the model nothing more.
MAX_LONG_SIDE = 2048
#: JPEG quality of the re-encoded image: no visible loss for photos or text in screenshots.
JPEG_QUALITY = 85
#: Most bytes a prepared image may have, so every vision API takes it. Anthropic's limit is
#: the lowest: 5 MB (5,242,880) of the image's *base64* form ("image exceeds 5 MB maximum:
#: 5272940 bytes > 5242880 bytes" is its 400), which is 4/3 of the bytes; OpenAI and Gemini
#: take 20 MB. So 3.75 MB of bytes, whatever the provider a chat later switches to.
SEND_MAX_BYTES = 5 * 1024 * 1024 * 3 // 4
#: How much further than the byte ratio says each shrinking step goes, so one step mostly does.
_SHRINK_MARGIN = 0.9
#: The formats Pillow may open, as Pillow names them ("JPEG" opens MPO files too).
ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP")
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
_SIXTEEN_TO_EIGHT_BITS = 1 / 256
#: The same formats as media types: a file starting as one of them that Pillow cannot open is
#: damaged, not something else.
_ACCEPTED_MEDIA_TYPES = frozenset({"image/jpeg", "image/png", "image/webp"})


def _open(raw: bytes) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(raw), formats=ACCEPTED_FORMATS)
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(f"Image refused as a decompression bomb: {exc}") from exc
    except UnidentifiedImageError as exc:
        if content.image_media_type(raw) in _ACCEPTED_MEDIA_TYPES:
            raise CorruptImageError(f"Image header cannot be read: {exc}") from exc
        raise UnsupportedImageError(
            f"Not an image in an accepted format ({', '.join(ACCEPTED_FORMATS)}); "
            f"it starts with {raw[:8]!r}."
        ) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise CorruptImageError(f"Image header cannot be read: {exc}") from exc
    # Pillow raises above twice its limit and only warns between once and twice; refuse both.
    # Only a JPEG shrinks while it decodes, so the others have a lower limit of their own.
    limit = Image.MAX_IMAGE_PIXELS
    if image.format != "JPEG":
        limit = min(limit or UNSHRUNK_MAX_PIXELS, UNSHRUNK_MAX_PIXELS)
    if limit is not None and image.width * image.height > limit:
        raise ImageTooLargeError(
            f"Image of {image.width}x{image.height} pixels is over the limit of {limit} "
            "(a decompression bomb, or a picture no model needs at that size)."
        )
    return image


#: Pixels a PNG or WebP may have: it decodes at full size (found in review: a 3.4 KB lossless
#: WebP of 9400x9400 took 1.5 GB to decode). 40 MP is a 7,300 px square, far above any screen.
UNSHRUNK_MAX_PIXELS = 40_000_000
#: A JPEG whose long side is at least twice this is decoded at a reduced scale (1/2, 1/4 or
#: 1/8: its DCT blocks allow it, Pillow's `draft`), the smallest that keeps this long side: a
#: 12-MP photo (4,000 px) then decodes at 2,000 px, in a quarter of the memory and about a
#: third of the time, and goes at that size. So a big JPEG goes with a long side between this
#: and `MAX_LONG_SIDE`; above both, OpenAI still scales to 2,048 px and Anthropic to 1,568 px.
DRAFT_MIN_LONG_SIDE = 1_900
#: Images decoding at once, process-wide: each may take hundreds of MB, and the default thread
#: pool (which asyncio's DNS lookups share) has several workers per core.
DECODE_SLOTS = threading.BoundedSemaphore(2)


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in _ALPHA_MODES or "transparency" in image.info


def _saved(image: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def _on_white(image: Image.Image) -> Image.Image:
    """An RGBA image flattened onto white: what a chat app shows behind a transparent sticker
    or logo, and what JPEG (which has no transparency) can carry."""
    background = Image.new("RGBA", image.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, image).convert("RGB")


def _jpeg_within_cap(image: Image.Image) -> tuple[bytes, str, Image.Image]:
    """JPEG at `JPEG_QUALITY`, scaled down until it fits `SEND_MAX_BYTES`: a photo of 2,048 px
    needs no step; one of pure noise needs one or two."""
    while True:
        data = _saved(image, "JPEG", quality=JPEG_QUALITY)
        if len(data) <= SEND_MAX_BYTES:
            return data, "image/jpeg", image
        scale = math.sqrt(SEND_MAX_BYTES / len(data)) * _SHRINK_MARGIN
        size = (max(1, int(image.width * scale)), max(1, int(image.height * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS)


def _eight_bit(image: Image.Image) -> Image.Image:
    """A 16-bit greyscale image (a PNG opens as "I;16", or "I") as 8-bit "L", its values scaled
    from 0-65535 to 0-255: a plain conversion clips them, and mid-grey comes out white."""
    if image.mode != "I" and not image.mode.startswith("I;16"):
        return image
    return image.convert("I").point(lambda value: value * _SIXTEEN_TO_EIGHT_BITS).convert("L")


def _encode(image: Image.Image) -> tuple[bytes, str, Image.Image]:
    """The bytes, their media type, and the image they hold (smaller than `image` when it had
    to shrink to fit `SEND_MAX_BYTES`).

    PNG when some pixel is see-through (JPEG would paint it black) and the PNG fits the cap;
    a transparent image whose PNG does not (a noisy or photographic one, up to 16 MB at
    2,048 px) is flattened onto white and goes as JPEG. Everything else is JPEG."""
    image = _eight_bit(image)
    if _has_alpha(image):
        image = image.convert("RGBA")
        if image.getchannel("A").getextrema() != (255, 255):
            png = _saved(image, "PNG", optimize=False)
            if len(png) <= SEND_MAX_BYTES:
                return png, "image/png", image
            image = _on_white(image)
    if image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    return _jpeg_within_cap(image)


def prepare_image_sync(raw: bytes, *, max_bytes: int = DEFAULT_IMAGE_MAX_BYTES) -> MessageImage:
    """`raw` as it goes to the model and into the history: long side at most `MAX_LONG_SIDE`,
    at most `SEND_MAX_BYTES`, upright, JPEG or PNG, no metadata.

    Raises an `ImageError` whose `user_hint` is the line to show the user: `EmptyImageError`,
    `ImageTooLargeError` (over `max_bytes`, or over Pillow's `MAX_IMAGE_PIXELS`),
    `UnsupportedImageError` (not a JPEG, PNG or WebP image), `CorruptImageError`.
    """
    if not raw:
        raise EmptyImageError("Image of 0 bytes.")
    if len(raw) > max_bytes:
        raise ImageTooLargeError(
            f"Image of {len(raw)} bytes is over IMAGE_MAX_BYTES ({max_bytes}).",
            f"That image is over {megabytes(max_bytes)}. Please send a smaller one.",
        )
    with DECODE_SLOTS, _open(raw) as opened:
        try:
            _draft(opened)
            opened.thumbnail((MAX_LONG_SIDE, MAX_LONG_SIDE), Image.Resampling.LANCZOS)
            upright = _upright(opened)
        except Image.DecompressionBombError as exc:
            raise ImageTooLargeError(f"Image refused as a decompression bomb: {exc}") from exc
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise CorruptImageError(f"Image cannot be decoded: {exc}") from exc
    data, media_type, sent = _encode(upright)
    return MessageImage(data, media_type, sent.width, sent.height)


def _draft(image: Image.Image) -> None:
    """Let a big JPEG decode at a reduced scale (`DRAFT_MIN_LONG_SIDE`): a 12-megapixel photo
    never exists in memory at full size. Other formats decode whole; this changes nothing."""
    long_side = max(image.size)
    if long_side < 2 * DRAFT_MIN_LONG_SIDE:
        return
    scale = DRAFT_MIN_LONG_SIDE / long_side
    image.draft(None, (math.ceil(image.width * scale), math.ceil(image.height * scale)))


def _upright(image: Image.Image) -> Image.Image:
    """The image turned as its EXIF orientation says; as it is when its EXIF is damaged (found
    in review: Pillow's `exif_transpose` raises `struct.error` on some broken tags)."""
    try:
        return ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, ValueError, EOFError):
        raise  # the pixels do not decode: the caller's to report
    except Exception:
        return image


async def prepare_image(raw: bytes, *, max_bytes: int = DEFAULT_IMAGE_MAX_BYTES) -> MessageImage:
    """`prepare_image_sync` in a worker thread, so decoding never holds up the event loop."""
    return await asyncio.to_thread(prepare_image_sync, raw, max_bytes=max_bytes)


@dataclass(frozen=True, slots=True)
class PreparedImages:
    """What became of the images of one message."""

    #: The usable ones, in the order they were sent.
    images: list[MessageImage]
    #: One error per refused image, in order; each `user_hint` is a line for the user.
    refused: list[ImageError]
    #: How many were left out unread, over the per-message limit.
    left_out: int


async def prepare_images(
    raws: Sequence[bytes], *, limit: int, max_bytes: int = DEFAULT_IMAGE_MAX_BYTES
) -> PreparedImages:
    """The first `limit` of a message's images prepared at once; a bad one is refused and the
    others still go (the message is never lost over one image)."""
    results = await asyncio.gather(
        *(prepare_image(raw, max_bytes=max_bytes) for raw in raws[:limit]),
        return_exceptions=True,
    )
    images: list[MessageImage] = []
    refused: list[ImageError] = []
    for result in results:
        if isinstance(result, ImageError):
            refused.append(result)
        elif isinstance(result, Exception):  # an image Pillow fails on in a way not foreseen
            refused.append(CorruptImageError(f"Image cannot be used: {result!r}"))
        elif isinstance(result, BaseException):
            raise result
        else:
            images.append(result)
    return PreparedImages(images, refused, max(len(raws) - limit, 0))


def data_url(image: MessageImage) -> str:
    """The image as an RFC 2397 data URL, the form OpenAI-compatible `image_url` parts take."""
    return content.data_url(image.data, image.media_type)
