"""The errors storage raises: each names the database and says what the operator should do.

Bots catch `StorageError` and show a short apology; the message itself is for the operator's
log and terminal, so it carries the file name and the fix.
"""

from __future__ import annotations


class StorageError(Exception):
    """Base class of every storage failure."""


class DatabaseURLError(StorageError):
    """`DATABASE_URL` names a backend or a form of address that is not supported."""


class StorageUnavailableError(StorageError):
    """The database file cannot be created, opened or written (path, permissions, disk)."""


class StorageLockedError(StorageError):
    """Another process held the database lock for longer than the busy timeout."""


class StorageCorruptError(StorageError):
    """The file is not a SQLite database, or its pages are damaged."""


class SchemaTooNewError(StorageError):
    """The database was migrated by a newer Parley; this one must not write to it."""


class ForeignDatabaseError(StorageError):
    """The file is a SQLite database that holds someone else's tables."""
