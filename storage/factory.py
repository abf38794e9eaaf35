"""Pick the storage backend from `DATABASE_URL`: `sqlite:` a file, `postgresql:` a server."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote, urlsplit

from storage.base import ArrivalListener, ChatLocks, Store, StoreStatus, WriteObserver
from storage.errors import DatabaseURLError
from storage.sqlite.store import BUSY_TIMEOUT_SECONDS, SQLiteStore, inspect_database

_URL_FORMS = (
    "sqlite:///relative/path.db or sqlite:////absolute/path.db (a file), or "
    "postgresql://user:password@host:5432/database (postgres:// works too)"
)
#: asyncpg reads both spellings, as libpq does.
POSTGRES_SCHEMES = frozenset({"postgresql", "postgres"})


def is_postgres(url: str) -> bool:
    return urlsplit(url).scheme in POSTGRES_SCHEMES


def sqlite_path(url: str) -> Path:
    """The file a `sqlite:` URL names, in SQLAlchemy's spelling (three slashes, then the path)."""
    parts = urlsplit(url)
    if parts.scheme != "sqlite":
        raise DatabaseURLError(
            f"DATABASE_URL {url!r} uses the backend {parts.scheme or '(none)'!r}; "
            f"Parley supports SQLite and PostgreSQL: {_URL_FORMS}."
        )
    path = unquote(parts.path)[1:]
    if parts.netloc or not path or parts.query or parts.fragment:
        raise DatabaseURLError(f"DATABASE_URL {url!r} is not a SQLite file URL: use {_URL_FORMS}.")
    if path == ":memory:":
        raise DatabaseURLError(
            "DATABASE_URL sqlite:///:memory: would lose the history at every restart; "
            f"give a file: {_URL_FORMS}."
        )
    return Path(path)


def postgres_url(url: str) -> str:
    """`url` checked as a PostgreSQL address naming a database; raises `DatabaseURLError`
    (naming the URL without its password) when it does not."""
    from storage.postgres.store import location_of

    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 -- raises ValueError for a port that is no number
    except ValueError:
        raise DatabaseURLError(
            f"DATABASE_URL {location_of(url)!r} has a port that is not a number: use {_URL_FORMS}."
        ) from None
    if not parts.hostname or unquote(parts.path).strip("/") == "" or parts.fragment:
        raise DatabaseURLError(
            f"DATABASE_URL {location_of(url)!r} does not name a PostgreSQL host and database: "
            f"use {_URL_FORMS}."
        )
    return url


async def open_store(
    url: str,
    *,
    busy_timeout: float = BUSY_TIMEOUT_SECONDS,
    must_exist: bool = False,
    on_write: WriteObserver | None = None,
) -> Store:
    """Open the store `url` names, creating and migrating it on first use.

    `must_exist` is for readers such as the history export: a mistyped URL should say so,
    not create an empty database (a PostgreSQL server never creates one: it refuses to
    connect to a database that is not there). `on_write` is told how long each write took.
    """
    if is_postgres(url):
        from storage.postgres.store import PostgresStore

        return await PostgresStore.open(postgres_url(url), on_write=on_write)
    return await SQLiteStore.open(
        sqlite_path(url), busy_timeout=busy_timeout, must_exist=must_exist, on_write=on_write
    )


async def open_chat_locks(
    url: str, on_arrival: ArrivalListener, on_lost: Callable[[], None] | None = None
) -> ChatLocks | None:
    """The chat locks replicas share on the database `url` names, `on_arrival` told of every
    update taken into its inbox, `on_lost` at once when the session holding the locks ended
    (every lock with it); None for SQLite, whose one process shares with nobody."""
    if not is_postgres(url):
        return None
    from storage.postgres.coordination import PostgresChatLocks

    return await PostgresChatLocks.open(postgres_url(url), on_arrival, on_lost)


async def inspect_store(url: str) -> StoreStatus:
    """The database `url` names as it is now, read without creating or migrating anything
    (`parley doctor`); raises the `StorageError` that opening it for `parley run` would."""
    if is_postgres(url):
        from storage.postgres.store import inspect_database as inspect_postgres

        return await inspect_postgres(postgres_url(url))
    return await inspect_database(sqlite_path(url))
