"""`core.images`: what a model is sent of an image a user sent, and a clear error for each bad one."""

from __future__ import annotations

import asyncio
import base64
import io
import random
import threading
from pathlib import Path

import pytest
from PIL import Image

from core import content
from core import images as core_images
from core.errors import (
    CorruptImageError,
    EmptyImageError,
    ImageError,
    ImageTooLargeError,
    UnsupportedImageError,
    error_kind,
)
from core.images import (
    DRAFT_MIN_LONG_SIDE,
    MAX_LONG_SIDE,
    data_url,
    prepare_image,
    prepare_image_sync,
    prepare_images,
)

ORIENTATION = 0x0112
ROTATED_90_CW = 6


def encoded(
    size: tuple[int, int], fmt: str = "JPEG", mode: str = "RGB", color: object = (200, 30, 30)
) -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, color).save(out, fmt)  # type: ignore[arg-type]
    return out.getvalue()


def decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


@pytest.mark.parametrize(
    ("size", "fmt", "expected"),
    [
        # A 12-megapixel JPEG decodes at half scale (draft): 2,000 px, never 4,000 in memory.
        ((4000, 3000), "JPEG", (2000, 1500)),
        ((3000, 4000), "JPEG", (1500, 2000)),  # the same, portrait
        ((8000, 6000), "JPEG", (2000, 1500)),  # 48 MP: a quarter scale
        ((3000, 2250), "JPEG", (2048, 1536)),  # under twice the draft side: decoded whole
        ((4000, 3000), "PNG", (2048, 1536)),  # no draft for PNG: decoded whole, then scaled
        ((5000, 1000), "JPEG", (2048, 410)),  # a panorama keeps its aspect
        ((640, 480), "JPEG", (640, 480)),  # small ones keep their size
    ],
)
def test_the_long_side_is_brought_down_to_2048_keeping_the_aspect(
    size: tuple[int, int], fmt: str, expected: tuple[int, int]
) -> None:
    image = prepare_image_sync(encoded(size, fmt))
    assert (image.width, image.height) == expected
    assert image.media_type == "image/jpeg"
    assert decoded(image.data).size == expected
    assert DRAFT_MIN_LONG_SIDE <= max(expected) <= MAX_LONG_SIDE or max(size) < MAX_LONG_SIDE


@pytest.mark.parametrize(
    ("fmt", "mode", "color", "media_type"),
    [
        ("PNG", "RGBA", (0, 0, 0, 0), "image/png"),  # see-through: stays PNG
        ("PNG", "RGBA", (9, 9, 9, 255), "image/jpeg"),  # alpha channel, all opaque: JPEG
        ("PNG", "RGB", (9, 9, 9), "image/jpeg"),
        ("PNG", "L", 128, "image/jpeg"),
        ("WEBP", "RGBA", (0, 0, 0, 10), "image/png"),
        ("WEBP", "RGB", (9, 9, 9), "image/jpeg"),
        ("JPEG", "CMYK", (0, 0, 0, 0), "image/jpeg"),
        ("MPO", "RGB", (9, 9, 9), "image/jpeg"),  # some phones' camera JPEGs
    ],
)
def test_every_accepted_format_comes_out_as_jpeg_unless_it_has_transparency(
    fmt: str, mode: str, color: object, media_type: str
) -> None:
    image = prepare_image_sync(encoded((300, 200), fmt, mode, color))
    assert image.media_type == media_type
    assert decoded(image.data).format == media_type.split("/")[1].upper()
    assert (image.width, image.height) == (300, 200)


def test_a_palette_png_with_a_transparent_colour_keeps_it() -> None:
    out = io.BytesIO()
    Image.new("P", (50, 40), 0).save(out, "PNG", transparency=0)
    image = prepare_image_sync(out.getvalue())
    assert image.media_type == "image/png"
    assert decoded(image.data).getpixel((0, 0))[3] == 0  # type: ignore[index]


def test_exif_rotation_is_applied_and_metadata_dropped() -> None:
    source = Image.new("RGB", (400, 100), (10, 20, 30))
    exif = source.getexif()
    exif[ORIENTATION] = ROTATED_90_CW
    exif[0x010F] = "PhoneMaker"  # Make: stands in for the GPS block a phone writes
    out = io.BytesIO()
    source.save(out, "JPEG", exif=exif)
    image = prepare_image_sync(out.getvalue())
    assert (image.width, image.height) == (100, 400)  # upright, as the phone showed it
    assert not decoded(image.data).getexif()


def test_the_same_photo_gives_the_same_bytes() -> None:
    raw = encoded((2500, 1000))
    assert prepare_image_sync(raw).data == prepare_image_sync(raw).data


