"""Helpers shared by the benchmarks: the fake server process, the machine report, a network
guard, percentiles, driving a bot against a fake platform in a child process, and the timing
of the group workloads (first token, per-reply figures).

The fake LLM server always runs in its own process: a benchmark that shares its event loop
with the server measures the server as much as the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import json
import math
import os
import platform
import re
import selectors
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

REPO_ROOT = Path(__file__).resolve().parent.parent
#: Seconds the server process gets to print its READY line.
SERVER_START_TIMEOUT = 30.0
#: Seconds it gets to exit after SIGTERM before it is killed.
SERVER_STOP_TIMEOUT = 5.0
#: Packages whose versions decide the figures.
REPORTED_PACKAGES = ("httpx", "httpcore", "openai", "httpx2", "g4f", "aiohttp", "psutil")
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
#: What every benchmark question contains: the key its reply is followed by.
QUESTION = re.compile(r"question \d+")


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


class TimedClient:
    """The core client, noting when each question's request is made and its first token
    reaches the bot.

    The key is the question ("question N") in the last user message of each request (in a
    group it carries the asker's "[Name] " prefix; with images, it is the text part).
    """

    def __init__(self, client: Any) -> None:
        self._client = client
        self.requested: dict[str, float] = {}
        self.first_token: dict[str, float] = {}
        self.chat = self
        self.completions = self

    def __getattr__(self, name: str) -> Any:
        """What else the service asks of its client (models' windows, whether they see
        images, the registry) is the client's own."""
        return getattr(self._client, name)

    def create(self, messages: list[dict[str, Any]], **kwargs: Any) -> Any:
        from core.content import content_text

        text = content_text(messages[-1]["content"])
        found = QUESTION.search(text)
        key = found.group(0) if found else text
        self.requested.setdefault(key, time.monotonic())
        stream = self._client.chat.completions.create(messages, **kwargs)

        async def timed() -> Any:
            async for chunk in stream:
                if key not in self.first_token and chunk.choices and chunk.choices[0].delta.content:
                    self.first_token[key] = time.monotonic()
                yield chunk

        return timed()


async def await_go(fields: Sequence[str], connected: Awaitable[Any], ready: str) -> bool:
    """The fake platform's side of `drive_bot`'s exchange, up to the start: print `READY` with
    `fields`, then `ready` once `connected` is done; True when the bot's side says `GO`."""
    print("READY " + " ".join(fields), flush=True)
    await connected
    print(ready, flush=True)
    return (await asyncio.to_thread(sys.stdin.readline)).strip() == "GO"


async def hand_over(result: dict[str, Any]) -> None:
    """The fake platform's side at the end: print `RESULT`, and stay up until the bot stopped."""
    print("RESULT " + json.dumps(result), flush=True)
    await asyncio.to_thread(sys.stdin.readline)


class PeakRSS:
    """The highest RSS seen by a sampling thread while the block ran. (Pillow allocates image
    memory in C, where tracemalloc does not look, so RSS it is.)"""

    #: How often the sampler reads the process's RSS, in seconds.
    SAMPLE_SECONDS = 0.002

    def __init__(self) -> None:
        self._process = psutil.Process()
        self._stop = threading.Event()
        self.before = self.peak = self._process.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(self.SAMPLE_SECONDS):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)


