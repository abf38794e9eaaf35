"""Split a reply into platform-sized messages, and join the messages back into the reply.

A part is cut at the last paragraph break that leaves it at least half full, else the last line
break, else the last word break, else it is hard cut (never inside a surrogate pair, an emoji
sequence or a combining mark), and never inside a line that may be a code fence. A break is the
end of a whitespace run: the run stays at the end of the earlier part, where platforms do not show
it, so the next part starts with visible text.

Exactly how parts join back (`join_parts` inverts `split_message`):
- No character of the text is dropped or moved: concatenating the parts gives the text, once the
  added fence lines below are removed.
- When a cut lands inside a fenced code block (``` or ~~~), the part gets the line
  `"\\n" + marker` appended (marker: the block's own fence, e.g. ```), and the next part starts with
  the reopening line `marker + info + "\\n"` (info: the block's info string, e.g. python), so each
  part renders as balanced Markdown. Nothing else is ever added.
- `join_parts` knows where a block was open by reading the joined text as it goes, so it removes
  exactly those lines and no text that merely looks like them.

Lengths are counted with a `length` function (default `len`; Telegram counts UTF-16 code units,
see `utf16_length`). It must be additive: length(a + b) == length(a) + length(b).
Block state is read from complete lines only: a line opens a block when it is three or more
backticks or tildes (a backtick fence's info string has no backtick), and closes it when it is the
same fence character, at least as long, and nothing else. Unlike CommonMark, any indentation is
allowed, because models indent fences inside list items and a cut can leave a part starting with
the fence line's text alone; and a run longer than `MAX_FENCE` is text, not a fence (a row of
2,000 tildes could not be closed and reopened within one message).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass

Length = Callable[[str], int]

#: A cut at a paragraph or line break is preferred only if it leaves the part this full.
MIN_FILL = 0.5
#: A reopening line longer than this share of the limit drops its info string (it is cosmetic).
MAX_REOPEN_SHARE = 0.25
#: Longest backtick or tilde run read as a fence; real fences are 3 to 5 characters.
MAX_FENCE = 32

_FENCE = re.compile(r"[ \t]*(`{3,}|~{3,})(.*)")
_WHITESPACE_RUN = re.compile(r"[ \t\n\r\f\v]+")
_WHITESPACE = frozenset(" \t\n\r\f\v")
#: Characters that join the previous one into a single visible symbol.
_JOINERS = frozenset("\u200d\ufe0e\ufe0f\u20e3")
#: Paragraph, line, word: a break's kind is how many newlines its run holds (capped at 2).
_PARAGRAPH, _LINE, _WORD = 2, 1, 0


@dataclass(frozen=True, slots=True)
class Fence:
    """An open fenced code block: the fence that opened it and its info string."""

    marker: str
    info: str

    @property
    def closing(self) -> str:
        """The line appended to a part cut inside this block."""
        return "\n" + self.marker


@dataclass(frozen=True, slots=True)
class Cut:
    """Where the current part ends: `part` is its final text, `end` the offset in the text where
    the next part's content starts, `fence` the block open there (None if none)."""

    part: str
    end: int
    fence: Fence | None


def utf16_length(text: str) -> int:
    """Length in UTF-16 code units, as Telegram counts message text (an emoji often counts 2)."""
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def reopening(fence: Fence | None, limit: int, length: Length = len) -> str:
    """The line a part starts with when it begins inside `fence` ("" outside any block)."""
    if fence is None:
        return ""
    line = f"{fence.marker}{fence.info}\n"
    if length(line) > limit * MAX_REOPEN_SHARE:
        return fence.marker + "\n"
    return line


def fence_after(text: str, start: int, end: int, fence: Fence | None) -> Fence | None:
    """The block open after the complete lines of `text[:end]`, given `fence` was open after the
    complete lines of `text[:start]`. The first line may begin before `start`: it is read whole."""
    line_start = text.rfind("\n", 0, start) + 1
    while (newline := text.find("\n", start, end)) != -1:
        fence = _after_line(fence, text[line_start:newline])
        line_start = start = newline + 1
    return fence


def _after_line(fence: Fence | None, line: str) -> Fence | None:
    match = _FENCE.fullmatch(line.rstrip("\r"))
    if match is None or len(match.group(1)) > MAX_FENCE:
        return fence
    marker, rest = match.group(1), match.group(2)
    if fence is None:
        if marker[0] == "`" and "`" in rest:
            return None  # inline code such as ```x```, not a fence
        return Fence(marker, rest.strip())
    closes = marker[0] == fence.marker[0] and len(marker) >= len(fence.marker)
    return None if closes and not rest.strip() else fence


