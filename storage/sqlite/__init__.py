"""The SQLite backend; every SQL statement of the SQLite store lives in this package."""

from storage.sqlite.store import SQLiteStore

__all__ = ["SQLiteStore"]
