"""Text files a user attaches (notes, source code, JSON, CSV), read into the prompt.

Which files: by extension (`TEXT_EXTENSIONS`, or a well-known extensionless name such as
`Dockerfile`), else by a `text/*` MIME type, which is llmcord's whole rule. Extensions come
first because platforms are unreliable about MIME types: Telegram sends `.py` files as
`text/x-python` or `application/octet-stream` depending on the sender's app, and `.json` is
`application/json`, which llmcord's rule turns away.

How: strict UTF-8 (a byte-order mark dropped; UTF-16 with its BOM, as Windows Notepad saves
"Unicode", decoded too, since the BOM makes it unambiguous). Anything else is refused with a
clear line rather than guessed at: a wrong guess puts mojibake in front of the model.

The prompt form: llmcord appends a text attachment's content bare, below the message. Parley
puts the file's name above it and fences the content (with a fence longer than any run of
backticks inside, as CommonMark allows), so the model can tell the file from the question and
several files from each other, and can refer to each by name. Over the character cap the
content is cut at a line break and a marker says how much was left out.
"""

from __future__ import annotations

import codecs
import re
from pathlib import PurePosixPath

from . import errors
from .figures import megabytes
from .text import without_controls

#: Extensions read as text: prose, data, configuration and source code.
TEXT_EXTENSIONS = frozenset(
    {
        *("txt", "text", "md", "markdown", "rst", "adoc", "org", "tex", "log"),
        *("csv", "tsv", "json", "jsonl", "ndjson", "geojson", "xml", "yaml", "yml", "toml"),
        *("ini", "cfg", "conf", "properties", "env", "srt", "vtt"),
        *("html", "htm", "css", "scss", "sass", "less", "svg"),
        *("py", "pyi", "ipynb", "js", "mjs", "cjs", "ts", "tsx", "jsx", "vue", "svelte"),
        *("c", "h", "cc", "cpp", "cxx", "hpp", "hh", "cs", "java", "kt", "kts", "scala"),
        *("go", "rs", "swift", "m", "mm", "dart", "rb", "php", "pl", "pm", "lua", "r", "jl"),
        *("hs", "ml", "fs", "ex", "exs", "erl", "clj", "nim", "zig", "groovy", "gradle"),
        *("sh", "bash", "zsh", "fish", "ps1", "bat", "cmd", "sql", "graphql", "proto"),
        *("diff", "patch", "cmake", "mk", "tf", "hcl", "nix", "dockerfile"),
    }
)
#: Files known by their whole name, which have no extension.
TEXT_NAMES = frozenset(
    {"dockerfile", "makefile", "readme", "license", "changelog", "gemfile", "procfile"}
)
#: MIME types read as text besides `text/*`.
TEXT_MIME_TYPES = frozenset(
    {"application/json", "application/xml", "application/x-yaml", "application/toml"}
)
#: The line a user gets for a file of another kind.
SUPPORTED = "text files (.txt, .md, .json, .csv, source code) in UTF-8"
#: A fence info string for extensions a renderer would not know by themselves.
_LANGUAGES = {
    "txt": "",
    "text": "",
    "log": "",
    "py": "python",
    "js": "javascript",
    "md": "markdown",
}
_BACKTICK_RUNS = re.compile(r"`{3,}")
#: How far back from the cap a line break is looked for, as a share of the cap.
_CUT_SLACK = 0.2


def _extension(name: str) -> str:
    return PurePosixPath(name).suffix.lower().removeprefix(".")


def is_text_file(name: str, mime_type: str | None = None) -> bool:
    """True when a file of this name (or, failing that, this MIME type) is read as text."""
    extension = _extension(name)
    if extension:
        if extension in TEXT_EXTENSIONS:
            return True
    elif PurePosixPath(name).name.lower() in TEXT_NAMES:
        return True
    mime = (mime_type or "").split(";")[0].strip().lower()
    return mime.startswith("text/") or mime in TEXT_MIME_TYPES


def check_text_attachment(
    name: str, size: int | None, max_bytes: int, mime_type: str | None = None
) -> None:
    """Refuse, before downloading it, a file that is not text or is over TEXT_FILE_MAX_BYTES."""
    if not is_text_file(name, mime_type):
        raise errors.UnsupportedAttachmentError(
            f"{name!r} ({mime_type or 'no type'}) is not a text file this bot reads.",
            f"I can't read that kind of file. Supported: {SUPPORTED}.",
        )
    if size is not None and size > max_bytes:
        raise errors.AttachmentTooLargeError(
            f"{name!r} is {size} bytes; TEXT_FILE_MAX_BYTES is {max_bytes}.",
            f"{display_name(name)} is {megabytes(size)}; the limit is {megabytes(max_bytes)}.",
        )


def display_name(name: str) -> str:
    """The file's name as put into the prompt: its last path part, on one line, without
    control characters or backticks (which could close the fence around it)."""
    base = PurePosixPath(name.replace("\\", "/")).name
    clean = " ".join(without_controls(base).replace("`", "'").split())
    return clean or "file"


def decode_text(name: str, data: bytes) -> str:
    """`data` as text: UTF-8 (with or without a BOM), or UTF-16 with its BOM."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encoding = "utf-16"
    else:
        encoding = "utf-8-sig"
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise errors.NotUTF8Error(
            f"{name!r} is not {encoding} text: {exc.reason} at byte {exc.start}.",
            f"{display_name(name)} is not UTF-8 text, so I could not read it.",
        ) from None
    if "\x00" in text:
        raise errors.NotUTF8Error(
            f"{name!r} holds NUL characters: a binary file.",
            f"{display_name(name)} looks like a binary file, not text.",
        )
    return text.replace("\r\n", "\n")


def _cut(text: str, cap: int) -> str:
    """The first `cap` characters of `text`, ending at a line break when one is near."""
    head = text[:cap]
    line_end = head.rfind("\n")
    if line_end >= cap * (1 - _CUT_SLACK):
        head = head[:line_end]
    return head


def _fence(content: str) -> str:
    """Backticks enough to fence `content`: one more than its longest run, at least three."""
    longest = max((len(run) for run in _BACKTICK_RUNS.findall(content)), default=2)
    return "`" * (longest + 1)


def read_text_attachment(name: str, data: bytes, cap: int) -> str:
    """The file as a block for the prompt: its name, then its content fenced, cut to `cap`
    characters (TEXT_FILE_MAX_CHARS) with a marker saying how much is left out.

    Raises `EmptyAttachmentError` and `NotUTF8Error` (`is_text_file` and
    `check_text_attachment` are the caller's, before downloading)."""
    shown = display_name(name)
    if not data:
        raise errors.EmptyAttachmentError(f"{name!r} has no bytes.", f"{shown} is empty.")
    text = decode_text(name, data)
    content = _cut(text, cap) if len(text) > cap else text
    extension = _extension(shown)
    language = _LANGUAGES.get(extension, extension)
    fence = _fence(content)
    block = f"File: {shown}\n{fence}{language}\n{content.rstrip(chr(10))}\n{fence}"
    if len(content) < len(text):
        block += (
            f"\n[File cut: the first {len(content):,} of its {len(text):,} characters are shown.]"
        )
    return block
