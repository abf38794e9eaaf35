"""`core.text`: the one definition of a control character, used by the rule for chat settings,
the console's display filter and the CLI's tables."""

from __future__ import annotations

import unicodedata

from core.text import CONTROL_CHARACTERS, LINE_FEED_AND_TAB, has_controls, without_controls

EVERY_CHARACTER = "".join(map(chr, range(0x110000)))


def test_a_control_character_is_exactly_unicode_category_cc() -> None:
    expected = [c for c in EVERY_CHARACTER if unicodedata.category(c) == "Cc"]
    assert CONTROL_CHARACTERS.findall(EVERY_CHARACTER) == expected
    assert len(expected) == 0x20 + 1 + 0x20  # C0, DEL, C1


def test_without_controls_drops_sequence_starters_and_keeps_what_it_is_told() -> None:
    answer = "a\x1b]0;pwned\x07 b\x1b[2J\tc\nd\x9b2J\x7f\r"
    assert without_controls(answer) == "a]0;pwned b[2Jcd2J"
    assert without_controls(answer, but=LINE_FEED_AND_TAB) == "a]0;pwned b[2J\tc\nd2J"
    assert without_controls("ünï cødé, emoji 🙂, no-break\xa0space") == (
        "ünï cødé, emoji 🙂, no-break\xa0space"
    )


def test_has_controls_looks_past_the_allowed_ones() -> None:
    assert not has_controls("plain text, ünï 🙂")
    assert has_controls("line\nbreak")
    assert not has_controls("line\nbreak\tand tab", but=LINE_FEED_AND_TAB)
    assert has_controls("\n\tthen \x85", but=LINE_FEED_AND_TAB)
