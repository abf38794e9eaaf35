"""The shared HTTP layer of every network provider: one pool, retries, and error mapping.

The pool is one `httpx.AsyncClient` per event loop, built as httpx builds a client by default
(`trust_env=True`): it honours `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY` and `NO_PROXY`, and
trusts the certificates of `SSL_CERT_FILE` or `SSL_CERT_DIR`, because many operators can reach
a provider only through a proxy, or through one that re-signs TLS with its own CA. Whoever
needs more (a client certificate, a custom transport, a mock in a test) hands in their own
`httpx.AsyncClient` (`AsyncClient(http_client=...)`, `HTTPProvider(http_client=...)`), which
Parley uses as it is and never closes.

All httpx exceptions and HTTP error statuses become `core.errors` here and nowhere else
(httpx's own `map_httpcore_exceptions` is the model). Retries follow openai-python's policy:
only before the first byte of a body, only for 429 and 5xx, jittered exponential backoff,
`Retry-After` honoured up to a cap.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from .. import errors
from ..redact import Redactor
from .wire import short_line

log = logging.getLogger(__name__)

#: Longest `Retry-After` we wait out; a longer one is raised as `RateLimitError` at once.
MAX_RETRY_AFTER = 30.0
INITIAL_BACKOFF = 0.5
MAX_BACKOFF = 8.0
#: Pool sized for a busy bot: many chats streaming at once from one or two hosts. Keep-alive
#: equals the maximum because httpcore counts every open connection, busy or idle, against
#: it (encode/httpcore#1035): a lower figure closes finished connections under load instead
#: of reusing them.
MAX_CONNECTIONS = 1000
POOL_LIMITS = httpx.Limits(
    max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_CONNECTIONS
)
#: How long a request may queue for a free connection when all are streaming.
POOL_TIMEOUT = 60.0

_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
    weakref.WeakKeyDictionary()
)


def shared_client() -> httpx.AsyncClient:
    """The process's pooled `httpx.AsyncClient` (one per event loop, as httpx requires).

    The proxy and certificate variables are read when a loop's pool is made; timeouts are
    set per request by each provider."""
    loop = asyncio.get_running_loop()
    client = _pools.get(loop)
    if client is None or client.is_closed:
        client = httpx.AsyncClient(limits=POOL_LIMITS, timeout=None, trust_env=True)
        _pools[loop] = client
    return client


async def close_shared_client() -> None:
    """Close this loop's pool; the app calls it on shutdown."""
    client = _pools.pop(asyncio.get_running_loop(), None)
    if client is not None:
        await client.aclose()


def _retry_after(response: httpx.Response) -> float | None:
    for header in ("retry-after-ms", "retry-after"):
        value = response.headers.get(header)
        if value is None:
            continue
        try:
            seconds = float(value)
        except ValueError:
            continue
        return seconds / 1000 if header == "retry-after-ms" else seconds
    return None


def _error_detail(body: bytes) -> tuple[str, str]:
    """(message, code) from an OpenAI- or Anthropic-shaped error body, or its raw start."""
    try:
        payload = json.loads(body)
    except ValueError:
        return body[:300].decode(errors="replace").strip(), ""
    error = payload.get("error", payload) if isinstance(payload, dict) else payload
    if isinstance(error, dict):
        message = str(error.get("message") or error.get("detail") or error)
        code = str(error.get("code") or error.get("type") or "")
        return message, code
    return str(error), ""


def status_error(
    provider: str, response: httpx.Response, body: bytes, key_hint: str, redact: Redactor
) -> errors.ParleyError:
    """Map an HTTP error response to the typed error that says what to fix."""
    status = response.status_code
    detail, code = _error_detail(body)
    detail = redact(detail)
    where = f"{provider} ({response.request.method} {response.request.url.path})"
    # A proxy's error body may hold a whole traceback; the error (which the console shows and
    # the history stores) gets its first line, and `open_stream` logs the rest once.
    message = short_line(detail)
    if status in (401, 403):
        return errors.MissingAuthError(
            f"{where} rejected the API key with HTTP {status}: {message}. Check {key_hint}."
        )
    if status == 429:
        retry_after = _retry_after(response)
        wait = f" Retry after {retry_after:g} s." if retry_after is not None else ""
        return errors.RateLimitError(f"{where} is rate limiting: {message}.{wait}", retry_after)
    if code == "content_policy_violation":
        return errors.ContentPolicyError(f"{where} refused the prompt: {message}.", status)
    if "model" in code or (status in (400, 404) and "model" in message.lower()):
        return errors.ModelNotFoundError(
            f"{where}: the model is not available: {message}. Pick a model this provider serves."
        )
    if status == 404:
        return errors.ResponseStatusError(
            f"{where} answered 404 Not Found: {message}. Check the provider's base URL.", status
        )
    return errors.ResponseStatusError(f"{where} answered HTTP {status}: {message}", status)


