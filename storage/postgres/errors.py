"""Turn asyncpg's exceptions into storage errors that name the server and the fix.

The one place that knows PostgreSQL's error classes, so callers never see asyncpg's. Messages
name the server as `Location.shown` does (user, host, port and database, never the password).
"""

from __future__ import annotations

import asyncio

import asyncpg
from asyncpg import exceptions as pg

from storage.errors import (
    StorageError,
    StorageLockedError,
    StorageUnavailableError,
)

#: The server is not there, not ready, gone mid-statement, or refuses this login.
_UNREACHABLE = (
    OSError,  # refused, unreachable, unknown host (socket.gaierror), reset
    asyncio.TimeoutError,
    asyncpg.InterfaceError,  # includes "connection is closed" and a pool closing
    pg.ConnectionDoesNotExistError,
    pg.PostgresConnectionError,  # 08xxx
    pg.CannotConnectNowError,  # starting up or shutting down
    pg.AdminShutdownError,
    pg.CrashShutdownError,
    pg.TooManyConnectionsError,
)
_LOGIN = (pg.InvalidPasswordError, pg.InvalidAuthorizationSpecificationError)


#: What asyncpg and the network raise: every call to the server catches these and `translate`s.
DRIVER_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


def translate(exc: BaseException, location: str) -> StorageError:
    """The storage error to raise for `exc`, raised while working on database `location`."""
    detail = str(exc) or type(exc).__name__
    if isinstance(exc, pg.InvalidCatalogNameError):
        return StorageUnavailableError(
            f"PostgreSQL database {location} does not exist ({detail}). Create it "
            "(createdb, or CREATE DATABASE) or fix the database name in DATABASE_URL."
        )
    if isinstance(exc, _LOGIN):
        return StorageUnavailableError(
            f"PostgreSQL at {location} refused the login ({detail}). Check the user and "
            "password in DATABASE_URL, and the server's pg_hba.conf."
        )
    if isinstance(exc, _UNREACHABLE):
        return StorageUnavailableError(
            f"Cannot reach PostgreSQL at {location} ({detail}). Check that the server is "
            "running and that DATABASE_URL's host and port point at it."
        )
    if isinstance(exc, (pg.LockNotAvailableError, pg.DeadlockDetectedError)):
        return StorageLockedError(
            f"Database {location} is locked by another session ({detail}). Stop the other "
            "program holding the lock, or try again."
        )
    if isinstance(exc, (pg.DiskFullError, pg.InsufficientResourcesError)):
        return StorageUnavailableError(
            f"Cannot write database {location} ({detail}). Check the server's free disk space."
        )
    if isinstance(exc, (pg.ReadOnlySQLTransactionError, pg.InsufficientPrivilegeError)):
        return StorageUnavailableError(
            f"Cannot write database {location} ({detail}). Point DATABASE_URL at the primary "
            "server, with a user that owns the database."
        )
    return StorageError(f"Database {location}: {detail}")