@pytest.mark.parametrize(
    ("raw", "error", "hint"),
    [
        (b"", EmptyImageError, "empty"),
        (b"hello, not an image", UnsupportedImageError, "JPEG, PNG or WebP"),
        (b"%PDF-1.7\n", UnsupportedImageError, "JPEG, PNG or WebP"),
        (encoded((50, 50), "GIF"), UnsupportedImageError, "JPEG, PNG or WebP"),
        (encoded((50, 50), "BMP"), UnsupportedImageError, "JPEG, PNG or WebP"),
        (encoded((1200, 900))[:2000], CorruptImageError, "damaged"),  # cut off in transit
        (encoded((50, 50), "PNG")[:40], CorruptImageError, "damaged"),
    ],
    ids=["empty", "text", "pdf", "gif", "bmp", "truncated-jpeg", "truncated-png"],
)
def test_each_bad_input_has_its_own_error_and_a_line_for_the_user(
    raw: bytes, error: type[ImageError], hint: str
) -> None:
    with pytest.raises(error) as caught:
        prepare_image_sync(raw)
    assert hint in caught.value.user_hint
    assert "\n" not in caught.value.user_hint


def test_an_image_over_the_byte_limit_is_refused_naming_the_limit() -> None:
    raw = encoded((300, 300))
    assert prepare_image_sync(raw, max_bytes=len(raw)).width == 300  # the limit itself passes
    with pytest.raises(ImageTooLargeError, match="IMAGE_MAX_BYTES") as caught:
        prepare_image_sync(raw, max_bytes=len(raw) - 1)
    assert caught.value.user_hint.startswith("That image is over ")
    with pytest.raises(ImageTooLargeError) as caught:
        prepare_image_sync(b"\xff" * (3 * 1024 * 1024), max_bytes=2 * 1024 * 1024)
    assert caught.value.user_hint == "That image is over 2 MB. Please send a smaller one."
    assert error_kind(caught.value) == "image_too_large"


def test_a_decompression_bomb_is_refused_where_pillow_only_warns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 600_000)
    raw = encoded((1000, 1000), "PNG")  # a small file: a flat colour compresses to nothing
    with (
        pytest.warns(Image.DecompressionBombWarning),
        pytest.raises(ImageTooLargeError, match="over the limit of 600000"),
    ):
        prepare_image_sync(raw)


def test_a_decompression_bomb_is_refused_where_pillow_raises(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 300_000)
    with pytest.raises(ImageTooLargeError, match="bomb") as caught:
        prepare_image_sync(encoded((1000, 1000), "PNG"))
    assert "too large" in caught.value.user_hint


async def test_the_async_entry_point_decodes_off_the_event_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loop_thread = threading.get_ident()
    seen: list[int] = []
    real = core_images.prepare_image_sync

    def spy(raw: bytes, *, max_bytes: int) -> object:
        seen.append(threading.get_ident())
        return real(raw, max_bytes=max_bytes)

    monkeypatch.setattr(core_images, "prepare_image_sync", spy)
    image = await asyncio.wait_for(prepare_image(encoded((3000, 2000))), 30)
    assert (image.width, image.height) == (2048, 1365)
    assert seen and seen[0] != loop_thread


async def test_a_message_keeps_its_good_images_and_names_each_bad_one() -> None:
    good = encoded((100, 80))
    prepared = await prepare_images(
        [good, b"", b"nope", encoded((80, 100), "PNG"), good, good], limit=4
    )
    assert [(i.width, i.height) for i in prepared.images] == [(100, 80), (80, 100)]
    assert [type(e) for e in prepared.refused] == [EmptyImageError, UnsupportedImageError]
    assert prepared.left_out == 2


def test_a_data_url_carries_the_media_type_and_the_bytes() -> None:
    image = prepare_image_sync(encoded((10, 10), "PNG", "RGBA", (0, 0, 0, 0)))
    url = data_url(image)
    head, payload = url.split(",", 1)
    assert head == "data:image/png;base64"
    assert base64.b64decode(payload) == image.data


SAMPLES = Path(__file__).parent / "samples"


async def test_an_image_with_damaged_exif_is_used_unturned_and_loses_no_other_image() -> None:
    """Found by fuzzing in review: Pillow's exif_transpose raised struct.error on this file."""
    damaged = (SAMPLES / "exif_struct_error.jpg").read_bytes()
    good = io.BytesIO()
    Image.new("RGB", (40, 30), "red").save(good, "JPEG")
    prepared = await prepare_images([damaged, good.getvalue()], limit=4)
    assert not prepared.refused
    assert [image.width for image in prepared.images] == [300, 40]


def test_a_png_too_large_to_decode_at_full_size_is_refused_before_decoding() -> None:
    """A PNG or WebP decodes at full size (a JPEG shrinks while decoding): a tiny file may hold
    more pixels than memory can take."""
    buffer = io.BytesIO()
    Image.new("1", (7000, 7000)).save(buffer, "PNG")  # 49 MP in a few KB
    assert len(buffer.getvalue()) < 100_000
    with pytest.raises(ImageTooLargeError, match="over the limit"):
        prepare_image_sync(buffer.getvalue())


