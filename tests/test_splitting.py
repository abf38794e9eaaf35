"""split_message / join_parts: parts fit the limit, break where a reader would, keep code blocks
balanced, and always join back to the exact text."""

from __future__ import annotations

import itertools
import random

import pytest

from bots.splitting import (
    fence_after,
    join_parts,
    next_cut,
    reopening,
    split_message,
    utf16_length,
)

TELEGRAM_LIMIT = 4096
DISCORD_LIMIT = 2000
#: Enough random texts to hit the rare cuts (inside fences, after emoji, in whitespace runs).
PROPERTY_CASES = 1500


def balanced(part: str) -> bool:
    """True if every code block the part opens is closed within it."""
    return fence_after(part + "\n", 0, len(part) + 1, None) is None


def markdown_reply(rng: random.Random, size: int, *, emoji: bool = False) -> str:
    """A model-like Markdown reply: paragraphs, lists and code blocks, some longer than a message."""
    words = ["the", "model", "streams", "text", "into", "chat", "édition", "naïve", "a", "of"]
    if emoji:
        words += ["😀", "👍🏽", "👨‍👩‍👧", "🇫🇷", "e\u0301"]
    blocks: list[str] = []
    while sum(map(len, blocks)) < size:
        roll = rng.random()
        if roll < 0.45:
            sentences = [" ".join(rng.choices(words, k=rng.randint(5, 30))) + "." for _ in range(6)]
            blocks.append(rng.choice([" ", "\n"]).join(sentences))
        elif roll < 0.75:
            lines = [f"    value_{i} = compute({i}, '{rng.choice(words)}')" for i in range(200)]
            language = rng.choice(["python", "", "js"])
            blocks.append(f"```{language}\n" + "\n".join(lines[: rng.randint(3, 200)]) + "\n```")
        elif roll < 0.9:
            blocks.append("\n".join(f"- {' '.join(rng.choices(words, k=8))}" for _ in range(12)))
        else:
            blocks.append("1. Install:\n    ```bash\n    pip install parley\n    ```")
    return "\n\n".join(blocks)


def streamed_split(text: str, limit: int, length, rng: random.Random) -> list[str]:
    """Cut the text as the engine does: on a growing prefix, whenever the current part overflows."""
    parts: list[str] = []
    start, fence, known = 0, None, 0
    while known < len(text):
        known = min(len(text), known + rng.randint(1, 40))
        while (cut := next_cut(text[:known], start, fence, limit, length)) is not None:
            parts.append(cut.part)
            start, fence = cut.end, cut.fence
    return [*parts, reopening(fence, limit, length) + text[start:]]


def test_short_text_is_one_untouched_part() -> None:
    assert split_message("hello\n\nworld", 100) == ["hello\n\nworld"]
    assert join_parts(["hello\n\nworld"]) == "hello\n\nworld"


def test_empty_text_is_one_empty_part() -> None:
    assert split_message("", 100) == [""]
    assert join_parts([""]) == ""


def test_paragraph_break_beats_line_and_word_breaks() -> None:
    text = "a" * 60 + "\n\n" + "b" * 10 + "\n" + "c" * 10 + " " + "d" * 200
    parts = split_message(text, 100)
    assert parts[0] == "a" * 60 + "\n\n"
    assert join_parts(parts) == text


def test_line_break_beats_word_break() -> None:
    text = "a" * 60 + " " + "b" * 10 + "\n" + "c" * 10 + " " + "d" * 200
    assert split_message(text, 100)[0] == "a" * 60 + " " + "b" * 10 + "\n"


def test_word_break_beats_hard_cut() -> None:
    text = "a" * 60 + " " + "b" * 10 + " " + "c" * 10 + "d" * 200
    assert split_message(text, 100)[0] == "a" * 60 + " " + "b" * 10 + " "


def test_hard_cut_when_there_is_no_break() -> None:
    text = "x" * 250
    parts = split_message(text, 100)
    assert all(len(part) <= 100 for part in parts)
    assert "".join(parts) == text
    assert len(parts) == 3


def test_early_paragraph_break_loses_to_a_later_line_break() -> None:
    """A paragraph break that would leave the part nearly empty is not worth a short message."""
    text = "a" * 10 + "\n\n" + "b" * 70 + "\n" + "c" * 200
    assert split_message(text, 100)[0] == "a" * 10 + "\n\n" + "b" * 70 + "\n"


def test_whitespace_stays_with_the_earlier_part() -> None:
    text = "first paragraph " * 5 + "\n\n\n" + "second " * 20
    parts = split_message(text, 100)
    assert parts[0].endswith("\n\n\n")
    assert all(not part[:1].isspace() for part in parts[1:])
    assert "".join(parts) == text


def test_cut_inside_code_block_closes_and_reopens_with_info_string() -> None:
    code = "\n".join(f"print({i})" for i in range(40))
    text = "Here:\n\n```python\n" + code + "\n```\n\nDone."
    parts = split_message(text, 120)
    assert len(parts) > 2
    for before, after in itertools.pairwise(parts):
        if after.startswith("```python\n"):
            assert before.endswith("\n```")
    assert sum(part.startswith("```python\n") for part in parts) >= 2
    assert all(balanced(part) for part in parts)
    assert all(len(part) <= 120 for part in parts)
    assert join_parts(parts) == text


