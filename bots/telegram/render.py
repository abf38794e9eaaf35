"""Render a finished reply's Markdown as Telegram text plus entities, or decline to.

telegramify-markdown does the conversion (`convert(text) -> (text, entities)`), but it drops raw
HTML (`<b>x</b>` renders as `x`, a `<script>` line vanishes): a model that writes about HTML
would lose words. So HTML in the source is escaped into literal text first, and the result is
checked against the source: when letters or digits went missing (beyond the few a rendering
legitimately rewrites, such as task-list boxes), or the result outgrows Telegram's limit, the
caller gets None and sends the plain text instead. Entities only style text that is already
visible, and Telegram validates them; the one exception is a link into Telegram itself:
`[hi](tg://user?id=N)` is a mention that notifies user N, so such links are dropped (the text
stays) and model output cannot ping anyone that way.

A reply that opens with a thinking model's reasoning (`bots.reasoning_view`: subtext lines,
the first starting "💭") shows that block as an expandable blockquote, collapsed until tapped,
while it streams and once finished (`render_reasoning`); the answer under it renders as above.
"""

from __future__ import annotations

from collections import Counter

import pyromark
import telegramify_markdown
from aiogram.types import MessageEntity
from telegramify_markdown.converter import STANDARD_OPTIONS

from bots.reasoning_view import SUBTEXT
from bots.splitting import utf16_length

#: Telegram's limit per message, in UTF-16 code units.
MAX_LENGTH = 4096
#: Letters and digits a rendering may drop or rewrite (a task box's "x", a "^2" made "²").
LOST_CHARS_TOLERATED = 2
#: Links with this scheme point into Telegram (tg://user?id=N mentions, and notifies, user N).
TELEGRAM_SCHEME = "tg:"

_HTML_EVENTS = ("Html", "InlineHtml")
#: How a reasoning block's first line begins (`bots.reasoning_view`).
REASONING_START = SUBTEXT + "💭"


def render_markdown(source: str) -> tuple[str, list[MessageEntity]] | None:
    """The reply as Telegram shows formatted text, or None when plain text serves it better."""
    try:
        text, entities = telegramify_markdown.convert(escape_html(source), latex_escape=False)
    except Exception:  # a renderer bug must cost the formatting, never the reply
        return None
    if not text.strip() or utf16_length(text) > MAX_LENGTH:
        return None
    # A link's address and a code block's language leave the text for the entity.
    moved = "".join(f"{entity.url or ''}{entity.language or ''}" for entity in entities)
    if lost_characters(source, text + moved) > LOST_CHARS_TOLERATED:
        return None
    kept = [e for e in entities if not (e.url or "").lower().startswith(TELEGRAM_SCHEME)]
    return text, [MessageEntity(**entity.to_dict()) for entity in kept]


def escape_html(source: str) -> str:
    """Backslash-escape every `<` that CommonMark would read as HTML, so it stays visible text.

    Code spans and blocks are not HTML to the parser, so `<b>` inside backticks is untouched.
    """
    data = source.encode("utf-8")
    cuts: list[int] = []
    for event, where in pyromark.events_with_range(source, options=STANDARD_OPTIONS):
        if isinstance(event, dict) and any(kind in event for kind in _HTML_EVENTS):
            start, end = where["start"], where["end"]
            cuts.extend(start + i for i, byte in enumerate(data[start:end]) if byte == ord("<"))
    if not cuts:
        return source
    parts, previous = [], 0
    for cut in sorted(set(cuts)):
        parts.append(data[previous:cut])
        parts.append(b"\\")
        previous = cut
    parts.append(data[previous:])
    return b"".join(parts).decode("utf-8")


def lost_characters(source: str, rendered: str) -> int:
    """How many letters and digits of `source` are missing from `rendered`."""
    need = Counter(char for char in source if char.isalnum())
    have = Counter(char for char in rendered if char.isalnum())
    return sum((need - have).values())


def split_reasoning(text: str) -> tuple[str, str] | None:
    """(the reasoning block's lines without their subtext marks, the text after it), or None
    when `text` does not open with a reasoning block."""
    if not text.startswith(REASONING_START):
        return None
    lines = text.split("\n")
    count = next((i for i, line in enumerate(lines) if not line.startswith(SUBTEXT)), len(lines))
    quote = "\n".join(line[len(SUBTEXT) :] for line in lines[:count])
    return quote, "\n".join(lines[count:]).lstrip("\n")


def render_reasoning(text: str, *, final: bool) -> tuple[str, list[MessageEntity]] | None:
    """A reply that opens with reasoning: the block as an expandable blockquote, the answer
    under it plain while streaming and rendered from Markdown when `final` (plain if that
    fails). None when `text` has no reasoning block."""
    split = split_reasoning(text)
    if split is None:
        return None
    quote, rest = split
    rendered = render_markdown(rest) if final and rest.strip() else None
    body, entities = rendered if rendered is not None else (rest, [])
    gap = "\n\n" if body else ""
    offset = utf16_length(quote + gap)
    if offset + utf16_length(body) > MAX_LENGTH and rendered is not None:
        body, entities = rest, []  # the rendering grew past the limit: the answer goes plain
    block = MessageEntity(type="expandable_blockquote", offset=0, length=utf16_length(quote))
    moved = [entity.model_copy(update={"offset": entity.offset + offset}) for entity in entities]
    return quote + gap + body, [block, *moved]