def transport_error(provider: str, exc: httpx.HTTPError, redact: Redactor) -> errors.ParleyError:
    """Map an httpx transport failure (no usable HTTP answer) to a typed error."""
    url = exc.request.url if getattr(exc, "_request", None) is not None else "its base URL"
    if isinstance(exc, httpx.PoolTimeout):
        return errors.TimeoutError(
            f"{provider}: all {MAX_CONNECTIONS} connections stayed busy for {POOL_TIMEOUT:g} s; "
            "too many replies are streaming at once."
        )
    if isinstance(exc, httpx.TimeoutException):
        kind = "connecting" if isinstance(exc, httpx.ConnectTimeout) else "waiting for data"
        return errors.TimeoutError(redact(f"{provider}: timed out {kind} ({url})."))
    if isinstance(exc, httpx.ProxyError):
        return errors.ProviderConnectionError(
            redact(
                f"{provider}: the proxy would not connect to {url}: {exc}. "
                "Check HTTPS_PROXY, HTTP_PROXY, ALL_PROXY and NO_PROXY."
            )
        )
    if isinstance(exc, httpx.ConnectError):
        return errors.ProviderConnectionError(
            redact(
                f"{provider}: cannot reach {url}: {exc}. Is the server running and the URL right?"
            )
        )
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError):
        return errors.ProviderConnectionError(
            redact(
                f"{provider}: the connection broke off mid-answer ({exc or type(exc).__name__})."
            )
        )
    return errors.ProviderConnectionError(redact(f"{provider}: HTTP failure: {exc!r}"))


def _log_whole_body(provider: str, status: int, body: bytes, redact: Redactor) -> None:
    """Log an error body the raised error keeps only the first line of; once, not per try."""
    detail = redact(_error_detail(body)[0])
    if short_line(detail) != detail:
        log.warning("%s answered HTTP %s: %s", provider, status, detail)


def _backoff(attempt: int) -> float:
    return min(INITIAL_BACKOFF * 2.0**attempt, MAX_BACKOFF) * (0.75 + random.random() / 2)


@asynccontextmanager
async def open_stream(
    provider: str,
    url: str,
    *,
    json_body: dict[str, Any],
    headers: dict[str, str],
    timeout: httpx.Timeout,
    max_retries: int,
    key_hint: str,
    redact: Redactor,
    client: httpx.AsyncClient | None = None,
) -> AsyncIterator[httpx.Response]:
    """POST and yield a 2xx response whose body is not read yet, retrying what may be retried.

    Sent through `client` when one is handed in, else through the shared pool. The response
    is closed on exit, also on cancellation, so a cancelled reply frees its connection
    (httpx's `stream()` does the same in a `finally`).
    """
    if client is None:
        client = shared_client()
    attempt = 0
    while True:
        request = client.build_request(
            "POST", url, json=json_body, headers=headers, timeout=timeout
        )
        try:
            response = await client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise transport_error(provider, exc, redact) from None
        try:
            if response.status_code < 400:
                yield response
                return
            body = await response.aread()
        except httpx.HTTPError as exc:
            raise transport_error(provider, exc, redact) from None
        finally:
            await response.aclose()
        error = status_error(provider, response, body, key_hint, redact)
        retryable = response.status_code == 429 or response.status_code >= 500
        if not retryable or attempt >= max_retries:
            _log_whole_body(provider, response.status_code, body, redact)
            raise error
        wait = _retry_after(response)
        if wait is None:
            wait = _backoff(attempt)
        elif wait > MAX_RETRY_AFTER:
            raise error
        log.info(
            "%s: HTTP %s, retry %d in %.2f s", provider, response.status_code, attempt + 1, wait
        )
        attempt += 1
        await asyncio.sleep(wait)