def run_with_fake_platform(
    command: list[str],
    llm_url: str,
    *,
    settings_from: Callable[[list[str]], dict[str, Any]],
    bot_for: Callable[[Any, Any], Any],
    ready: str,
    timeout: float,
) -> dict[str, Any]:
    """Start the fake platform `command` (a benchmark in its child mode) and `drive_bot`
    against it; the child is stopped however that ends."""
    child = subprocess.Popen(
        command, cwd=REPO_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        return asyncio.run(
            drive_bot(
                child,
                llm_url,
                settings_from=settings_from,
                bot_for=bot_for,
                ready=ready,
                timeout=timeout,
            )
        )
    finally:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(10)
        if child.poll() is None:
            child.kill()
            child.wait()


async def drive_bot(
    child: subprocess.Popen[str],
    llm_url: str,
    *,
    settings_from: Callable[[list[str]], dict[str, Any]],
    bot_for: Callable[[Any, Any], Any],
    ready: str,
    timeout: float,
) -> dict[str, Any]:
    """Run a bot against the fake platform `child` (which prints `READY <fields>`, then `ready`
        once the bot is connected, then `RESULT <json>` after `GO`) and return that result, with
        the bot process's CPU seconds (`cpu`), each question's request and first-token times
    (`requested`, `first_token`) and the process's RSS before GO and at its peak until the result
    (`rss_before`, `rss_peak`).

        `settings_from` turns the READY fields into settings fields; `bot_for(settings, service)`
        builds the bot, whose `run()` serves until cancelled.
    """
    from bots.config import Settings
    from core import AsyncClient
    from core.conversation import ConversationService
    from storage.factory import open_store

    assert child.stdout is not None and child.stdin is not None
    fields = (await asyncio.to_thread(child.stdout.readline)).split()
    if not fields or fields[0] != "READY":
        raise RuntimeError(f"the fake platform did not start: {fields!r}")
    with tempfile.TemporaryDirectory() as folder:
        values: dict[str, Any] = {
            "openai_base_url": llm_url,
            "default_model": "fake-model",
            "database_url": f"sqlite:///{Path(folder) / 'bench.db'}",
            **settings_from(fields[1:]),
        }
        settings = Settings(_env_file=None, **values)
        store = await open_store(settings.database_url)
        client = TimedClient(AsyncClient(base_url=llm_url))
        service = ConversationService(store, client, settings)  # type: ignore[arg-type]
        bot = asyncio.create_task(bot_for(settings, service).run())
        try:
            line = await asyncio.wait_for(asyncio.to_thread(child.stdout.readline), 30)
            if line.strip() != ready:
                raise RuntimeError(f"the bot did not get ready: {line!r}")
            process = psutil.Process()
            cpu_before = sum(process.cpu_times()[:2])
            with PeakRSS() as memory:
                child.stdin.write("GO\n")
                child.stdin.flush()
                line = await asyncio.wait_for(
                    asyncio.to_thread(child.stdout.readline), timeout + 30
                )
            cpu = sum(process.cpu_times()[:2]) - cpu_before
        finally:
            bot.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await bot
            await service.aclose()
            await store.close()
            child.stdin.write("\n")
            child.stdin.flush()
    if not line.startswith("RESULT "):
        raise RuntimeError(f"the fake platform gave no result: {line!r}")
    result: dict[str, Any] = json.loads(line.split(" ", 1)[1])
    result["cpu"] = cpu
    result["first_token"] = client.first_token
    result["requested"] = client.requested
    result["rss_before"], result["rss_peak"] = memory.before, memory.peak
    return result


@dataclass
class GroupFigures:
    """Per-reply timings of a group workload, in seconds: first visible text counted from the
    question being queued and from the model's first token, and the final text accepted."""

    rows: list[str] = field(default_factory=list)
    from_question: list[float] = field(default_factory=list)
    from_token: list[float] = field(default_factory=list)
    finals: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, dict[str, float] | None]:
        return {
            "first_visible_from_question_s": spread(self.from_question),
            "first_visible_from_first_token_s": spread(self.from_token),
            "final_text_from_question_s": spread(self.finals),
        }

    def lines(self) -> list[str]:
        return [
            f"first visible text, from the question queued: {describe(self.from_question)}",
            f"first visible text, from the model's first token: {describe(self.from_token)}",
            f"final text accepted, from the question queued: {describe(self.finals)}",
        ]

    def table(self) -> list[str]:
        return [
            "| reply | first visible (from question) | first visible (from first token) "
            "| final text (from question) | edits | complete |",
            "|---|---|---|---|---|---|",
            *self.rows,
        ]


def group_figures(replies: list[dict[str, Any]], first_tokens: dict[str, float]) -> GroupFigures:
    """`replies`: per question (`question`), when it was queued (`asked`), when the fake took
    the reply's first message (`first_send`) and its full text (`final`), `edits`, `complete`;
    all on the machine's monotonic clock, which the bot's `first_tokens` share."""
    figures = GroupFigures()
    for reply in replies:
        token = first_tokens.get(reply["question"])
        first, final = reply["first_send"], reply["final"]
        queued = None if first is None else first - reply["asked"]
        streamed = None if first is None or token is None else first - token
        done = None if final is None else final - reply["asked"]
        for values, value in (
            (figures.from_question, queued),
            (figures.from_token, streamed),
            (figures.finals, done),
        ):
            if value is not None:
                values.append(value)
        figures.rows.append(
            f"| {reply['question']} | {_seconds(queued)} | {_seconds(streamed)} | "
            f"{_seconds(done)} | {reply['edits']} | {'yes' if reply['complete'] else 'NO'} |"
        )
    return figures


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def spread(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {
        "p50": round(percentile(values, 0.5), 3),
        "p95": round(percentile(values, 0.95), 3),
        "max": round(max(values), 3),
    }


def describe(values: list[float]) -> str:
    figures = spread(values)
    if figures is None:
        return "none"
    return (
        f"p50 {figures['p50']:.2f} s, p95 {figures['p95']:.2f} s, max {figures['max']:.2f} s "
        f"(n={len(values)})"
    )


def group_report(
    args: Any,
    result: dict[str, Any],
    *,
    headline: str,
    place: str,
    window: float,
    refusals: str,
    notes: Sequence[str] = (),
) -> list[str]:
    """A group workload's figures as lines (a markdown table per reply) and one JSON summary:
    `headline` first, then the replies, the writes to the `place` (peak in any `window`
    seconds), the 429s the fake `refusals` ("answered", "served"), then `notes`."""
    figures = group_figures(result["replies"], result["first_token"])
    summary = {
        "people": args.people,
        "answer_chars": len(args.piece * args.pieces),
        "complete": result["complete"],
        **figures.summary(),
        "edits_per_reply": [r["edits"] for r in result["replies"]],
        f"peak_writes_per_{window:g}s": result["peak_writes"],
        "writes": result["writes"],
        f"{refusals}_429": result["refusals"],
        "run_s": round(result["finished"] - result["started"], 2),
        "bot_cpu_s": round(result["cpu"], 2),
    }
    lines = [
        headline,
        f"replies complete: {result['complete']}/{args.people} in {summary['run_s']:.1f} s",
        *figures.lines(),
        f"writes to the {place}: {result['writes']}, peak {result['peak_writes']} in any "
        f"{window:g} s; 429s {refusals}: {result['refusals']}",
        *notes,
        "",
        *figures.table(),
        "",
        "json: " + json.dumps(summary),
        f"bot CPU: {result['cpu']:.2f} s total",
    ]
    return lines + machine_report()
