"""A real forwarding HTTP proxy on 127.0.0.1 for the proxy tests: proxy.py, in its own process.

proxy.py (abhinavsingh/proxy.py) forwards plain HTTP requests adding `Via: 1.1 proxy.py …`,
tunnels HTTPS with CONNECT, and writes an access log line per client connection when that
connection closes. The tests read both: the `Via` header the fake LLM server records, and the
access log. It runs as a subprocess so its worker processes never share the test's loop.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

#: Seconds proxy.py gets to bind its port, and a log line to appear.
START_TIMEOUT = 30.0
POLL_INTERVAL = 0.05


class ForwardProxy:
    """`with ForwardProxy(folder) as proxy:` runs proxy.py; `proxy.url` is its address."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder
        self._port_file = folder / "proxy.port"
        self.log_file = folder / "proxy.log"
        self.url = ""
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ForwardProxy:
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
        # proxy.py keeps its data and cache under ~/.proxy: give it the test's folder as home.
        environment = {**os.environ, "HOME": str(self._folder)}
        self._process = subprocess.Popen(
            command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            port = self._wait_for(self._bound_port, "proxy.py to bind its port")
        except BaseException:
            self.__exit__()
            raise
        self.url = f"http://127.0.0.1:{port}"
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

    async def wait_for_log(self, text: str) -> str:
        """The first access-log line containing `text`; raises TimeoutError if none comes.

        Another process writes the file, so there is no event to wait on: it is polled, in a
        thread so the test's loop (and the fake server on it) keeps running."""
        return await asyncio.to_thread(
            self._wait_for, lambda: self._log_line(text), f"{text!r} in the proxy's log"
        )

    def _bound_port(self) -> int | None:
        assert self._process is not None
        if self._process.poll() is not None:
            raise RuntimeError(f"proxy.py exited with {self._process.returncode}")
        text = self._port_file.read_text() if self._port_file.exists() else ""
        return int(text) if text.endswith("\n") else None

    def _log_line(self, text: str) -> str | None:
        lines = self.log_file.read_text().splitlines() if self.log_file.exists() else []
        return next((line for line in lines if text in line), None)

    @staticmethod
    def _wait_for(check: Callable[[], T | None], what: str) -> T:
        deadline = time.monotonic() + START_TIMEOUT
        while (found := check()) is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"waited {START_TIMEOUT:g} s for {what}")
            time.sleep(POLL_INTERVAL)
        return found
