"""The PostgreSQL backend; every SQL statement of the PostgreSQL store lives in this package."""

from storage.postgres.store import PostgresStore

__all__ = ["PostgresStore"]
