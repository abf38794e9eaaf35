"""The MIME type a platform's client reports for a file it uploads, from the file's name.

Both platform fakes label the files users send with it. Python's own table is used, not the
system's (`/etc/mime.types`), so every machine gives the same answer; it lacks a few types the
apps send, added here.
"""

from __future__ import annotations

import mimetypes

_TYPES = mimetypes.MimeTypes()
for _type, _suffix in (
    ("text/markdown", ".md"),
    ("text/plain", ".log"),
    ("audio/ogg", ".ogg"),
    ("audio/ogg", ".oga"),
    ("audio/ogg", ".opus"),
    ("image/webp", ".webp"),
):
    _TYPES.add_type(_type, _suffix)


def guess_mime_type(file_name: str) -> str:
    """The type for `file_name`'s extension; `application/octet-stream` when it is unknown."""
    return _TYPES.guess_type(file_name)[0] or "application/octet-stream"