def next_cut(
    text: str, start: int, fence: Fence | None, limit: int, length: Length = len
) -> Cut | None:
    """Where to end the part whose content starts at `start` inside `fence`; None if the rest of
    the text fits in one message.

    The answer depends only on the text up to the cut and one character past the limit, so a
    streamed reply is cut exactly where `split_message` cuts the whole of it.
    """
    prefix = reopening(fence, limit, length)
    if length(prefix) + length(text[start:]) <= limit:
        return None
    budget = limit - length(prefix) - len(fence.closing if fence else "\n```")
    while budget > 0:
        end = _cut_point(text, start, _fit(text, start, budget, length))
        open_fence = fence_after(text, start, end, fence)
        part = prefix + text[start:end] + (open_fence.closing if open_fence else "")
        excess = length(part) - limit
        if excess <= 0:
            return Cut(part, end, open_fence)
        budget -= excess
    raise ValueError(f"limit {limit} leaves no room for text beside the code fence lines")


def _fit(text: str, start: int, budget: int, length: Length) -> int:
    """The largest end such that text[start:end] has length <= budget (at least start + 1)."""
    low, high = start + 1, len(text)
    while low < high:
        middle = (low + high + 1) // 2
        if length(text[start:middle]) <= budget:
            low = middle
        else:
            high = middle - 1
    return low


def _cut_point(text: str, start: int, limit_end: int) -> int:
    """Where to cut in text[start:limit_end]; text[limit_end] exists (the rest did not fit)."""
    return _off_fence_line(text, start, _best_break(text, start, limit_end))


def _best_break(text: str, start: int, limit_end: int) -> int:
    first_visible = _first_visible(text, start, limit_end)
    best: dict[int, int] = {}
    last_break = None
    for run in _WHITESPACE_RUN.finditer(text, start, limit_end + 1):
        end = run.end()
        if end > limit_end or end >= len(text) or end <= first_visible:
            continue  # not a run end inside the window, or nothing visible before it
        best[min(run.group().count("\n"), _PARAGRAPH)] = end
        last_break = end
    floor = start + (limit_end - start) * MIN_FILL
    for kind in (_PARAGRAPH, _LINE, _WORD):
        if best.get(kind, start) > floor:
            return best[kind]
    return last_break if last_break is not None else _hard_cut(text, start, limit_end)


def _first_visible(text: str, start: int, end: int) -> int:
    for index in range(start, end):
        if text[index] not in _WHITESPACE:
            return index
    return end


def _hard_cut(text: str, start: int, end: int) -> int:
    """Back off from `end` so one visible symbol is never split between two messages."""
    cut = end
    while cut - 1 > start and _continues(text[cut - 1], text[cut]):
        cut -= 1
    return cut


def _continues(before: str, after: str) -> bool:
    if "\ud800" <= before <= "\udbff" and "\udc00" <= after <= "\udfff":
        return True  # a surrogate pair (only in text decoded with surrogatepass)
    if before == "\u200d" or after in _JOINERS or unicodedata.combining(after):
        return True
    return "\U0001f3fb" <= after <= "\U0001f3ff"  # skin tone modifier


def _off_fence_line(text: str, start: int, cut: int) -> int:
    """Move a cut made inside a line that may be a code fence back to that line's start, so a
    fence line is never torn in two (which would unbalance both parts)."""
    line_start = text.rfind("\n", 0, cut) + 1
    head = text[line_start:cut].lstrip(" \t")
    torn_fence = head.startswith(("```", "~~~")) or head in ("`", "``", "~", "~~")
    return line_start if torn_fence and line_start > start else cut


def split_message(text: str, limit: int, length: Length = len) -> list[str]:
    """Split `text` into parts of at most `limit` (by `length`); see the module doc for how
    `join_parts` puts them back together. An empty text gives one empty part."""
    parts: list[str] = []
    start, fence = 0, None
    while (cut := next_cut(text, start, fence, limit, length)) is not None:
        parts.append(cut.part)
        start, fence = cut.end, cut.fence
    parts.append(reopening(fence, limit, length) + text[start:])
    return parts


def join_parts(parts: Sequence[str]) -> str:
    """The text `split_message` split into `parts`, with the added fence lines removed."""
    text = ""
    fence: Fence | None = None
    for index, part in enumerate(parts):
        start = len(text)
        body = part.partition("\n")[2] if fence is not None else part
        if index < len(parts) - 1:
            head, newline, tail = body.rpartition("\n")
            at_cut = fence_after(text + head, start, start + len(head), fence) if newline else None
            if at_cut is not None and tail == at_cut.marker:
                body = head
        text += body
        fence = fence_after(text, start, len(text), fence)
    return text