@pytest.mark.parametrize("fence", ["~~~", "````"])
def test_other_fences_reopen_with_their_own_marker(fence: str) -> None:
    inner = "\n".join(["```", "nested backticks stay code", "```"] * 8)
    text = f"{fence}markdown\n{inner}\n{fence}\nafter"
    parts = split_message(text, 80)
    assert any(part.startswith(f"{fence}markdown\n") for part in parts[1:])
    assert all(balanced(part) for part in parts)
    assert join_parts(parts) == text


def test_fence_line_is_never_torn_between_parts() -> None:
    """A word break inside a fence line (its info string has spaces) moves to the line's start."""
    intro = "intro " * 5 + "\n"
    text = intro + "```python " + "title " * 12 + "\ncode\n```"
    parts = split_message(text, 100)
    assert parts[0] == intro
    assert all(balanced(part) for part in parts)
    assert join_parts(parts) == text


def test_text_that_looks_like_added_fence_lines_is_kept() -> None:
    """join_parts removes only the lines split_message added, not the model's own fences."""
    text = "```\n" + "a" * 50 + "\n```\n```\n" + "b" * 50 + "\n```"
    parts = split_message(text, 64)
    assert join_parts(parts) == text


def test_utf16_length_counts_emoji_as_two_units() -> None:
    assert utf16_length("😀") == 2
    assert utf16_length("é") == 1
    assert utf16_length("👍🏽") == 4


def test_emoji_text_fits_telegram_limit_in_utf16_units() -> None:
    text = "😀" * 3000  # 3000 characters, 6000 UTF-16 code units
    assert split_message(text, TELEGRAM_LIMIT) == [text]
    parts = split_message(text, TELEGRAM_LIMIT, utf16_length)
    assert len(parts) == 2
    assert all(utf16_length(part) <= TELEGRAM_LIMIT for part in parts)
    assert all(part.encode("utf-16-le") for part in parts)  # no half of a surrogate pair
    assert "".join(parts) == text


@pytest.mark.parametrize("symbol", ["👨‍👩‍👧", "e\u0301", "👍🏽", "1️⃣"])
def test_hard_cut_never_splits_a_visible_symbol(symbol: str) -> None:
    text = symbol * 200
    parts = split_message(text, 97, utf16_length)
    assert len(parts) > 1
    for part in parts:
        assert part.startswith(symbol[0])
        assert len(part) % len(symbol) == 0
    assert "".join(parts) == text


def test_lone_surrogates_are_not_split_from_their_pair() -> None:
    text = "\ud83d\ude00" * 100  # a surrogate pair as two code points (surrogatepass decoding)
    parts = split_message(text, 51, utf16_length)
    assert all(part.startswith("\ud83d") for part in parts)
    assert "".join(parts) == text


@pytest.mark.parametrize(
    ("limit", "length"), [(TELEGRAM_LIMIT, utf16_length), (DISCORD_LIMIT, len)]
)
def test_long_markdown_reply_splits_and_joins_back(limit: int, length) -> None:
    text = markdown_reply(random.Random(7), 10_000, emoji=True)
    parts = split_message(text, limit, length)
    assert len(parts) >= 3
    assert all(length(part) <= limit for part in parts)
    assert all(balanced(part) for part in parts)
    assert all(part.strip() for part in parts)
    assert join_parts(parts) == text


def test_limit_too_small_for_fence_lines_is_an_error() -> None:
    with pytest.raises(ValueError, match="no room"):
        split_message("```\n" + "a" * 20, 5)


@pytest.mark.parametrize("limit", [DISCORD_LIMIT, TELEGRAM_LIMIT])
@pytest.mark.parametrize("char", ["~", "`"])
def test_a_fence_line_too_long_to_close_and_reopen_never_breaks_the_split(
    limit: int, char: str
) -> None:
    """A model asked for a long row of tildes or backticks: no room to close and reopen a block
    of that fence, so the line is taken as text and the reply still splits."""
    text = "Here it is:\n" + char * (limit - 10) + "\n" + "more words " * (limit // 5)
    parts = split_message(text, limit)
    assert all(len(part) <= limit for part in parts)
    assert join_parts(parts) == text


def test_property_random_texts_split_losslessly_within_limits() -> None:
    """Hostile token soup: fences mid-line, emoji, CRLF, whitespace runs, tiny limits."""
    tokens = ["a", "word", "  ", " ", "\n", "\n\n", "\t", "\r\n", "```", "```python\n", "\n```\n"]
    tokens += ["~~~", "`", "````", "  ```\n", "😀", "👍🏽", "e\u0301", "\u200d", "é"]
    rng = random.Random(20240601)
    checked = 0
    for _ in range(PROPERTY_CASES):
        text = "".join(rng.choices(tokens, k=rng.randint(0, 250)))
        limit = rng.randint(14, 120)
        length = rng.choice([len, utf16_length])
        try:
            parts = split_message(text, limit, length)
        except ValueError:
            continue  # a fence line longer than a tiny limit; real limits are 2000 and 4096
        assert all(length(part) <= limit for part in parts), (text, limit)
        assert join_parts(parts) == text, (text, limit)
        assert streamed_split(text, limit, length, rng) == parts, (text, limit)
        checked += 1
    assert checked > PROPERTY_CASES * 0.9


def test_property_markdown_parts_are_balanced() -> None:
    rng = random.Random(99)
    for _ in range(60):
        text = markdown_reply(rng, rng.randint(100, 3000), emoji=rng.random() < 0.5)
        limit = rng.randint(200, 900)
        length = rng.choice([len, utf16_length])
        parts = split_message(text, limit, length)
        assert all(length(part) <= limit for part in parts)
        assert all(balanced(part) for part in parts), text
        assert join_parts(parts) == text
