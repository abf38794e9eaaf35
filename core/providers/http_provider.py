"""What every provider over HTTP shares: its address, key, timeouts and the request cycle.

A subclass says where it posts (`path`), how a request looks (`_request`) and how to read the
answer (`_read`, which opens an `Exchange`, and `_read_json`); the key check, the retrying POST,
redaction and the choice between stream and JSON live here once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Any, ClassVar

import httpx

from .. import errors
from ..config import DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_RETRIES, DEFAULT_READ_TIMEOUT
from ..redact import Redactor
from .base import BaseProvider, Messages, StreamItem
from .http import POOL_TIMEOUT, open_stream

#: What reading a well-formed JSON value of the wrong shape raises.
SHAPE_ERRORS = (LookupError, TypeError, AttributeError, ValueError)


class HTTPProvider(BaseProvider):
    path: ClassVar[str]

    def __init__(
        self,
        name: str,
        base_url: str,
        api_key: str | None = None,
        *,
        default_model: str | None = None,
        models: list[str] | None = None,
        needs_auth: bool = False,
        key_env: str = "the provider's API key setting",
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        http_client: httpx.AsyncClient | None = None,
        vision: bool | None = None,
    ) -> None:
        """`vision`: whether the models routed here take images (see `BaseProvider.vision`).
        `http_client`: send through this client (never closed here) instead of the shared
        pool; a client's `http_client=`, passed with each call, takes precedence."""
        self._name = name
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key or None
        self.default_model = default_model
        self.models = list(models or [])
        self.needs_auth = needs_auth
        self.working = bool(self.api_key) or not needs_auth
        self.key_env = key_env
        # The read timeout applies per network read, so it ends a stalled stream.
        self.timeout = httpx.Timeout(connect_timeout, read=read_timeout, pool=POOL_TIMEOUT)
        self.max_retries = max_retries
        self.http_client = http_client
        self.vision = vision

    @property
    def name(self) -> str:
        return self._name

    def _request(
        self, model: str, messages: Messages, stream: bool, key: str | None, options: dict[str, Any]
    ) -> tuple[dict[str, Any], dict[str, str]]:
        """The JSON body and headers of one call."""
        raise NotImplementedError

    def _read(self, exchange: Exchange) -> AsyncIterator[StreamItem]:
        """The answer's items: an async generator that opens `exchange` and reads what came.

        It is the only generator between the socket and the client, so each streamed piece
        costs one hand-off less than a wrapper around it would (see bench/core_stream.py).
        """
        raise NotImplementedError

    def _read_json(self, body: bytes, redact: Redactor) -> list[StreamItem]:
        raise NotImplementedError

    def create_async_generator(
        self,
        model: str,
        messages: Messages,
        *,
        stream: bool = True,
        api_key: str | None = None,
        timeout: float | None = None,
        http_client: httpx.AsyncClient | None = None,
        **options: Any,
    ) -> AsyncIterator[StreamItem]:
        key = api_key or self.api_key
        if self.needs_auth and not key:
            raise errors.MissingAuthError(f"{self.name} needs an API key: set {self.key_env}.")
        body, headers = self._request(model, messages, stream, key, options)
        return self._read(
            Exchange(
                self,
                body,
                headers,
                Redactor(key),
                stream,
                httpx.Timeout(timeout) if timeout else None,
                http_client or self.http_client,
            )
        )


class Exchange:
    """One call, ready to send: what a provider's `_read` opens and reads."""

    __slots__ = ("body", "client", "headers", "provider", "redact", "stream", "timeout")

    def __init__(
        self,
        provider: HTTPProvider,
        body: dict[str, Any],
        headers: dict[str, str],
        redact: Redactor,
        stream: bool,
        timeout: httpx.Timeout | None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.provider = provider
        self.body = body
        self.headers = headers
        self.redact = redact
        self.stream = stream
        self.timeout = timeout or provider.timeout
        #: The caller's `httpx.AsyncClient`, or None for the shared pool.
        self.client = client

    def open(self) -> AbstractAsyncContextManager[httpx.Response]:
        provider = self.provider
        return open_stream(
            provider.name,
            f"{provider.base_url}{provider.path}",
            json_body=self.body,
            headers=self.headers,
            timeout=self.timeout,
            max_retries=provider.max_retries,
            key_hint=provider.key_env,
            redact=self.redact,
            client=self.client,
        )

    def is_stream(self, response: httpx.Response) -> bool:
        """A server may answer a stream request with plain JSON; read what came."""
        return self.stream and response.headers.get("content-type", "").startswith(
            "text/event-stream"
        )

    async def whole(self, response: httpx.Response) -> list[StreamItem]:
        return self.provider._read_json(await response.aread(), self.redact)
