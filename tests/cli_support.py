"""The `parley` command run in a child process, as an operator runs it.

A child is the only way to test what main() does with the real stdout, stderr, signals and
exit code. It runs this checkout's code, in the test's working directory (conftest makes that
the test's own empty folder, so no stray `.env` is read) unless told another, with the test's
environment (which conftest has emptied of provider settings) plus what the test passes.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
#: Bound on one run of the command (a fresh interpreter on a slow shared machine).
CLI_TIMEOUT = 60.0


@dataclass(frozen=True)
class Finished:
    """A finished run: its exit code and what it wrote (stderr is empty when merged)."""

    code: int
    out: str
    err: str


async def start_parley(
    *args: str,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    with_stdin: bool = False,
    merge_stderr: bool = False,
) -> asyncio.subprocess.Process:
    """Start `parley ARGS`; `env` is added to the test's environment.

    Output is unbuffered so a test can read a prompt as soon as it is printed.
    """
    environment = {
        **os.environ,
        **(env or {}),
        "PYTHONPATH": str(PROJECT_ROOT),
        "PYTHONUNBUFFERED": "1",
    }
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bots.cli",
        *args,
        cwd=cwd,
        env=environment,
        stdin=asyncio.subprocess.PIPE if with_stdin else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT if merge_stderr else asyncio.subprocess.PIPE,
    )


async def run_parley(
    *args: str,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    merge_stderr: bool = False,
) -> Finished:
    """Run `parley ARGS` to its end (see `start_parley`)."""
    child = await start_parley(*args, env=env, cwd=cwd, merge_stderr=merge_stderr)
    out, err = await asyncio.wait_for(child.communicate(), CLI_TIMEOUT)
    assert child.returncode is not None
    return Finished(child.returncode, out.decode(), (err or b"").decode())
