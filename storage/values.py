"""Values as every backend stores them, so a row reads the same on SQLite and PostgreSQL and
copies verbatim between them (`parley history copy`)."""

from __future__ import annotations

from datetime import UTC, datetime


def timestamp(at: datetime) -> str:
    """An aware time as the ledger stores it: UTC, ISO 8601 with milliseconds and a Z, so that
    text order is time order (the same form as each store's `_NOW`)."""
    if at.tzinfo is None:
        raise ValueError("usage times must be aware (UTC)")
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def utf8(text: str) -> str:
    """`text` as a database can hold it: UTF-8 has no lone surrogates, yet a Python string can
    (a JSON "\\ud83d" escape from a platform or a model, stdin read with surrogateescape), and
    binding one fails the write. Each lone one becomes U+FFFD; a pair split apart is rejoined."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text
