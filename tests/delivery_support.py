"""A running `parley run` child whose log is read as it is written, and its database read beside it.

The delivery tests stop, kill and restart real processes between a fake platform and a fake
model that live in the test, so what the user sees (the fake's messages) carries over from one
run to the next, as a real chat does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tests.cli_support import start_parley

#: Bound on waiting for one thing a child does (a fresh interpreter on a busy 2-core machine).
CHILD_WAIT = 20.0
#: Wide enough that rich never wraps a log line the tests read.
LOG_COLUMNS = "400"


class ParleyRun:
    """`parley run` in a child process; `lines` is its log so far (stdout and stderr)."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self._changed = asyncio.Condition()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, env: Mapping[str, str]) -> ParleyRun:
        process = await start_parley("run", env={"COLUMNS": LOG_COLUMNS, **env}, merge_stderr=True)
        return cls(process)

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for raw in self.process.stdout:
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))
            async with self._changed:
                self._changed.notify_all()

    def matching(self, pattern: str) -> list[str]:
        return [line for line in self.lines if re.search(pattern, line)]

    async def wait_log(self, pattern: str, within: float = CHILD_WAIT) -> str:
        """The first log line matching `pattern` (a regex), once it is written."""
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: self.matching(pattern)), within)
        return self.matching(pattern)[0]

    async def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        """Send `sig` and wait for the exit; returns the exit code (negative: killed by a signal)."""
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(sig)
        code = await asyncio.wait_for(self.process.wait(), CHILD_WAIT)
        await asyncio.wait_for(self._reader, CHILD_WAIT)
        return code

    async def kill(self) -> None:
        await self.stop(signal.SIGKILL)


@dataclass(frozen=True)
class ReplyRow:
    """An assistant row as the database holds it, read with plain sqlite3."""

    id: int
    status: str
    text: str
    platform_ids: list[str]
    delivery_pending: bool


def reply_rows(database: Path) -> list[ReplyRow]:
    """Every assistant reply, oldest first; readable while a child writes (WAL)."""
    if not database.exists():
        return []
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        try:
            rows = db.execute(
                "SELECT id, status, text, platform_ids, delivery_pending FROM messages"
                " WHERE role = 'assistant' ORDER BY id"
            ).fetchall()
        except sqlite3.OperationalError:  # the schema is not there yet
            return []
    return [ReplyRow(i, s, t, json.loads(ids), bool(p)) for i, s, t, ids, p in rows]


async def wait_for_row(database: Path, predicate, within: float = CHILD_WAIT) -> ReplyRow:
    """The newest reply row once `predicate(row)` holds for it. The database has no events to
    wait on, so this polls it (every 20 ms) until the deadline."""
    async with asyncio.timeout(within):
        while True:
            rows = reply_rows(database)
            if rows and predicate(rows[-1]):
                return rows[-1]
            await asyncio.sleep(0.02)
