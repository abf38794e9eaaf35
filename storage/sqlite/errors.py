"""Turn sqlite3's exceptions into storage errors that name the file and the fix.

The one place that knows SQLite's result codes, so callers never see `sqlite3.OperationalError`.
"""

from __future__ import annotations

import sqlite3

from storage.errors import (
    StorageCorruptError,
    StorageError,
    StorageLockedError,
    StorageUnavailableError,
)

# Primary result codes (https://www.sqlite.org/rescode.html); extended codes share the low byte.
_SQLITE_PERM = 3
_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6
_SQLITE_READONLY = 8
_SQLITE_IOERR = 10
_SQLITE_CORRUPT = 11
_SQLITE_FULL = 13
_SQLITE_CANTOPEN = 14
_SQLITE_NOTADB = 26


def translate(exc: sqlite3.Error, location: str) -> StorageError:
    """The storage error to raise for `exc`, raised while working on database `location`."""
    code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
    detail = str(exc)
    if code in (_SQLITE_BUSY, _SQLITE_LOCKED):
        return StorageLockedError(
            f"Database {location} is locked by another process ({detail}). Stop the other "
            "program using it (another Parley, a sqlite3 shell) or raise the busy timeout."
        )
    if code in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
        return StorageCorruptError(
            f"Database {location} is not a usable SQLite database ({detail}). It was left as "
            "it is: restore it from a backup, or move it away to start a new history."
        )
    if code in (_SQLITE_CANTOPEN, _SQLITE_PERM, _SQLITE_READONLY):
        return StorageUnavailableError(
            f"Cannot open database {location} for writing ({detail}). Check that DATABASE_URL "
            "points at a file in a folder this user can write to."
        )
    if code in (_SQLITE_FULL, _SQLITE_IOERR):
        return StorageUnavailableError(
            f"Cannot write database {location} ({detail}). Check free disk space and the disk."
        )
    return StorageError(f"Database {location}: {detail}")
