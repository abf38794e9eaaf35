"""Every error storage raises: each names the database and says what the operator should do.

Bots catch `StorageError` and show a short apology; the message itself is for the operator's
log and terminal, so it carries the file name and the fix. sqlite3's own exceptions are
turned into these in one place, `storage.sqlite.errors.translate`.

* StorageError                  any other database failure (the message has sqlite's detail)
  + DatabaseURLError            DATABASE_URL names an unsupported backend or form
  + StorageUnavailableError     the file cannot be created, opened or written
  + StorageLockedError          another process held the lock past the busy timeout
  + StorageCorruptError         not a SQLite database, or damaged pages
  + SchemaTooNewError           migrated by a newer Parley; not written to
  + ForeignDatabaseError        a SQLite database holding someone else's tables

Why this is not under the core's `ParleyError`: storage is the lowest layer (bots -> core ->
storage; the core's conversation service imports it), and importing `core.errors` from here
would run `core/__init__`, loading the client, the providers and httpx into every user of
storage, and make core and storage import each other. So the app has two roots, and says so
where it catches them (`bots.errors`).
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
