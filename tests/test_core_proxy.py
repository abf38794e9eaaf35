"""Injectable, proxy-aware HTTP.

A caller's `httpx.AsyncClient` carries every request (unit level, `httpx.MockTransport`) and
is never closed by Parley. The shared pool honours HTTP_PROXY, HTTPS_PROXY, ALL_PROXY,
NO_PROXY and SSL_CERT_FILE, proven over real HTTP through a real forwarding proxy (proxy.py)
on 127.0.0.1, to the fake LLM server, plain and over TLS with a CA made by trustme.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import trustme

from core import AsyncClient, Client, errors
from core.client import client_for
from core.config import CoreSettings
from core.providers import OpenAICompatible
from core.providers.http import close_shared_client
from tests.core_support import PROMPT, closed_port, collect, contents
from tests.fakes.llm_server import FakeLLMServer
from tests.forward_proxy import ForwardProxy

#: An address no request may reach except through the mock transport.
MOCK_BASE = "http://llm.invalid/v1"
MOCK_TEXT = "from the mock"


class MockLLM:
    """An `httpx.AsyncClient` on a `MockTransport` answering OpenAI-style, recording requests."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.http = httpx.AsyncClient(transport=httpx.MockTransport(self._answer))

    def _answer(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if json.loads(request.content).get("stream"):
            events = (
                f'data: {{"choices":[{{"delta":{{"content":"{MOCK_TEXT}"}},"finish_reason":null}}]}}\n\n'
                'data: {"choices":[{"delta":{},"finish_reason":"stop"}]}\n\n'
                "data: [DONE]\n\n"
            )
            return httpx.Response(
                200, headers={"content-type": "text/event-stream"}, content=events.encode()
            )
        message = {"role": "assistant", "content": MOCK_TEXT}
        return httpx.Response(
            200, json={"choices": [{"message": message, "finish_reason": "stop"}]}
        )


@pytest.fixture
async def mock() -> AsyncIterator[MockLLM]:
    llm = MockLLM()
    yield llm
    await llm.http.aclose()


# -- an injected client ------------------------------------------------------------------------


def _by_client(mock: MockLLM) -> AsyncClient:
    return AsyncClient(base_url=MOCK_BASE, http_client=mock.http)


def _by_provider(mock: MockLLM) -> AsyncClient:
    return AsyncClient(OpenAICompatible("Mocked", MOCK_BASE, http_client=mock.http))


def _by_settings(mock: MockLLM) -> AsyncClient:
    settings = CoreSettings(_env_file=None, openai_base_url=MOCK_BASE, default_model="m")
    return client_for(settings, http_client=mock.http)


@pytest.mark.parametrize("make", [_by_client, _by_provider, _by_settings])
async def test_an_injected_client_carries_every_request_and_is_left_open(mock, make) -> None:
    client = make(mock)
    completion = await client.chat.completions.create("hi")
    chunks = await collect(client.chat.completions.create("hi", stream=True))
    assert completion.choices[0].message.content == MOCK_TEXT
    assert "".join(c for c in contents(chunks) if c) == MOCK_TEXT
    assert [str(r.url) for r in mock.requests] == [f"{MOCK_BASE}/chat/completions"] * 2
    await close_shared_client()  # what `parley run` does at shutdown
    assert not mock.http.is_closed
    again = await client.chat.completions.create("hi")
    assert again.choices[0].message.content == MOCK_TEXT


async def test_the_clients_http_client_wins_over_the_providers(mock) -> None:
    unused = MockLLM()
    provider = OpenAICompatible("Mocked", MOCK_BASE, http_client=unused.http)
    await AsyncClient(provider, http_client=mock.http).chat.completions.create("hi")
    assert len(mock.requests) == 1 and unused.requests == []
    await unused.http.aclose()


def test_the_sync_client_takes_an_injected_async_client() -> None:
    mock = MockLLM()
    client = Client(base_url=MOCK_BASE, http_client=mock.http)
    assert client.chat.completions.create("hi").choices[0].message.content == MOCK_TEXT
    assert len(mock.requests) == 1 and not mock.http.is_closed


# -- the shared pool behind a real proxy -------------------------------------------------------


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[ForwardProxy]:
    with ForwardProxy(tmp_path) as running:
        yield running


async def ask(base_url: str) -> str:
    """One completion through the shared pool, made afresh for the current environment."""
    await close_shared_client()
    completion = await AsyncClient(base_url=base_url, timeout=PROMPT).chat.completions.create("hi")
    return completion.choices[0].message.content


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "ALL_PROXY", "all_proxy"])
async def test_a_proxy_variable_sends_requests_through_the_proxy(
    server, proxy, monkeypatch, variable: str
) -> None:
    monkeypatch.setenv(variable, proxy.url)
    assert await ask(server.base_url) == "echo: hi"
    assert server.requests[0].headers["via"].startswith("1.1 proxy.py")


async def test_no_proxy_bypasses_the_proxy(server, proxy, monkeypatch) -> None:
    monkeypatch.setenv("ALL_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
    assert await ask(server.base_url) == "echo: hi"
    assert "via" not in server.requests[0].headers


async def test_an_unreachable_proxy_fails_the_request_clearly(server, monkeypatch) -> None:
    monkeypatch.setenv("ALL_PROXY", f"http://127.0.0.1:{closed_port()}")
    with pytest.raises(errors.ProviderConnectionError):
        await ask(server.base_url)
    assert server.requests == []


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def tls_server(ca: trustme.CA) -> AsyncIterator[FakeLLMServer]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    async with FakeLLMServer(ssl_context=context) as fake:
        yield fake


async def test_https_goes_through_the_proxy_trusting_ssl_cert_file(
    tls_server, proxy, ca, tmp_path: Path, monkeypatch
) -> None:
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    assert await ask(tls_server.base_url) == "echo: hi"
    await close_shared_client()  # proxy.py logs a tunnel when its connection closes
    host = tls_server.base_url.split("/")[2]
    assert f"CONNECT {host}" in await proxy.wait_for_log(f"CONNECT {host}")


async def test_a_server_certificate_from_an_unknown_ca_is_refused(tls_server) -> None:
    """The CA is known only through SSL_CERT_FILE: without it, the same server is refused."""
    with pytest.raises(errors.ProviderConnectionError):
        await ask(tls_server.base_url)
    assert tls_server.requests == []


async def test_a_proxy_refusing_the_tunnel_is_named_in_the_error(proxy, monkeypatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    with pytest.raises(errors.ProviderConnectionError) as caught:
        await ask(f"https://127.0.0.1:{closed_port()}/v1")
    assert "the proxy would not connect" in str(caught.value)
    assert "HTTPS_PROXY" in str(caught.value)
