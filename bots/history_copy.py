"""`parley history copy --from URL --to URL`: move a whole history between databases, either
engine to either (SQLite to PostgreSQL when a bot outgrows one process, and back).

Why rows and not a dump: the two engines share no dump format, but they share the schema
(`storage.postgres.migrations` mirrors `storage.sqlite.migrations` column for column), so
every table's rows go across as they are, ids included, and every reference (a reply's
question, a branch's parent, a usage row's reply, an image's messages) still holds.

The target must be empty: it is opened (so created and migrated to this Parley's schema), and
refused if any table has a row, so a copy never merges two histories. All tables are loaded in
one transaction on the target: a failure leaves it empty. Then each table is read back and
checked against the source, row for row: its count and a digest of its rows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from bots.errors import HistoryCopyError
from storage import Store, open_store
from storage.base import Row, TableCopy

#: Every table, in an order where each row's references are loaded before it (messages refer
#: to earlier messages, which their ids order). A table a later migration adds must be added
#: here: a copy refuses a schema with tables it does not know.
TABLE_ORDER = (
    "chats",
    "conversations",
    "messages",
    "images",
    "message_images",
    "usage",
    "usage_totals",
    "budget_overrides",
    "history_summaries",
    "reply_reasoning",
    "platform_messages",
)
#: Tables not copied: what replicas running on the source were doing (m013), the update inbox
#: and the replicas' leases. Neither means anything on another database: a copy is taken
#: with the bots stopped, when every update was answered and no replica is alive.
TRANSIENT_TABLES = frozenset({"inbox", "replicas"})


@dataclass(frozen=True, slots=True)
class TableCopied:
    name: str
    rows: int
    #: SHA-256 over the rows' own digests, sorted: the same rows give the same digest on either
    #: engine, whatever order a table scan returns them in.
    digest: str


@dataclass(frozen=True, slots=True)
class CopyReport:
    source: str
    target: str
    tables: tuple[TableCopied, ...]
    #: Text values the target could not hold as they were (PostgreSQL has no NUL character;
    #: each became U+FFFD); the digests were taken of what the target keeps.
    altered: int = 0

    @property
    def rows(self) -> int:
        return sum(table.rows for table in self.tables)


def digest(rows: Sequence[Row]) -> str:
    """A digest of `rows` that does not depend on their order."""
    each = sorted(hashlib.sha256(repr(row).encode()).digest() for row in rows)
    return hashlib.sha256(b"".join(each)).hexdigest()


def _copier(store: Store) -> TableCopy:
    if not isinstance(store, TableCopy):  # every backend implements it; a guard for new ones
        raise HistoryCopyError(f"Database {store.location} cannot copy whole tables.")
    return store


async def _schema(store: TableCopy, location: str) -> dict[str, list[str]]:
    tables = {
        name: columns
        for name, columns in (await store.tables()).items()
        if name not in TRANSIENT_TABLES
    }
    unknown = sorted(set(tables) - set(TABLE_ORDER))
    missing = sorted(set(TABLE_ORDER) - set(tables))
    if unknown or missing:
        raise HistoryCopyError(
            f"Database {location} does not have Parley's tables as this Parley knows them "
            f"(unknown: {', '.join(unknown) or 'none'}; missing: {', '.join(missing) or 'none'})."
        )
    return tables


async def copy_history(source_url: str, target_url: str) -> CopyReport:
    """Copy every table of `source_url` into the empty database `target_url`, then check it."""
    if source_url == target_url:
        raise HistoryCopyError("--from and --to name the same database; nothing to copy.")
    source_store = await open_store(source_url, must_exist=True)
    try:
        target_store = await open_store(target_url)
        try:
            return await _copy(source_store, target_store)
        finally:
            await target_store.close()
    finally:
        await source_store.close()


async def _copy(source_store: Store, target_store: Store) -> CopyReport:
    source, target = _copier(source_store), _copier(target_store)
    source_at, target_at = source_store.location, target_store.location
    source_tables = await _schema(source, source_at)
    target_tables = await _schema(target, target_at)
    for name in TABLE_ORDER:
        if source_tables[name] != target_tables[name]:
            raise HistoryCopyError(
                f"Table {name} has other columns in {source_at} than in {target_at}: "
                "run the same Parley version on both before copying."
            )
        if await target.table_rows(name, target_tables[name][:1]):
            raise HistoryCopyError(
                f"Database {target_at} is not empty (table {name} has rows). A copy goes into "
                "an empty database only: point --to at a new one, or drop this one's tables."
            )
    loads: list[tuple[str, list[str], list[Row]]] = []
    expected: dict[str, str] = {}
    altered = 0
    for name in TABLE_ORDER:
        columns = source_tables[name]
        rows = await source.table_rows(name, columns)
        if "id" in columns:  # references point backwards: load in id order
            position = columns.index("id")
            rows.sort(key=lambda row: cast(int, row[position]))
        stored = [tuple(target.as_stored(value) for value in row) for row in rows]
        altered += sum(
            a != b
            for row, kept in zip(rows, stored, strict=True)
            for a, b in zip(row, kept, strict=True)
        )
        expected[name] = digest(stored)
        loads.append((name, columns, rows))
    await target.load_tables(loads)
    copied = []
    for name, columns, rows in loads:
        found = await target.table_rows(name, columns)
        found_digest = digest(found)
        if len(found) != len(rows) or found_digest != expected[name]:
            raise HistoryCopyError(
                f"The copy of table {name} in {target_at} differs from {source_at} "
                f"({len(found)} rows copied of {len(rows)}). Drop the target's tables and "
                "copy again; if it differs again, report it as a bug."
            )
        copied.append(TableCopied(name, len(found), found_digest))
    return CopyReport(source_at, target_at, tuple(copied), altered)
