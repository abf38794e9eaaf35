"""A PostgreSQL server for the tests, and a fresh database per test on it.

Where the server comes from, in order:
- `PARLEY_TEST_POSTGRES_URL` (CI: `.ci/run` starts a throwaway cluster and sets it): a
  superuser's (or a CREATEDB user's) URL to any database of that server.
- Else, when PostgreSQL's binaries are installed (`initdb`, `pg_ctl`), a throwaway cluster
  started here for the session: a temp folder, 127.0.0.1 and a free port, its unix socket in
  the folder, fsync off. PostgreSQL refuses to run as root, so as root it runs as `postgres`.
- Else the PostgreSQL tests skip, saying why; with `PARLEY_REQUIRE_POSTGRES=1` (CI) they fail.

Each test gets its own database, made from a template migrated once per session (CREATE
DATABASE ... TEMPLATE copies files: milliseconds, where twelve migrations would take longer),
and dropped after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from storage.postgres.store import PostgresStore

URL_VARIABLE = "PARLEY_TEST_POSTGRES_URL"
REQUIRE_VARIABLE = "PARLEY_REQUIRE_POSTGRES"
#: The migrated database every test's database is copied from.
TEMPLATE = "parley_test_template"
#: The user a throwaway cluster runs as when the tests run as root.
SERVICE_USER = "postgres"
START_TIMEOUT_SECONDS = 60

_numbers = itertools.count()
T = TypeVar("T")


def with_database(url: str, database: str) -> str:
    """`url` pointing at `database` on the same server, as the same user."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{database}"))


def _binaries() -> Path | None:
    """The folder holding initdb and pg_ctl: on PATH, else Debian's versioned folders."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).parent
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(folder) / "initdb").exists() and (Path(folder) / "pg_ctl").exists():
            return Path(folder)
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Cluster:
    """A throwaway cluster this session started."""

    folder: Path
    bin: Path
    as_user: list[str]
    port: int

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def run(self, *command: str) -> None:
        subprocess.run(
            [*self.as_user, *command],
            check=True,
            capture_output=True,
            timeout=START_TIMEOUT_SECONDS,
        )

    def start(self) -> None:
        self.run(
            str(self.bin / "initdb"),
            *("-D", str(self.folder / "data"), "-U", "postgres", "-A", "trust", "-E", "UTF8"),
            *("--locale", "C", "--no-sync"),
        )
        self.start_server()

    def start_server(self) -> None:
        """Start the initialised cluster's server (again, for a restart) and wait for it."""
        options = (
            f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1"
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self.run(
            str(self.bin / "pg_ctl"),
            *("-D", str(self.folder / "data"), "-o", options),
            *("-l", str(self.folder / "log"), "-w", "start"),
        )

    def stop_server(self) -> None:
        """Stop the server as an operator's restart does (fast: sessions are cut), keeping
        its data."""
        self.run(str(self.bin / "pg_ctl"), "-D", str(self.folder / "data"), "-m", "fast", "stop")

    def stop(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self.stop_server()
        shutil.rmtree(self.folder, ignore_errors=True)


def _start_cluster(binaries: Path) -> Cluster:
    folder = Path(tempfile.mkdtemp(prefix="parley-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        try:
            account = pwd.getpwnam(SERVICE_USER)
        except KeyError:
            shutil.rmtree(folder, ignore_errors=True)
            raise RuntimeError(
                f"PostgreSQL refuses to run as root and there is no {SERVICE_USER!r} user"
            ) from None
        os.chown(folder, account.pw_uid, account.pw_gid)
        as_user = ["runuser", "-u", SERVICE_USER, "--"]
    cluster = Cluster(folder, binaries, as_user, _free_port())
    try:
        cluster.start()
    except subprocess.CalledProcessError as exc:
        log = folder / "log"
        detail = log.read_text(errors="replace") if log.exists() else exc.stderr.decode()
        cluster.stop()
        raise RuntimeError(f"could not start a PostgreSQL cluster: {detail[-2000:]}") from exc
    return cluster


async def _prepare_template(admin_url: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {TEMPLATE} WITH (FORCE)")
        await conn.execute(f"CREATE DATABASE {TEMPLATE} TEMPLATE template0 ENCODING 'UTF8'")
    finally:
        await conn.close()
    store = await PostgresStore.open(with_database(admin_url, TEMPLATE))
    await store.close()


def _unavailable(reason: str) -> None:
    if os.environ.get(REQUIRE_VARIABLE) == "1":
        pytest.fail(f"{REQUIRE_VARIABLE}=1 but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """The URL of a PostgreSQL server (its `postgres` database) a test may create databases
    on, with the migrated template ready; skips (or fails, in CI) without one."""
    url = os.environ.get(URL_VARIABLE)
    cluster = None
    if not url:
        binaries = _binaries()
        if binaries is None:
            _unavailable(f"no PostgreSQL: set {URL_VARIABLE} or install postgresql (initdb)")
        assert binaries is not None
        try:
            cluster = _start_cluster(binaries)
        except RuntimeError as exc:
            _unavailable(str(exc))
        assert cluster is not None
        url = cluster.url
    try:
        blocking(_prepare_template(url))
        yield url
    finally:
        if cluster is not None:
            cluster.stop()


async def create_database(admin_url: str, *, template: str = TEMPLATE) -> str:
    """A new database on the server, copied from `template`; returns its URL."""
    name = f"parley_test_{os.getpid()}_{next(_numbers)}"
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f"CREATE DATABASE {name} TEMPLATE {template}")
    finally:
        await conn.close()
    return with_database(admin_url, name)


async def drop_database(admin_url: str, url: str) -> None:
    name = urlsplit(url).path.lstrip("/")
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await conn.close()


def blocking(work: Coroutine[Any, Any, T]) -> T:
    """Run `work` to the end on a loop of its own, in a thread: sync fixtures set databases
    up with it, without touching the loop pytest-asyncio gives the test."""
    with ThreadPoolExecutor(1) as thread:
        return thread.submit(asyncio.run, work).result()


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A fresh database, migrated to the latest version, dropped after the test."""
    url = blocking(create_database(postgres_server))
    yield url
    blocking(drop_database(postgres_server, url))


@pytest.fixture
def empty_postgres_url(postgres_server: str) -> Iterator[str]:
    """A fresh, empty database (no tables), dropped after the test."""
    url = blocking(create_database(postgres_server, template="template0"))
    yield url
    blocking(drop_database(postgres_server, url))
