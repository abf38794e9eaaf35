"""Reasoning written inside the answer's text as `<think>...</think>`, told apart as it streams.

DeepSeek-R1 and Qwen3 served without a reasoning parser (Ollama's `/v1`, llama.cpp, vLLM with
no `--reasoning-parser`) write their thinking into `content` between these tags. The client
feeds every text piece through a `ThinkSplitter`, so callers get the thinking as reasoning
(`core.types.Reasoning`) and only the answer as content, whichever server they talk to.

A stream cuts the text anywhere, a tag included (`"<thi"` then `"nk>"`), so a piece's tail that
could still become a tag is held back until the next piece says what it is. Only the exact
`<think>` and `</think>` tags count: `<thinking>`, `<b>` and every other tag is text.
`<think>` inside reasoning nests (its `</think>` closes the inner one), so a model that quotes
the tags while thinking keeps them as its text. A `</think>` with no `<think>` open is text too.
At the end of the stream (`flush`) whatever was held is given back as what it was in: a
`<think>` left open keeps its text as reasoning, nothing dropped.
"""

from __future__ import annotations

OPEN_TAG = "<think>"
CLOSE_TAG = "</think>"

#: (is_reasoning, text): one run of the stream, reasoning or answer.
Piece = tuple[bool, str]


class ThinkSplitter:
    """Splits streamed text into answer and reasoning runs; feed pieces, then `flush`."""

    __slots__ = ("_depth", "_held")

    def __init__(self) -> None:
        #: How many `<think>` are open: above 0, text is reasoning.
        self._depth = 0
        #: The end of the last piece that may be the start of a tag.
        self._held = ""

    @property
    def thinking(self) -> bool:
        """A `<think>` is open."""
        return self._depth > 0

    def feed(self, text: str) -> list[Piece]:
        """The runs of `text` that are known; a possible tag at its end waits for more."""
        if "<" not in text and not self._held:  # the common case: plain text, nothing held
            return [(self.thinking, text)] if text else []
        text = self._held + text
        self._held = ""
        pieces: list[Piece] = []
        start = 0
        while (at := text.find("<", start)) != -1:
            rest = text[at:]
            tag = self._tag_at(rest)
            if tag is None:
                if _could_become_tag(rest):
                    self._held = rest
                    text = text[:at]
                    break
                start = at + 1
                continue
            inner = self._depth > (0 if tag == OPEN_TAG else 1)
            # An inner tag is the reasoning's own text; only the outer pair is markup.
            self._add(pieces, text[: at + len(tag)] if inner else text[:at])
            self._depth += 1 if tag == OPEN_TAG else -1
            text = text[at + len(tag) :]
            start = 0
        self._add(pieces, text)
        return pieces

    def flush(self) -> list[Piece]:
        """The end of the stream: a held tail was never a tag, so it is text of the run it is in."""
        held, self._held = self._held, ""
        return [(self.thinking, held)] if held else []

    def _tag_at(self, text: str) -> str | None:
        """The tag `text` begins with, if it is one that counts here."""
        if text.startswith(OPEN_TAG):
            return OPEN_TAG
        if text.startswith(CLOSE_TAG) and self._depth > 0:
            return CLOSE_TAG
        return None

    def _add(self, pieces: list[Piece], text: str) -> None:
        if not text:
            return
        if pieces and pieces[-1][0] == self.thinking:
            pieces[-1] = (self.thinking, pieces[-1][1] + text)
        else:
            pieces.append((self.thinking, text))


def _could_become_tag(text: str) -> bool:
    """`text` (starting with "<") is a strict beginning of a tag, so more text may complete it."""
    return any(len(text) < len(tag) and tag.startswith(text) for tag in (OPEN_TAG, CLOSE_TAG))
