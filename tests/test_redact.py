"""One redaction rule: the log handler and a provider's errors hide the same secrets."""

from __future__ import annotations

import io
import logging

import pytest

from bots.logs import RedactSecrets
from core import AsyncClient, errors
from core.providers import OpenAICompatible
from core.redact import MIN_SECRET_LENGTH, REDACTED, Redactor
from tests.fakes.llm_server import Script

#: A key exactly as short as a secret may be (a dummy key a local server was started with).
SHORT_KEY = "k3Y9x7"[:MIN_SECRET_LENGTH]


def test_secrets_are_replaced_longest_first_and_short_values_are_left() -> None:
    redact = Redactor("abcd-long-secret", "abcd", None, "ab")
    assert redact("abcd-long-secret and abcd and ab") == f"{REDACTED} and {REDACTED} and ab"
    assert not Redactor(None, "abc") and Redactor(SHORT_KEY)


def test_the_log_handler_hides_a_secret_of_the_minimum_length() -> None:
    output = io.StringIO()
    handler = logging.StreamHandler(output)
    handler.addFilter(RedactSecrets([SHORT_KEY]))
    log = logging.getLogger("parley.test.redact")
    log.addHandler(handler)
    try:
        log.error("the server said: bad key %s", SHORT_KEY)
    finally:
        log.removeHandler(handler)
    assert output.getvalue() == f"the server said: bad key {REDACTED}\n"


async def test_a_provider_error_hides_a_key_of_the_minimum_length(server) -> None:
    server.enqueue(Script(status=401, error_message=f"Incorrect API key provided: {SHORT_KEY}"))
    provider = OpenAICompatible("Local", server.base_url, api_key=SHORT_KEY)
    with pytest.raises(errors.MissingAuthError) as caught:
        await AsyncClient(provider).chat.completions.create("hi")
    assert SHORT_KEY not in str(caught.value)
    assert f"Incorrect API key provided: {REDACTED}" in str(caught.value)
