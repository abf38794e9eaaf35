"""Control characters: the one definition of what a terminal would obey in outside text.

A terminal runs control characters instead of showing them: ESC and the C1 introducers (CSI,
OSC) start sequences that clear the screen, retitle the window or set the clipboard (OSC 52),
and BEL rings. Rich passes them through (its `Text` drops only BEL, BS, VT, FF and CR), so
text Parley did not write (a model's answer, a server's error, a name from a config file)
drops them before it is printed, and a chat setting that a terminal will show refuses them.
"""

from __future__ import annotations

import re

#: C0 controls, DEL and C1 controls: Unicode category Cc.
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
#: The controls that text meant to be read needs, and that do nothing worse than lay it out.
LINE_FEED_AND_TAB = "\n\t"


def has_controls(text: str, *, but: str = "") -> bool:
    """True when `text` holds a control character other than those in `but`."""
    return any(found[0] not in but for found in CONTROL_CHARACTERS.finditer(text))


def without_controls(text: str, *, but: str = "") -> str:
    """`text` with its control characters dropped, but those in `but`."""
    return CONTROL_CHARACTERS.sub(lambda found: found[0] if found[0] in but else "", text)
