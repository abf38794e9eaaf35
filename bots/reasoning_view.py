"""How a thinking model's reasoning is shown above its answer (`SHOW_REASONING`), on any platform.

The block is lines of Discord's subtext (`-# ...`): Discord shows them small and grey, and
Telegram's surface turns a reply's leading subtext lines into an expandable blockquote
(`bots.telegram.render.split_reasoning`), collapsed until tapped. One text, so the relay builds
it once for both bots.

While the model thinks, the block is "💭 Thinking…" over the newest reasoning (its tail, cut to
`STREAMING_CHARS`). Once the answer begins the thinking is over, so the block takes its final
form at once: the whole reasoning under "💭 Thought for N s" (`full`, cut to `FULL_CHARS`
from its start, the rest stored), that line alone (`collapsed`), or nothing (`off`). Taking the
final form then, rather than at the very end, keeps the first message of a long answer right:
it is finished (cut at the platform's limit) long before the answer ends. `off` shows nothing
while streaming either: an operator who turned reasoning off wants none of it on screen.
"""

from __future__ import annotations

from typing import Literal

ShowReasoning = Literal["full", "collapsed", "off"]

#: Starts each line of the block: Discord's subtext.
SUBTEXT = "-# "
#: The block's first line while the model thinks, and once it has.
THINKING = "💭 Thinking…"
THOUGHT = "💭 Thought for {seconds} s"
#: Characters of the newest reasoning shown while the model thinks.
STREAMING_CHARS = 600
#: Characters of the reasoning shown in a finished reply with `full` (the whole is stored).
FULL_CHARS = 2500
#: Marks reasoning cut for display.
CUT_MARK = "…"


def thinking_block(reasoning: str, show: ShowReasoning) -> str:
    """The block while the model is still thinking."""
    if show == "off" or not reasoning.strip():
        return ""
    tail = reasoning[-STREAMING_CHARS:]
    if len(reasoning) > STREAMING_CHARS:
        tail = CUT_MARK + tail
    return _block(THINKING, tail)


def thought_block(reasoning: str, seconds: float, show: ShowReasoning) -> str:
    """The block once the thinking is over, as the finished reply keeps it."""
    if show == "off" or not reasoning.strip():
        return ""
    title = THOUGHT.format(seconds=max(1, round(seconds)))
    if show == "collapsed":
        return _block(title, "")
    head = reasoning[:FULL_CHARS]
    if len(reasoning) > FULL_CHARS:
        head += CUT_MARK
    return _block(title, head)


def without_block(text: str) -> str:
    """A shown reply's text without the block above it: what the model answered, when the
    message is read back from the platform (a Discord reply chain) rather than the store."""
    if not text.startswith(SUBTEXT + "💭"):  # both titles begin so
        return text
    lines = text.split("\n")
    count = next((i for i, line in enumerate(lines) if not line.startswith(SUBTEXT)), len(lines))
    return "\n".join(lines[count:]).lstrip("\n")


def _block(title: str, text: str) -> str:
    """`title` and `text`'s non-blank lines as subtext, then a blank line before the answer."""
    lines = [title, *(" ".join(line.split()) for line in text.splitlines())]
    return "\n".join(SUBTEXT + line for line in lines if line) + "\n\n"
