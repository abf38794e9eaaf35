"""Helpers shared by the benchmarks: the fake server process, the machine report, a network
guard and percentiles.

The fake LLM server always runs in its own process: a benchmark that shares its event loop
with the server measures the server as much as the client.
"""

from __future__ import annotations

import importlib.metadata
import math
import os
import platform
import selectors
import shlex
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil

REPO_ROOT = Path(__file__).resolve().parent.parent
#: Seconds the server process gets to print its READY line.
SERVER_START_TIMEOUT = 30.0
#: Seconds it gets to exit after SIGTERM before it is killed.
SERVER_STOP_TIMEOUT = 5.0
#: Packages whose versions decide the figures.
REPORTED_PACKAGES = ("httpx", "httpcore", "openai", "httpx2", "g4f", "aiohttp", "psutil")
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


@dataclass(frozen=True)
class RunningServer:
    base_url: str
    pid: int

    def cpu_seconds(self) -> float:
        """CPU the server process has used so far: did it keep up, or was it the bottleneck?"""
        times = psutil.Process(self.pid).cpu_times()
        return times.user + times.system


@contextmanager
def fake_server(pieces: int, piece: str, delay: float = 0.0) -> Iterator[str]:
    """Run the fake LLM server in a child process; yields its OpenAI base URL."""
    with fake_server_process(pieces, piece, delay) as server:
        yield server.base_url


@contextmanager
def fake_server_process(pieces: int, piece: str, delay: float = 0.0) -> Iterator[RunningServer]:
    """Run `tests.fakes.llm_server` in a child process, answering every request alike."""
    command = [
        sys.executable,
        "-m",
        "tests.fakes.llm_server",
        "--port",
        "0",
        "--pieces",
        str(pieces),
        "--piece",
        piece,
        "--delay",
        str(delay),
    ]
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    try:
        yield RunningServer(_read_ready(process), process.pid)
    finally:
        process.terminate()
        try:
            process.wait(SERVER_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _read_ready(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(SERVER_START_TIMEOUT):
            raise RuntimeError(f"the fake server printed nothing in {SERVER_START_TIMEOUT:g} s")
    line = process.stdout.readline().strip()
    if not line.startswith("READY "):
        raise RuntimeError(f"the fake server did not start: {line!r}")
    return line.split(" ", 1)[1]


def machine_report() -> list[str]:
    """What a reader needs to compare figures: CPU, cores, Python, packages, the command."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = []
    for package in REPORTED_PACKAGES:
        try:
            versions.append(f"{package} {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{package} (not installed)")
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return [
        f"command: cd {REPO_ROOT} && python -m {_module_name()} {shlex.join(sys.argv[1:])}".rstrip(),
        f"tree: {_tree_state()}",
        f"cpu: {cpu}; cores: {os.cpu_count()} (usable {usable})",
        f"os: {platform.platform()}; load average at start "
        + " ".join(f"{load:.2f}" for load in os.getloadavg()),
        f"python: {platform.python_implementation()} {platform.python_version()}",
        "packages: " + ", ".join(versions),
    ]


def _tree_state() -> str:
    """The commit measured, and whether the working tree differs from it (read-only git)."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--", "core"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (no git)"
    modified = [line[3:] for line in changed if line.strip()]
    if not modified:
        return f"{commit}, core/ as committed"
    return f"{commit}, core/ with uncommitted changes in {', '.join(modified)}"


def _module_name() -> str:
    main = Path(sys.argv[0]).resolve()
    try:
        return ".".join(main.relative_to(REPO_ROOT).with_suffix("").parts)
    except ValueError:
        return str(main)


class NetworkGuard:
    """Records every connect or name lookup to a host other than this machine.

    A CPython audit hook sees every `socket.connect` and `getaddrinfo`, whatever library makes
    it, so the report can say that no client (g4f especially) reached the network.
    """

    def __init__(self) -> None:
        self.foreign: list[str] = []

    def install(self) -> None:
        sys.addaudithook(self._hook)

    def _hook(self, event: str, args: tuple) -> None:
        if event == "socket.connect":
            address = args[1]
            host = address[0] if isinstance(address, tuple) else None
            if host is not None and host not in LOCAL_HOSTS:
                self.foreign.append(f"connect {address!r}")
        elif event == "socket.getaddrinfo":
            host = args[0]
            if isinstance(host, bytes):
                host = host.decode(errors="replace")
            if host not in LOCAL_HOSTS:
                self.foreign.append(f"getaddrinfo {host!r}")


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (`fraction` in 0..1) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1))
    return ordered[rank]