def test_a_cap_of_a_fraction_of_a_megabyte_is_named_as_it_is() -> None:
    """The hint names the cap as every other file's does (`core.figures.megabytes`): a
    1.5 MB cap read "2 MB" when images had a size formatter of their own."""
    with pytest.raises(ImageTooLargeError) as caught:
        prepare_image_sync(b"\xff" * (2 * 1024 * 1024), max_bytes=1536 * 1024)
    assert caught.value.user_hint == "That image is over 1.5 MB. Please send a smaller one."


def test_the_data_url_of_an_image_is_the_content_modules() -> None:
    image = prepare_image_sync(encoded((10, 10)))
    assert data_url(image) == content.data_url(image.data, image.media_type)


@pytest.mark.parametrize(
    ("raw", "media_type"),
    [
        (encoded((5, 5)), "image/jpeg"),
        (encoded((5, 5), "PNG"), "image/png"),
        (encoded((5, 5), "WEBP"), "image/webp"),
        (encoded((5, 5), "GIF"), "image/gif"),
        (b"RIFF\0\0\0\0WAVEfmt ", None),
        (b"not an image", None),
    ],
    ids=["jpeg", "png", "webp", "gif", "wav", "text"],
)
def test_one_sniffer_types_an_image_by_its_first_bytes(raw: bytes, media_type: str | None) -> None:
    assert content.image_media_type(raw) == media_type


def _noise(size: tuple[int, int], mode: str) -> Image.Image:
    """Pixels no encoder can compress: the worst case for the byte cap."""
    channels = len(mode)
    return Image.frombytes(mode, size, random.Random(7).randbytes(size[0] * size[1] * channels))


def test_a_large_noisy_transparent_image_fits_every_providers_limit() -> None:
    """Its PNG would be about 16 MB; Anthropic refuses an image whose base64 is over 5 MB."""
    source = _noise((2048, 2048), "RGBA")
    out = io.BytesIO()
    source.save(out, "PNG", compress_level=1)
    image = prepare_image_sync(out.getvalue(), max_bytes=64 * 1024 * 1024)
    assert len(image.data) <= core_images.SEND_MAX_BYTES
    assert len(base64.b64encode(image.data)) <= 5 * 1024 * 1024
    assert image.media_type == "image/jpeg"  # flattened: JPEG has no transparency
    assert decoded(image.data).size == (image.width, image.height)


def test_a_jpeg_over_the_cap_is_shrunk_until_it_fits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Noise at 2,048 px makes about 3 MB of JPEG, under the real cap: a lower one shows the
    shrinking that a future format or quality change could need."""
    monkeypatch.setattr(core_images, "SEND_MAX_BYTES", 1024 * 1024)
    out = io.BytesIO()
    _noise((2048, 2048), "RGB").save(out, "PNG", compress_level=1)
    image = prepare_image_sync(out.getvalue(), max_bytes=64 * 1024 * 1024)
    assert len(image.data) <= 1024 * 1024
    assert 1024 < image.width < 2048 and image.width == image.height
    assert decoded(image.data).size == (image.width, image.height)


def test_a_transparent_image_flattened_to_jpeg_is_white_where_it_was_clear() -> None:
    source = _noise((2048, 2048), "RGBA")
    source.paste((0, 0, 0, 0), (0, 0, 200, 200))  # a clear corner
    out = io.BytesIO()
    source.save(out, "PNG", compress_level=1)
    image = prepare_image_sync(out.getvalue(), max_bytes=64 * 1024 * 1024)
    assert image.media_type == "image/jpeg"
    assert min(decoded(image.data).convert("RGB").getpixel((5, 5))) > 240  # type: ignore[arg-type]


def _gradient_16_bit() -> Image.Image:
    source = Image.new("I;16", (256, 8))
    source.putdata([x * 257 for _ in range(8) for x in range(256)])
    return source


def _assert_greys_kept(data: bytes) -> None:
    grey = decoded(data).convert("L")
    assert abs(grey.getpixel((128, 4)) - 128) <= 3  # type: ignore[operator]
    assert grey.getpixel((2, 4)) <= 6 and grey.getpixel((253, 4)) >= 249  # type: ignore[operator]


def test_a_16_bit_grey_png_keeps_its_greys() -> None:
    """Pillow opens a 16-bit greyscale PNG as "I;16"; converted without scaling, every value
    over 255 clipped to white."""
    out = io.BytesIO()
    _gradient_16_bit().save(out, "PNG")
    assert decoded(out.getvalue()).mode == "I;16"
    _assert_greys_kept(prepare_image_sync(out.getvalue()).data)


def test_a_32_bit_grey_image_of_16_bit_values_keeps_its_greys() -> None:
    """Older Pillow versions open the same PNG as "I"; this one cannot write such a PNG, so the
    image goes to the encoder directly."""
    data, media_type, _ = core_images._encode(_gradient_16_bit().convert("I"))
    assert media_type == "image/jpeg"
    _assert_greys_kept(data)
