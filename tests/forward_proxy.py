"""Real proxies on 127.0.0.1 for the proxy tests, each in its own process.

- `ForwardProxy`: proxy.py (abhinavsingh/proxy.py), an HTTP proxy. It forwards plain HTTP
  requests adding `Via: 1.1 proxy.py …`, tunnels anything with CONNECT, and writes an access
  log line per client connection when that connection closes (`CONNECT host:port`).
- `SocksProxy`: pproxy (qwj/python-proxy), a SOCKS5 server. It writes a line per connection as
  it opens it (`socks5 client -> host:port`, the host as the client named it).

Either may ask for a username and password. The tests read the logs to see which connections
went through. Each runs as a subprocess, so its workers never share the test's loop, and so
pproxy's patches to asyncio's stream classes stay out of the test process.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

#: Seconds a proxy gets to bind its port, and a log line to appear.
START_TIMEOUT = 30.0
POLL_INTERVAL = 0.05


class ProxyProcess:
    """A proxy in a child process, writing its log to a file: `with Proxy(folder) as proxy:`,
    one folder per proxy."""

    #: The URL scheme clients use for this proxy.
    scheme = ""
    #: True when the proxy writes its log to stdout rather than to a file it is given.
    logs_to_stdout = False
    #: How the log names a connection the proxy opened for a client, to `{target}`.
    tunnel_line = ""

    def __init__(self, folder: Path, *, username: str | None = None, password: str = "") -> None:
        self._folder = folder
        self.log_file = folder / f"{type(self).__name__.lower()}.log"
        self.username = username
        self.password = password
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The proxy's URL, with its username and password when it asks for them."""
        credentials = f"{self.username}:{self.password}@" if self.username else ""
        return f"{self.scheme}://{credentials}127.0.0.1:{self.port}"

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _bound_port(self) -> int | None:
        raise NotImplementedError

    def __enter__(self) -> ProxyProcess:
        with self.log_file.open("wb") as log:
            output = log if self.logs_to_stdout else subprocess.DEVNULL
            self._process = subprocess.Popen(
                self._command(), env=self._environment(), stdout=output, stderr=output
            )
        try:
            self.port = self._wait_for(self._checked_port, f"{self.scheme} proxy to bind its port")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(START_TIMEOUT)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None

    def _environment(self) -> dict[str, str]:
        # Unbuffered, so each log line is in the file as soon as it is written.
        return {**os.environ, "PYTHONUNBUFFERED": "1"}

    def log_mark(self) -> int:
        """Where the log ends now: pass it as `since` to see only what a test caused."""
        return self.log_file.stat().st_size if self.log_file.exists() else 0

    def log_lines(self, text: str, since: int = 0) -> list[str]:
        """The log lines that contain `text`, as of now, written after `since`."""
        if not self.log_file.exists():
            return []
        with self.log_file.open("rb") as log:
            log.seek(since)
            lines = log.read().decode(errors="replace").splitlines()
        return [line for line in lines if text in line]

    async def wait_for_log(self, text: str, since: int = 0) -> str:
        """The first log line containing `text` (after `since`); raises TimeoutError if none
        comes.

        Another process writes the file, so there is no event to wait on: it is polled, in a
        thread so the test's loop (and the fake servers on it) keeps running."""

        def first() -> str | None:
            return next(iter(self.log_lines(text, since)), None)

        return await asyncio.to_thread(self._wait_for, first, f"{text!r} in the log")

    async def wait_for_tunnel(self, target: str, since: int = 0) -> str:
        """The log line of a connection through the proxy to `target` (`host:port`, the host
        as the client named it), after `since`."""
        return await self.wait_for_log(self.tunnel_line.format(target=target), since)

    def _checked_port(self) -> int | None:
        assert self._process is not None
        if self._process.poll() is not None:
            log = self.log_file.read_text() if self.log_file.exists() else ""
            raise RuntimeError(
                f"{self._command()[2]} exited with {self._process.returncode}: {log}"
            )
        return self._bound_port()

    @staticmethod
    def _wait_for(check: Callable[[], T | None], what: str) -> T:
        deadline = time.monotonic() + START_TIMEOUT
        while (found := check()) is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"waited {START_TIMEOUT:g} s for {what}")
            time.sleep(POLL_INTERVAL)
        return found


class ForwardProxy(ProxyProcess):
    """proxy.py; with a username it answers 407 to requests without the right credentials."""

    scheme = "http"
    tunnel_line = "CONNECT {target} "

    def __enter__(self) -> ForwardProxy:
        super().__enter__()
        return self

    @property
    def _port_file(self) -> Path:
        return self._folder / "proxy.port"

    def _command(self) -> list[str]:
        command = [
            sys.executable,
            "-m",
            "proxy",
            "--hostname=127.0.0.1",
            "--port=0",
            f"--port-file={self._port_file}",
            f"--log-file={self.log_file}",
            "--num-acceptors=1",
            "--num-workers=1",
        ]
        if self.username:
            command.append(f"--basic-auth={self.username}:{self.password}")
        return command

    def _environment(self) -> dict[str, str]:
        # proxy.py keeps its data and cache under ~/.proxy: give it the test's folder as home.
        return {**super()._environment(), "HOME": str(self._folder)}

    def _bound_port(self) -> int | None:
        text = self._port_file.read_text() if self._port_file.exists() else ""
        return int(text) if text.endswith("\n") else None


class SocksProxy(ProxyProcess):
    """pproxy serving SOCKS5; with a username it accepts only that username and password."""

    scheme = "socks5"
    logs_to_stdout = True
    tunnel_line = "-> {target}"
    _SERVING = re.compile(r"Serving on .*?127\.0\.0\.1:(\d+) by socks5")

    def __enter__(self) -> SocksProxy:
        super().__enter__()
        return self

    def _command(self) -> list[str]:
        users = f"#{self.username}:{self.password}" if self.username else ""
        return [
            sys.executable,
            "-m",
            "pproxy",
            "-l",
            f"socks5://127.0.0.1:0{users}",
            "-v",  # a line per connection
            # pproxy otherwise trusts an address for 30 days once it gave the right password.
            "--auth=0",
        ]

    def _bound_port(self) -> int | None:
        found = self._SERVING.search(self.log_file.read_text())
        return int(found.group(1)) if found else None
