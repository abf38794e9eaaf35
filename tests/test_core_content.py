"""Message content as OpenAI-style parts: reading, counting, building and converting them."""

from __future__ import annotations

import base64
import copy
import io

import pytest

from core import errors
from core.content import (
    IMAGE_CHARS,
    anthropic_content,
    attach_images,
    content_chars,
    content_text,
    g4f_images,
    image_part,
    parse_data_url,
)
from tests.fakes.llm_server import GENERATED_PNG

JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 16
PNG_URL = "data:image/png;base64," + base64.b64encode(GENERATED_PNG).decode()
PARTS = [
    {"type": "text", "text": "what is this?"},
    {"type": "image_url", "image_url": {"url": PNG_URL}},
]


def test_text_and_size_of_plain_and_part_content() -> None:
    assert content_text("hi") == "hi"
    assert content_text(None) == ""
    assert content_text(PARTS) == "what is this?"
    assert content_chars("hello") == 5
    # An image weighs a fixed guess, never the length of its base64.
    assert content_chars(PARTS) == len("what is this?") + IMAGE_CHARS
    assert content_chars([PARTS[1], PARTS[1]]) == 2 * IMAGE_CHARS


@pytest.mark.parametrize(
    ("data", "name", "media_type"),
    [
        (GENERATED_PNG, None, "image/png"),
        (JPEG, "photo.bin", "image/jpeg"),  # the bytes win over the name
        (b"GIF89a" + b"\x00" * 8, None, "image/gif"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", None, "image/webp"),
        (b"unknown header", "scan.jpg", "image/jpeg"),  # else the name's extension
    ],
)
def test_bytes_become_a_data_url_of_their_type(data, name, media_type) -> None:
    part = image_part(data, name)
    url = part["image_url"]["url"]
    assert part["type"] == "image_url"
    assert parse_data_url(url) == (media_type, base64.b64encode(data).decode())


def test_g4f_image_arguments_of_every_kind(tmp_path) -> None:
    path = tmp_path / "cat.jpg"
    path.write_bytes(JPEG)
    parts = g4f_images(
        image=io.BytesIO(GENERATED_PNG),
        images=[(str(path), "cat.jpg"), (path, None), [PNG_URL, "x.png"], "https://e.x/a.webp"],
    )
    urls = [part["image_url"]["url"] for part in parts]
    assert urls[0] == PNG_URL
    assert urls[1].startswith("data:image/jpeg;base64,") and urls[1] == urls[2]
    assert urls[3] == PNG_URL  # a data URL passes as it is
    assert urls[4] == "https://e.x/a.webp"  # so does an http URL: nothing is downloaded


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (b"", "empty"),
        (b"plain text, not an image", "not a JPEG, PNG, GIF or WebP"),
        ("data:image/png,notbase64", "base64"),
        ("data:image/png;base64,@@@", "invalid base64"),
        ("/no/such/file.png", "Cannot read the image"),
        (42, "must be bytes, a file, a path"),
    ],
)
def test_what_cannot_be_an_image_is_refused_before_any_request(value, text) -> None:
    with pytest.raises(errors.InvalidRequestError, match=text):
        image_part(value)


def test_images_go_on_the_last_user_message_and_the_callers_list_is_untouched() -> None:
    messages = [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "and this?"},
    ]
    before = copy.deepcopy(messages)
    attached = attach_images(messages, [PARTS[1]])
    assert messages == before
    assert attached[:3] == before[:3]
    assert attached[3] == {
        "role": "user",
        "content": [{"type": "text", "text": "and this?"}, PARTS[1]],
    }
    # Content that already is a list keeps its parts; the new ones come after.
    again = attach_images(attached, [PARTS[1]])
    assert again[3]["content"] == [*attached[3]["content"], PARTS[1]]
    assert attached[3]["content"] == [{"type": "text", "text": "and this?"}, PARTS[1]]
    with pytest.raises(errors.InvalidRequestError, match="user message"):
        attach_images([{"role": "system", "content": "x"}], [PARTS[1]])


def test_openai_parts_become_anthropic_blocks() -> None:
    blocks = anthropic_content(
        [*PARTS, {"type": "image_url", "image_url": {"url": "https://e.x/cat.png"}}]
    )
    assert blocks == [
        {"type": "text", "text": "what is this?"},
        {
            "type": "image",
            "source": {
                "type": "base64",
                "media_type": "image/png",
                "data": base64.b64encode(GENERATED_PNG).decode(),
            },
        },
        {"type": "image", "source": {"type": "url", "url": "https://e.x/cat.png"}},
    ]
    assert anthropic_content("plain") == "plain"
    assert anthropic_content(None) == ""
    with pytest.raises(errors.InvalidRequestError, match="needs a URL"):
        anthropic_content([{"type": "image_url", "image_url": {}}])
